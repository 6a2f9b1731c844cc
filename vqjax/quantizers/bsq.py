"""Binary spherical quantization (Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
Quantization").

``z [..., d]`` is projected to the unit sphere, ``u = z / |z|``, and each channel is quantized to
``±1/sqrt(d)``, so codes are unit vectors too and the quantization error is bounded whatever the input scale. The
implicit codebook has ``2^d`` codes (``d <= 31``), coded as packed bits like LFQ (``Σ_i [u_i > 0] 2^i``).

The entropy regulariser is LFQ's, on ``u`` with code scale ``1/sqrt(d)``: the per-sample entropy is exact (the
soft assignment factorises over channels) and the codebook entropy is the grouped factorised approximation of
the paper, summing the entropies of the batch-average distributions of groups of ``entropy_group_size`` bits
(see :mod:`vqjax.quantizers.lfq`). Gradients are straight-through from ``q`` to ``u`` and then through the
normalisation to ``z``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vqjax import checks, search
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.lfq import binary_quantize, check_bits, check_common, pack_bits, unpack_bits

__all__ = ["bsq", "bsq_encode", "bsq_decode"]


def bsq_encode(z: jax.Array) -> jax.Array:
    """Packed bit codes of ``z / |z|``: int32 ``z.shape[:-1]``. See :func:`bsq`."""
    z = checks.as_float_array("bsq_encode: z", z)
    check_bits("bsq_encode: z.shape[-1]", z.shape[-1])
    return pack_bits(search.l2_normalize(z.astype(jnp.float32)) > 0)


def bsq_decode(codes: jax.Array, dim: int, *, dtype=jnp.float32) -> jax.Array:
    """``±1/sqrt(dim)`` unit vectors of packed codes: ``codes.shape + (dim,)`` in ``dtype``."""
    dim = check_bits("bsq_decode: dim", dim)
    codes = checks.as_code_array("bsq_decode: codes", codes, 2 ** dim)
    scale = 1.0 / math.sqrt(dim)
    return jnp.where(unpack_bits(codes, dim), scale, -scale).astype(dtype)


def bsq(z: jax.Array, *, entropy_weight: float = 0.1, diversity_weight: float = 1.0, temperature: float = 0.1,
        commitment_weight: float = 0.25, entropy_group_size: int | None = 9, check_finite: bool = False) -> Quantized:
    """Binary spherical quantization of ``z [..., d]`` (``d <= 31``), see the module docstring.

    Args:
      z: ``[..., d]`` floating (float32 arithmetic; values returned in ``z.dtype``).
      entropy_weight: weight of the entropy regulariser (0 skips it).
      diversity_weight: weight of the codebook-entropy term.
      temperature: τ of ``p(c|u) ∝ exp(-|u - c|²/τ)``.
      commitment_weight: weight of ``mean|u - sg(q)|²``.
      entropy_group_size: bits per group of the factorised codebook entropy (1..16; the paper uses 9).
      check_finite: refuse NaN/Inf in ``z``.

    Returns:
      :class:`vqjax.Quantized`: unit-norm values ``±1/sqrt(d)``, codes int32 ``z.shape[:-1]`` in ``[0, 2^d)``.

    Raises:
      TypeError / ValueError: as :func:`vqjax.lfq`.

    Example:
      >>> q = vqjax.bsq(z)                      # z [B, T, 18]
      >>> vqjax.bsq_decode(q.codes, 18) == q.values
    """
    z = checks.as_float_array("bsq: z", z)
    dim = check_bits("bsq: z.shape[-1]", z.shape[-1])
    check_common("bsq", temperature=temperature, entropy_weight=entropy_weight, diversity_weight=diversity_weight,
                 commitment_weight=commitment_weight, group_size=entropy_group_size)
    if check_finite:
        z = checks.assert_finite("bsq: z", z)
    u = search.l2_normalize(z.astype(jnp.float32))
    return binary_quantize(u, u.astype(z.dtype), scale=1.0 / math.sqrt(dim), temperature=temperature,
                           entropy_weight=entropy_weight, diversity_weight=diversity_weight,
                           commitment_weight=commitment_weight, group_size=entropy_group_size)
