"""Combinators that build the residual and grouped forms of any quantizer family from its pure functions.

In the optax spirit, the multi-codebook variants are compositions of small pure functions, not code written
per family:

* :func:`residual_encode` / :func:`residual_decode`: level ``l`` encodes what the previous levels left,
  ``c_l = encode(r_l, p_l)``, ``r_{l+1} = r_l - decode(c_l, p_l)``, scanning over per-level parameters ``p``
  (a pytree with a leading level axis: codebooks ``[L, K, D]`` for VQ, scales ``[L, d]`` for FSQ/LFQ). The
  decoded total is ``Σ_l decode(c_l, p_l)`` summed level by level in a fixed order (levels with code ``-1``
  skipped), so every caller gets the same bits. Residual VQ (greedy), residual FSQ and residual LFQ are these
  two functions with the family's encode/decode.
* :func:`grouped`, :func:`grouped_encode`, :func:`grouped_decode`: ``z [..., G * d]`` is split into ``G``
  sub-vectors quantized by the family's function, codes ``[..., G]``. Grouped FSQ, LFQ and BSQ (and product VQ
  with a shared codebook) are these.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from vqjax import checks
from vqjax.quantizers.base import Quantized
from vqjax.search import rows_like

__all__ = ["residual_encode", "residual_decode", "split_groups", "merge_groups", "check_groups", "grouped",
           "grouped_encode", "grouped_decode"]

Encode = Callable[[jax.Array, Any], jax.Array]       # (x [N, d] float32, level params) -> int32 codes [N]
Decode = Callable[[jax.Array, Any], jax.Array]       # (codes [N] int32, level params) -> float32 [N, d]


def residual_encode(encode: Encode, decode: Decode, x: jax.Array, per_level: Any) -> jax.Array:
    """Residual codes of ``x [N, d]``: int32 ``[N, L]`` (one ``lax.scan`` over the levels of ``per_level``)."""
    def body(residual, params):
        codes = encode(residual, params)
        return residual - decode(codes, params), codes

    _, codes = lax.scan(body, x.astype(jnp.float32), per_level)
    return codes.T


def residual_decode(decode: Decode, codes: jax.Array, per_level: Any, dim: int) -> jax.Array:
    """``Σ_l decode(codes[..., l], p_l)`` in float32 (code ``-1``: level absent): ``codes.shape[:-1] + (dim,)``."""
    lead = codes.shape[:-1]
    flat = codes.reshape(-1, codes.shape[-1])

    def body(acc, inp):
        params, code = inp
        q = decode(jnp.maximum(code, 0), params).astype(jnp.float32)
        return acc + jnp.where((code >= 0)[:, None], q, 0.0), None

    total, _ = lax.scan(body, rows_like(flat, 0.0, jnp.float32, (dim,)), (per_level, flat.T))
    return total.reshape(lead + (dim,))


def check_groups(fn: str, z: jax.Array, num_groups: int, per_group: int | None = None,
                 width_name: str = "len(levels)") -> None:
    """``num_groups`` must be a positive int dividing ``z.shape[-1]`` (equal to ``num_groups * per_group``, the
    family's required sub-vector width, called ``width_name`` in the message)."""
    checks.check_positive_int(f"{fn}: num_groups", num_groups)
    if z.shape[-1] % num_groups:
        raise ValueError(f"{fn}: num_groups must divide the last dimension of z ({z.shape[-1]}); got {num_groups}")
    if per_group is not None and z.shape[-1] != num_groups * per_group:
        raise ValueError(f"{fn}: z must have last dimension num_groups * {width_name} = {num_groups * per_group}; "
                         f"got shape {tuple(z.shape)}")


def split_groups(z: jax.Array, num_groups: int) -> jax.Array:
    """``[..., G * d]`` -> ``[..., G, d]``."""
    return z.reshape(z.shape[:-1] + (num_groups, z.shape[-1] // num_groups))


def merge_groups(values: jax.Array) -> jax.Array:
    """``[..., G, d]`` -> ``[..., G * d]``."""
    return values.reshape(values.shape[:-2] + (-1,))


def grouped(quantize: Callable[..., Quantized], z: jax.Array, num_groups: int, *args, name: str,
            per_group: int | None = None, **kwargs) -> Quantized:
    """``quantize(z, *args, **kwargs)`` applied to each of ``num_groups`` sub-vectors of ``z`` (statistics pooled
    over groups): values ``z.shape``, codes ``z.shape[:-1] + (G,)``. ``per_group``: the sub-vector width the
    family needs (e.g. ``len(levels)``), checked; ``name`` prefixes error messages."""
    z = checks.as_float_array(f"{name}: z", z)
    check_groups(name, z, num_groups, per_group)
    q = quantize(split_groups(z, num_groups), *args, **kwargs)
    return q._replace(values=q.values.reshape(z.shape))


def grouped_encode(encode: Callable[..., jax.Array], z: jax.Array, num_groups: int, *args, name: str,
                   per_group: int | None = None, **kwargs) -> jax.Array:
    """Codes ``z.shape[:-1] + (G,)`` of ``encode`` applied to each of the ``num_groups`` sub-vectors."""
    z = checks.as_float_array(f"{name}: z", z)
    check_groups(name, z, num_groups, per_group)
    return encode(split_groups(z, num_groups), *args, **kwargs)


def grouped_decode(decode: Callable[..., jax.Array], codes: jax.Array, *args, **kwargs) -> jax.Array:
    """Values ``codes.shape[:-1] + (G * d,)`` of grouped codes ``[..., G]`` through the family's ``decode``."""
    return merge_groups(decode(codes, *args, **kwargs))
