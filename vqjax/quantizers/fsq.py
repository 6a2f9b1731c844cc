"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the ``d = len(levels)`` channels is bounded to ``L_i`` values and rounded; the implicit codebook is the
grid of all ``prod(levels)`` combinations and is never materialised. With ``h_i = L_i // 2``::

    bounded_i = tanh(z_i + shift_i) * a_i - offset_i      a_i = (L_i - 1)(1 + eps)/2,  offset_i = 0.5 if L_i even else 0,
                                                          shift_i = atanh(offset_i / a_i)
    digit_i   = clip(round(bounded_i), -h_i, L_i - 1 - h_i) + h_i          in [0, L_i)
    value_i   = (digit_i - h_i) / h_i                                     on the grid k / h_i
    code      = Σ_i digit_i * prod(L_0 .. L_{i-1})                         mixed radix, int32 in [0, prod(levels))

The gradient is straight-through on the rounding: ``d value_i / d z_i = a_i (1 - tanh²(z_i + shift_i)) / h_i``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vqjax import checks, estimators, metrics
from vqjax.quantizers.base import Quantized

__all__ = ["fsq", "fsq_encode", "fsq_decode", "check_levels", "codebook_size"]

_INT32_CODES = 2 ** 31 - 1


def check_levels(name: str, levels: Sequence[int]) -> tuple[int, ...]:
    """Validates FSQ levels: a non-empty sequence of ints >= 2 whose product fits int32 codes."""
    if isinstance(levels, (int, np.integer)) or not hasattr(levels, "__len__"):
        raise TypeError(f"{name} must be a sequence of ints such as (8, 5, 5, 5); got {levels!r}")
    levels = tuple(levels)
    if not levels:
        raise ValueError(f"{name} must hold at least one level count; got ()")
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, (int, np.integer)) or lv < 2:
            raise ValueError(f"{name} must hold ints >= 2 (values per channel); got {levels}")
    size = math.prod(int(lv) for lv in levels)
    if size > _INT32_CODES:
        raise ValueError(f"{name}: the codebook has prod(levels) = {size} codes, more than int32 codes hold "
                         f"({_INT32_CODES}); use fewer or smaller levels, or a grouped form (vqjax.grouped_fsq)")
    return tuple(int(lv) for lv in levels)


def codebook_size(levels: Sequence[int]) -> int:
    """``prod(levels)``: the number of implicit codes."""
    return math.prod(check_levels("codebook_size: levels", levels))


def _constants(levels):
    lv = np.asarray(levels, np.float64)
    half = np.floor(lv / 2)
    basis = np.cumprod([1] + list(levels[:-1])).astype(np.int64)
    return lv, half, basis


def _bound(z, levels, eps):
    lv, _, _ = _constants(levels)
    a = (lv - 1) * (1 + eps) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / a)
    zf = z.astype(jnp.float32)
    return jnp.tanh(zf + jnp.asarray(shift, jnp.float32)) * jnp.asarray(a, jnp.float32) - jnp.asarray(
        offset, jnp.float32)


def _digits(bounded, levels):
    lv, half, _ = _constants(levels)
    r = jnp.round(bounded)
    r = jnp.where(jnp.isnan(r), 0.0, r)          # codes stay in range even for NaN input (values keep the NaN)
    r = jnp.clip(r, -jnp.asarray(half, jnp.float32), jnp.asarray(lv - 1 - half, jnp.float32))
    return (r + jnp.asarray(half, jnp.float32)).astype(jnp.int32)


def _pack(digits, levels):
    _, _, basis = _constants(levels)
    return jnp.sum(digits * jnp.asarray(basis, jnp.int32), axis=-1, dtype=jnp.int32)


def _grid_values(digits, levels):
    _, half, _ = _constants(levels)
    h = jnp.asarray(half, jnp.float32)
    return (digits.astype(jnp.float32) - h) / h


def _inputs(z, levels, eps, fn):
    levels = check_levels(f"{fn}: levels", levels)
    z = checks.as_float_array(f"{fn}: z", z, last_dim=len(levels))
    if not 0 < checks.check_nonnegative(f"{fn}: eps", eps) < 1:
        raise ValueError(f"{fn}: eps must lie in (0, 1) (at 0 a 2-level channel is stuck at one value); got {eps}")
    return z, levels


def fsq_encode(z: jax.Array, levels: Sequence[int], *, eps: float = 1e-3) -> jax.Array:
    """Packed FSQ codes: int32 ``z.shape[:-1]`` in ``[0, prod(levels))``. See :func:`fsq`."""
    z, levels = _inputs(z, levels, eps, "fsq_encode")
    return _pack(_digits(_bound(z, levels, eps), levels), levels)


def fsq_decode(codes: jax.Array, levels: Sequence[int], *, dtype=jnp.float32) -> jax.Array:
    """Grid values of packed codes: ``codes.shape + (len(levels),)`` in ``dtype``, each on ``k / (L_i // 2)``."""
    levels = check_levels("fsq_decode: levels", levels)
    codes = checks.as_code_array("fsq_decode: codes", codes, math.prod(levels))
    _, _, basis = _constants(levels)
    digits = (codes[..., None] // jnp.asarray(basis, jnp.int32)) % jnp.asarray(levels, jnp.int32)
    return _grid_values(digits, levels).astype(dtype)


def fsq(z: jax.Array, levels: Sequence[int], *, eps: float = 1e-3, check_finite: bool = False) -> Quantized:
    """Finite scalar quantization of ``z [..., len(levels)]``.

    Args:
      z: ``[..., d]`` floating with ``d == len(levels)`` (arithmetic in float32; values returned in ``z.dtype``).
      levels: values per channel, each >= 2, e.g. ``(8, 5, 5, 5)`` (1000 codes) or ``(8,) * 8`` (16.7M codes);
        ``prod(levels)`` must fit int32.
      eps: widens the tanh bound by ``1 + eps`` so the extreme levels are reachable, in (0, 1).
      check_finite: refuse NaN/Inf in ``z``.

    Returns:
      :class:`vqjax.Quantized`: values on the grid (see the module docstring), codes int32 ``z.shape[:-1]`` in
      ``[0, prod(levels))``, loss 0 (FSQ needs no auxiliary loss), metrics 'perplexity' and 'usage' over the
      ``prod(levels)`` implicit codes (counted by sorting when the codebook is large).

    Raises:
      TypeError / ValueError: levels that are not ints >= 2 or whose product overflows int32, z whose last
        dimension is not ``len(levels)``, non-floating z, eps outside [0, 1).

    Example:
      >>> q = vqjax.fsq(z, (8, 5, 5, 5))           # z [B, T, 4]
      >>> vqjax.fsq_decode(q.codes, (8, 5, 5, 5)) == q.values
    """
    z, levels = _inputs(z, levels, eps, "fsq")
    if check_finite:
        z = checks.assert_finite("fsq: z", z)
    bounded = _bound(z, levels, eps)
    digits = _digits(bounded, levels)
    grid = _grid_values(digits, levels)
    _, half, _ = _constants(levels)
    # Straight-through on the rounding, taken on the scaled bound so that d value / d z = bound'(z) / h.
    values = estimators.straight_through((bounded / jnp.asarray(half, jnp.float32)).astype(z.dtype),
                                         grid.astype(z.dtype))
    codes = _pack(digits, levels)
    return Quantized(values, codes, jnp.float32(0.0), metrics.code_metrics(codes, math.prod(levels)))
