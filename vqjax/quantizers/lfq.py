"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2, "Language Model Beats Diffusion").

Each of the ``d`` channels is quantized to its sign: ``q_i = +s`` if ``z_i > 0`` else ``-s`` (``s`` the codebook
scale). The implicit codebook is ``{-s, +s}^d`` (``2^d`` codes, never materialised); the code of a vector is its
bit pattern ``Σ_i [z_i > 0] 2^i`` (bit ``i`` is channel ``i``, little-endian), an int32 for ``d <= 31``.

Entropy regulariser. With ``p(c | z) ∝ exp(-|z - c|² / τ)`` over the codebook, the logits ``2 z·c / τ`` are a sum
over channels, so ``p(c | z)`` factorises into independent bits with ``P(bit_i = 1) = sigmoid(4 s z_i / τ)``:

* the per-sample entropy ``H(p(·|z))`` is the sum of the bits' binary entropies — exact, ``O(N d)``;
* the codebook entropy ``H(mean_n p(·|z_n))`` does not factorise. With ``entropy_group_size=None`` it is computed
  exactly over all ``2^d`` codes, scanning chunks of codes with the chunk rematerialised in the backward pass
  (memory ``O(N C)``, time ``O(N 2^d d)``: the like-for-like form of implementations that build the ``N x 2^d``
  matrix). By default it is approximated by splitting the bits into
  groups of ``entropy_group_size`` and summing the entropies of each group's batch-average distribution over its
  ``2^g`` patterns (an upper bound on the joint entropy, equal to it when the groups are independent under the
  batch average, and exact when ``d <= entropy_group_size``). Memory is ``O(N 2^g)`` per group instead of
  ``O(N 2^d)``, so ``2^18`` codes and more fit easily.

``loss = entropy_weight * (per_sample - diversity_weight * codebook) + commitment_weight * mean|z - sg(q)|²``.
The same machinery serves BSQ (:mod:`vqjax.quantizers.bsq`), which quantizes the l2-normalised vector.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vqjax import checks, estimators, metrics, regularizers
from vqjax.quantizers.base import Quantized

__all__ = ["lfq", "lfq_encode", "lfq_decode", "BitEntropy", "bit_entropy", "exact_codebook_entropy", "pack_bits",
           "unpack_bits", "MAX_BITS"]

MAX_BITS = 31  # non-negative int32 codes


def check_bits(name: str, dim: int) -> int:
    """Validates a bit count ``1 <= dim <= 31``."""
    dim = checks.check_positive_int(name, dim)
    if dim > MAX_BITS:
        raise ValueError(f"{name}: {dim} bits give 2^{dim} codes, more than int32 codes hold (at most {MAX_BITS} "
                         f"bits); split the channels into groups (vqjax.grouped_lfq) or reduce the dimension")
    return dim


def pack_bits(bits: jax.Array) -> jax.Array:
    """``Σ_i bits[..., i] 2^i`` as int32: ``bits.shape[:-1]`` (``bits.shape[-1] <= 31``)."""
    weights = jnp.asarray(1 << np.arange(bits.shape[-1], dtype=np.int64), jnp.int32)
    return jnp.sum(bits.astype(jnp.int32) * weights, axis=-1, dtype=jnp.int32)


def unpack_bits(codes: jax.Array, dim: int) -> jax.Array:
    """The inverse of :func:`pack_bits`: bool ``codes.shape + (dim,)``."""
    return ((codes[..., None] >> jnp.arange(dim, dtype=jnp.int32)) & 1).astype(bool)


class BitEntropy(NamedTuple):
    """Entropy terms (nats, float32 scalars): ``loss = sample_entropy - diversity_weight * codebook_entropy``."""

    loss: jax.Array
    sample_entropy: jax.Array
    codebook_entropy: jax.Array


def _binary_entropy(logit):
    p = jax.nn.sigmoid(logit)
    return p * jax.nn.softplus(-logit) + (1.0 - p) * jax.nn.softplus(logit)


_EXACT_TILE = 1 << 21  # N x C probabilities held per chunk of codes in the exact codebook entropy (8 MiB)


def _xlogx_sum(p):
    return jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def _pattern_log_probs(log_one, log_zero, codes, bits):
    """``log p(code | x_n)`` for ``codes [C]`` (bit patterns over ``bits`` channels): ``[N, C]``."""
    patterns = ((codes[:, None] >> jnp.arange(bits, dtype=jnp.int32)) & 1).astype(jnp.float32)   # [C, bits]
    return log_one @ patterns.T + log_zero @ (1.0 - patterns).T


def exact_codebook_entropy(log_one: jax.Array, log_zero: jax.Array) -> jax.Array:
    """``H(mean_n p(·|x_n))`` over all ``2^d`` codes, exactly, scanning chunks of codes (memory ``O(N C)``; the
    chunk is rematerialised in the backward pass, so gradients stay bounded too). Time ``O(N 2^d d)``."""
    n, dim = log_one.shape
    total = 2 ** dim
    chunk = int(min(total, max(1, 2 ** int(np.floor(np.log2(max(_EXACT_TILE // max(n, 1), 1)))))))

    @jax.checkpoint
    def body(acc, start):
        codes = start + jnp.arange(chunk, dtype=jnp.int32)
        avg = jnp.mean(jnp.exp(_pattern_log_probs(log_one, log_zero, codes, dim)), axis=0)
        return acc - _xlogx_sum(avg), None

    starts = jnp.arange(0, total, chunk, dtype=jnp.int32)
    entropy, _ = jax.lax.scan(body, jnp.float32(0.0), starts)
    return entropy


def bit_entropy(x: jax.Array, *, scale: float, temperature: float, diversity_weight: float = 1.0,
                group_size: int | None = 8) -> BitEntropy:
    """Entropy regulariser of a binary implicit codebook ``{-scale, +scale}^d``, factorised as in the module doc.

    Args:
      x: ``[..., d]`` vectors (float32 arithmetic); the batch average runs over all leading positions.
      scale: the code magnitude ``s``.
      temperature: ``τ`` of ``p(c|x) ∝ exp(-|x - c|²/τ)``.
      diversity_weight: weight of the codebook entropy.
      group_size: bits per group for the factorised codebook entropy (``2^group_size`` patterns per group, at
        most 16); ``None`` for the exact codebook entropy over all ``2^d`` codes (:func:`exact_codebook_entropy`,
        memory-bounded chunks; time grows as ``2^d``).

    Returns:
      :class:`BitEntropy`.
    """
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    dim = x.shape[-1]
    logits = 4.0 * scale * x / temperature
    sample_entropy = jnp.mean(jnp.sum(_binary_entropy(logits), axis=-1))
    log_one = -jax.nn.softplus(-logits)       # log P(bit = 1)
    log_zero = -jax.nn.softplus(logits)       # log P(bit = 0)
    if group_size is None:
        codebook_entropy = exact_codebook_entropy(log_one, log_zero)
    else:
        codebook_entropy = jnp.float32(0.0)
        for start in range(0, dim, group_size):
            g = min(group_size, dim - start)
            lp = _pattern_log_probs(log_one[:, start:start + g], log_zero[:, start:start + g],
                                    jnp.arange(2 ** g, dtype=jnp.int32), g)
            codebook_entropy -= _xlogx_sum(jnp.mean(jnp.exp(lp), axis=0))
    return BitEntropy(sample_entropy - diversity_weight * codebook_entropy, sample_entropy, codebook_entropy)


def check_common(fn, *, temperature, entropy_weight, diversity_weight, commitment_weight, group_size):
    """Shared argument checks of LFQ and BSQ."""
    for name, value in (("entropy_weight", entropy_weight), ("diversity_weight", diversity_weight),
                        ("commitment_weight", commitment_weight)):
        checks.check_nonnegative(f"{fn}: {name}", value)
    if checks.check_nonnegative(f"{fn}: temperature", temperature) == 0:
        raise ValueError(f"{fn}: temperature must be > 0; got {temperature}")
    if group_size is None:                    # the exact codebook entropy
        return
    group_size = checks.check_positive_int(f"{fn}: entropy_group_size", group_size)
    if group_size > 16:
        raise ValueError(f"{fn}: entropy_group_size must be <= 16 (2^g patterns per group); got {group_size}")


def binary_quantize(x: jax.Array, out_like: jax.Array, *, scale: float, temperature: float,
                    entropy_weight: float, diversity_weight: float, commitment_weight: float,
                    group_size: int) -> Quantized:
    """Sign quantization of ``x`` (float32 search space) with straight-through to ``out_like`` (same values)."""
    bits = x > 0
    q = jnp.where(bits, scale, -scale).astype(jnp.float32)
    values = estimators.straight_through(out_like, q.astype(out_like.dtype))
    codes = pack_bits(bits)
    commit = regularizers.commitment_loss(x, q)
    loss = commitment_weight * commit
    stats = metrics.code_metrics(codes, 2 ** x.shape[-1])
    stats["commitment"] = commit
    if entropy_weight > 0:
        ent = bit_entropy(x, scale=scale, temperature=temperature, diversity_weight=diversity_weight,
                          group_size=group_size)
        loss = loss + entropy_weight * ent.loss
        stats.update(sample_entropy=ent.sample_entropy, codebook_entropy=ent.codebook_entropy)
    return Quantized(values, codes, jnp.asarray(loss, jnp.float32), stats)


def lfq_encode(z: jax.Array) -> jax.Array:
    """Packed bit codes ``Σ_i [z_i > 0] 2^i``: int32 ``z.shape[:-1]``. See :func:`lfq`."""
    z = checks.as_float_array("lfq_encode: z", z)
    check_bits("lfq_encode: z.shape[-1]", z.shape[-1])
    return pack_bits(z > 0)


def lfq_decode(codes: jax.Array, dim: int, *, scale: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """``±scale`` vectors of packed codes: ``codes.shape + (dim,)`` in ``dtype``."""
    dim = check_bits("lfq_decode: dim", dim)
    codes = checks.as_code_array("lfq_decode: codes", codes, 2 ** dim)
    return jnp.where(unpack_bits(codes, dim), scale, -scale).astype(dtype)


def lfq(z: jax.Array, *, scale: float = 1.0, entropy_weight: float = 0.1, diversity_weight: float = 1.0,
        temperature: float = 0.01, commitment_weight: float = 0.25, entropy_group_size: int | None = 8,
        check_finite: bool = False) -> Quantized:
    """Lookup-free quantization of ``z [..., d]`` (``d <= 31`` bits), see the module docstring.

    Args:
      z: ``[..., d]`` floating (float32 arithmetic; values returned in ``z.dtype``).
      scale: codebook scale ``s`` (> 0): values are ``±s``.
      entropy_weight: weight of the entropy regulariser (0 skips it).
      diversity_weight: weight of the codebook-entropy term inside it (MAGVIT-v2's γ).
      temperature: τ of the code distribution (vector-quantize-pytorch's ``1 / inv_temperature``).
      commitment_weight: weight of ``mean|z - sg(q)|²``.
      entropy_group_size: bits per group of the factorised codebook entropy (1..16), or None for the exact
        codebook entropy over all 2^d codes (memory-bounded chunks; time grows as 2^d).
      check_finite: refuse NaN/Inf in ``z``.

    Returns:
      :class:`vqjax.Quantized` with codes int32 ``z.shape[:-1]`` in ``[0, 2^d)``; metrics 'perplexity', 'usage',
      'commitment' (and 'sample_entropy', 'codebook_entropy' when ``entropy_weight > 0``).

    Raises:
      TypeError / ValueError: non-floating or rank-0 z, more than 31 channels, non-positive scale or
        temperature, negative weights, a group size outside 1..16.

    Example:
      >>> q = vqjax.lfq(z, entropy_weight=0.1)      # z [B, T, 18]: 2^18 codes
      >>> vqjax.lfq_decode(q.codes, 18) == q.values
    """
    z = checks.as_float_array("lfq: z", z)
    check_bits("lfq: z.shape[-1]", z.shape[-1])
    if checks.check_nonnegative("lfq: scale", scale) == 0:
        raise ValueError(f"lfq: scale must be > 0; got {scale}")
    check_common("lfq", temperature=temperature, entropy_weight=entropy_weight, diversity_weight=diversity_weight,
                 commitment_weight=commitment_weight, group_size=entropy_group_size)
    if check_finite:
        z = checks.assert_finite("lfq: z", z)
    return binary_quantize(z.astype(jnp.float32), z, scale=scale, temperature=temperature,
                           entropy_weight=entropy_weight, diversity_weight=diversity_weight,
                           commitment_weight=commitment_weight, group_size=entropy_group_size)
