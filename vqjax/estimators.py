"""Gradient estimators for quantization: straight-through, the rotation trick, Gumbel-softmax.

Each estimator is a ``jax.custom_vjp`` whose forward pass returns the quantized value exactly (bit for bit the
codebook entry, cast to the input dtype) and whose backward pass is the estimator's analytic rule. Arithmetic
runs in float32 whatever the input dtype; outputs and cotangents come back in the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vqjax import checks

__all__ = ["straight_through", "rotation_trick", "gumbel_softmax", "hard_one_hot"]

_EPS = 1e-12


def _check_pair(z, q, fn: str):
    z = checks.as_float_array(f"{fn}: z", z)
    q = checks.as_float_array(f"{fn}: q", q)
    if z.shape != q.shape:
        raise ValueError(f"{fn}: q must have the shape of z {tuple(z.shape)}; got {tuple(q.shape)}")
    return z, q


@jax.custom_vjp
def _straight_through(z, q):
    return q.astype(z.dtype)


def _st_fwd(z, q):
    return q.astype(z.dtype), None


def _st_bwd(_, g):
    return g, None


_straight_through.defvjp(_st_fwd, _st_bwd)


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
    """Straight-through estimator (Bengio et al. 2013; van den Oord et al. 2017, VQ-VAE).

    Forward: ``q`` (cast to ``z.dtype``). Backward: the cotangent passes to ``z`` unchanged; ``q`` gets none
    (train the codebook with a codebook loss or EMA).

    Args:
      z: ``[..., D]`` encoder output, floating.
      q: ``[..., D]`` quantized value (same shape).

    Returns:
      ``[..., D]`` array equal to ``q`` in ``z.dtype``.

    Example:
      >>> out = straight_through(z, codebook[codes])   # d out / d z = I
    """
    z, q = _check_pair(z, q, "straight_through")
    return _straight_through(z, q)


def _rotation_vjp(z, q, g):
    """(|q|/|z|) R^T g with R the rotation taking z/|z| to q/|q| (Householder form), in float32."""
    zf, qf, gf = (a.astype(jnp.float32) for a in (z, q, g))
    nz = jnp.linalg.norm(zf, axis=-1, keepdims=True)
    nq = jnp.linalg.norm(qf, axis=-1, keepdims=True)
    e = zf / jnp.maximum(nz, _EPS)
    qh = qf / jnp.maximum(nq, _EPS)
    w = e + qh
    r = w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), _EPS)
    rtg = gf - 2.0 * r * jnp.sum(r * gf, -1, keepdims=True) + 2.0 * e * jnp.sum(qh * gf, -1, keepdims=True)
    return (nq / jnp.maximum(nz, _EPS)) * rtg


@jax.custom_vjp
def _rotation_trick(z, q):
    return q.astype(z.dtype)


def _rot_fwd(z, q):
    return q.astype(z.dtype), (z, q)


def _rot_bwd(res, g):
    z, q = res
    return _rotation_vjp(z, q, g).astype(z.dtype), None


_rotation_trick.defvjp(_rot_fwd, _rot_bwd)


def rotation_trick(z: jax.Array, q: jax.Array) -> jax.Array:
    """The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick").

    Forward: ``q`` exactly (cast to ``z.dtype``). Backward: the output is treated as
    ``sg(|q|/|z| R) z`` where ``R`` is the rotation taking ``e = z/|z|`` to ``q̂ = q/|q|``, so
    ``dL/dz = (|q|/|z|) Rᵀ g`` with the efficient Householder form
    ``R = I - 2 r rᵀ + 2 q̂ eᵀ``, ``r = (e + q̂)/|e + q̂|``, i.e. ``Rᵀ g = g - 2 r (r·g) + 2 e (q̂·g)``.
    ``q`` gets no gradient. For antipodal ``e = -q̂`` (``r`` undefined) the map used is the reflection
    ``g - 2 e (e·g)``, which also takes ``e`` to ``q̂``; norms are floored at 1e-12.

    Args:
      z: ``[..., D]`` encoder output.
      q: ``[..., D]`` quantized value.

    Returns:
      ``[..., D]`` array equal to ``q`` in ``z.dtype``.
    """
    z, q = _check_pair(z, q, "rotation_trick")
    return _rotation_trick(z, q)


@jax.custom_vjp
def hard_one_hot(y: jax.Array) -> jax.Array:
    """One-hot of ``argmax(y, -1)`` in ``y.dtype`` whose gradient is the identity (straight-through)."""
    return jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)


hard_one_hot.defvjp(lambda y: (hard_one_hot(y), None), lambda _, g: (g,))


def gumbel_softmax(logits: jax.Array, key: jax.Array, *, temperature: float = 1.0, hard: bool = False,
                   ) -> jax.Array:
    """Gumbel-softmax sample (Jang et al. 2017; Maddison et al. 2017) over the last axis.

    ``y = softmax((logits + g) / temperature)`` with ``g ~ Gumbel(0, 1)``. With ``hard=True`` the forward value
    is the exact one-hot of ``argmax(y)`` and the backward pass is that of the soft sample ``y``
    (``dL/dlogits = y ⊙ (g_out - <g_out, y>) / temperature``).

    This dense form materialises ``[..., K]``; ``vqjax.vq(..., estimator='gumbel')`` uses a chunked version
    that never holds an ``N x K`` matrix.

    Args:
      logits: ``[..., K]`` unnormalised log-probabilities, floating.
      key: PRNG key.
      temperature: positive softmax temperature.
      hard: return the straight-through one-hot sample.

    Returns:
      ``[..., K]`` sample in ``logits.dtype``.
    """
    logits = checks.as_float_array("gumbel_softmax: logits", logits)
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"gumbel_softmax: temperature must be a positive number; got {temperature!r}")
    noise = jax.random.gumbel(key, logits.shape, jnp.float32)
    y = jax.nn.softmax((logits.astype(jnp.float32) + noise) / temperature, axis=-1)
    if hard:
        y = hard_one_hot(y)
    return y.astype(logits.dtype)
