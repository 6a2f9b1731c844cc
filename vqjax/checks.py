"""Argument checks shared by every layer: clear errors at trace time, non-finite guards at run time.

Every public function validates its inputs through these helpers so that bad input raises a ``TypeError`` or
``ValueError`` naming the argument, what it got and what it expected, before any XLA computation is built.
Values that only exist at run time (NaN/Inf inside a jitted computation) are caught by :func:`assert_finite`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_float_array",
    "as_code_array",
    "check_choice",
    "check_positive_int",
    "check_nonnegative",
    "check_probability",
    "assert_finite",
    "is_concrete",
    "NonFiniteError",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values now (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def as_float_array(name: str, x: Any, *, min_rank: int = 1, last_dim: int | None = None) -> jax.Array:
    """Returns ``x`` as a real floating JAX array of rank >= ``min_rank``, or raises.

    Args:
      name: the argument's name, used in the error message.
      x: array-like input.
      min_rank: smallest accepted rank.
      last_dim: when given, the required size of the last axis.

    Raises:
      TypeError: ``x`` is not an array, or is integer, boolean or complex.
      ValueError: ``x`` has too small a rank or the wrong last dimension.
    """
    if not hasattr(x, "dtype"):
        if isinstance(x, (list, tuple, float, int, np.number)):
            x = jnp.asarray(x)
        else:
            raise TypeError(f"{name} must be a floating-point array; got {type(x).__name__}")
    dtype = jnp.dtype(x.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be a real floating-point array; got complex dtype {dtype}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array (float32, bfloat16 or float16); got dtype {dtype}")
    if x.ndim < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank} (shape [..., D]); got a rank-{x.ndim} array of shape "
            f"{tuple(x.shape)}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(
            f"{name} must have last dimension {last_dim}; got shape {tuple(x.shape)} "
            f"(last dimension {x.shape[-1]})")
    return jnp.asarray(x)


def as_code_array(name: str, codes: Any, num_codes: int, *, low: int = 0) -> jax.Array:
    """Returns ``codes`` as an int32 array, checking the range ``[low, num_codes)`` when values are concrete.

    ``low=-1`` admits the "absent level" marker of residual codes (see ``vqjax.rvq_decode``).

    Raises:
      TypeError: ``codes`` is not an integer array.
      ValueError: a concrete code is below ``low`` or ``>= num_codes``.
    """
    if not hasattr(codes, "dtype"):
        codes = jnp.asarray(codes)
    if not jnp.issubdtype(jnp.dtype(codes.dtype), jnp.integer):
        raise TypeError(f"{name} must be an integer array of code indices; got dtype {codes.dtype}")
    if is_concrete(codes) and codes.size:
        lo, hi = int(jnp.min(codes)), int(jnp.max(codes))
        if lo < low or hi >= num_codes:
            raise ValueError(
                f"{name} must lie in [{low}, {num_codes}); got values in [{lo}, {hi}]")
    return jnp.asarray(codes, jnp.int32)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Raises unless ``value`` is a positive Python int (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def check_nonnegative(name: str, value: Any) -> float:
    """Raises unless ``value`` is a finite non-negative Python number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a non-negative number; got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number; got {value}")
    return float(value)


def check_probability(name: str, value: Any, *, open_right: bool = True) -> float:
    """Raises unless ``0 <= value < 1`` (or ``<= 1`` when ``open_right`` is False)."""
    value = check_nonnegative(name, value)
    if value > 1 or (open_right and value == 1):
        raise ValueError(f"{name} must lie in [0, {'1)' if open_right else '1]'}; got {value}")
    return value


class DTypeError(TypeError, ValueError):
    """An input of a dtype that has no rule (a TypeError, and a ValueError for callers that catch bad values)."""


class NonFiniteError(ValueError):
    """Raised when ``check_finite=True`` meets NaN or Inf."""


def _raise_non_finite(count, *, name: str):
    count = int(count)
    if count:
        raise NonFiniteError(
            f"{name} contains {count} non-finite values (NaN or Inf); check_finite=True refuses them")


def assert_finite(name: str, x: jax.Array) -> jax.Array:
    """Refuses NaN/Inf in ``x`` and returns ``x`` unchanged.

    With concrete values the check runs now and raises :class:`NonFiniteError` (a ``ValueError``) naming the argument and the count. Under ``jit``/``grad``/``vmap`` it becomes a host
    callback that aborts the computation with the same message (surfacing as ``jax.errors.JaxRuntimeError``
    whose text contains it), in the spirit of equinox's ``error_if``.
    """
    count = jnp.sum(~jnp.isfinite(x.astype(jnp.float32)), dtype=jnp.int32)
    if is_concrete(x):
        _raise_non_finite(count, name=name)
        return x
    jax.debug.callback(functools.partial(_raise_non_finite, name=name), count)
    return x
