"""Flax modules for the implicit-codebook quantizers: ``FSQ``, ``LFQ``, ``BSQ``.

They own no codebook, only optional linear projections between the model width ``dim`` and the quantizer's
channels (as in vector-quantize-pytorch and MAGVIT-v2 when the widths differ), and the ``num_groups`` split of
the grouped forms. Each is called as ``module.apply(variables, z, train=...) -> vqjax.Quantized`` (``apply_update``
is accepted as the learned-codebook modules take it, and ignored: these keep no statistics) and has
``encode`` / ``decode`` methods with ``decode(encode(z)) == module(z).values`` (``decode`` in float32 by
default; pass ``dtype=z.dtype`` for bit equality with low-precision input). ``dtype`` is the projections'
compute dtype (None: from their input and parameters) and ``param_dtype`` their storage; the quantization itself
runs in float32 and the values come back in the input's dtype.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vqjax import checks
from vqjax.quantizers.base import Quantized
from vqjax.quantizers.bsq import bsq, bsq_decode, bsq_encode
from vqjax.quantizers.compose import merge_groups, split_groups
from vqjax.quantizers.fsq import check_levels, fsq, fsq_decode, fsq_encode
from vqjax.quantizers.lfq import check_bits, lfq, lfq_decode, lfq_encode

__all__ = ["FSQ", "LFQ", "BSQ"]


class _Projected(nn.Module):
    """Shared plumbing: ``dim -> groups x channels`` projection in, and back out."""

    def _channels(self) -> int:
        raise NotImplementedError

    def _width(self) -> int:
        return self.num_groups * self._channels()

    def _needs_projection(self) -> bool:
        return self.dim is not None and self.dim != self._width()

    def setup(self):
        self._validate()
        if self._needs_projection():
            self.project_in = nn.Dense(self._width(), dtype=self.dtype, param_dtype=self.param_dtype,
                                       name="project_in")
            self.project_out = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="project_out")

    def _in(self, z):
        name = type(self).__name__
        z = checks.as_float_array(f"{name}: z", z, last_dim=self.dim if self.dim is not None else self._width())
        if self._needs_projection():
            z = self.project_in(z)
        return split_groups(z, self.num_groups) if self.num_groups > 1 else z

    def _out(self, values, dtype):
        if self.num_groups > 1:
            values = merge_groups(values)
        if self._needs_projection():
            values = self.project_out(values)
        return values.astype(dtype)

    def _finish(self, q: Quantized, z) -> Quantized:
        return q._replace(values=self._out(q.values, z.dtype))


class FSQ(_Projected):
    """Finite scalar quantization (:func:`vqjax.fsq`) as a module.

    Attributes:
      levels: values per channel, e.g. ``(8, 5, 5, 5)``.
      dim: model width; when it differs from ``num_groups * len(levels)``, Dense layers project in and out.
      num_groups: split the channels into this many groups, each with its own code (codes ``[..., G]``).
      eps: the tanh bound's widening.
      check_finite: refuse NaN/Inf inputs.

    Example:
      >>> q = vqjax.nn.FSQ((8, 5, 5, 5), dim=256).apply(variables, z)     # codes in [0, 1000)
    """

    levels: Sequence[int]
    dim: int | None = None
    num_groups: int = 1
    eps: float = 1e-3
    check_finite: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _channels(self) -> int:
        return len(self.levels)

    def _validate(self):
        check_levels("FSQ: levels", self.levels)
        checks.check_positive_int("FSQ: num_groups", self.num_groups)
        if self.dim is not None:
            checks.check_positive_int("FSQ: dim", self.dim)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def vocab_size(self) -> int:
        """Distinct values of one code: ``prod(levels)``."""
        return math.prod(self.levels)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True) -> Quantized:
        return self._finish(fsq(self._in(z), tuple(self.levels), eps=self.eps, check_finite=self.check_finite), z)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1]`` (``+ (num_groups,)`` when grouped)."""
        return fsq_encode(self._in(z), tuple(self.levels), eps=self.eps)

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` values of ``codes``."""
        return self._out(fsq_decode(codes, tuple(self.levels)), dtype)


class LFQ(_Projected):
    """Lookup-free quantization (:func:`vqjax.lfq`) as a module.

    Attributes:
      bits: channels per group (``2^bits`` codes per group, at most 31).
      dim: model width; projected to ``num_groups * bits`` when different.
      num_groups: groups of ``bits`` channels, each with its own code.
      scale, entropy_weight, diversity_weight, temperature, commitment_weight, entropy_group_size: see
        :func:`vqjax.lfq`; the entropy term is added only when ``train=True``.
      check_finite: refuse NaN/Inf inputs.
    """

    bits: int
    dim: int | None = None
    num_groups: int = 1
    scale: float = 1.0
    entropy_weight: float = 0.1
    diversity_weight: float = 1.0
    temperature: float = 0.01
    commitment_weight: float = 0.25
    entropy_group_size: int | None = 8
    check_finite: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @property
    def vocab_size(self) -> int:
        """Distinct values of one code: ``2^bits``."""
        return 2 ** self.bits

    def _channels(self) -> int:
        return self.bits

    def _validate(self):
        check_bits("LFQ: bits", self.bits)
        checks.check_positive_int("LFQ: num_groups", self.num_groups)
        if self.dim is not None:
            checks.check_positive_int("LFQ: dim", self.dim)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True) -> Quantized:
        q = lfq(self._in(z), scale=self.scale, entropy_weight=self.entropy_weight if train else 0.0,
                diversity_weight=self.diversity_weight, temperature=self.temperature,
                commitment_weight=self.commitment_weight, entropy_group_size=self.entropy_group_size,
                check_finite=self.check_finite)
        return self._finish(q, z)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1]`` (``+ (num_groups,)`` when grouped)."""
        return lfq_encode(self._in(z))

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` values of ``codes``."""
        return self._out(lfq_decode(codes, self.bits, scale=self.scale), dtype)


class BSQ(_Projected):
    """Binary spherical quantization (:func:`vqjax.bsq`) as a module.

    Attributes:
      bits: channels per group (at most 31); each group is normalised to the unit sphere on its own.
      dim: model width; projected to ``num_groups * bits`` when different.
      num_groups: groups of ``bits`` channels, each with its own code.
      entropy_weight, diversity_weight, temperature, commitment_weight, entropy_group_size: see
        :func:`vqjax.bsq`; the entropy term is added only when ``train=True``.
      check_finite: refuse NaN/Inf inputs.
    """

    bits: int
    dim: int | None = None
    num_groups: int = 1
    entropy_weight: float = 0.1
    diversity_weight: float = 1.0
    temperature: float = 0.1
    commitment_weight: float = 0.25
    entropy_group_size: int | None = 9
    check_finite: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @property
    def vocab_size(self) -> int:
        """Distinct values of one code: ``2^bits``."""
        return 2 ** self.bits

    def _channels(self) -> int:
        return self.bits

    def _validate(self):
        check_bits("BSQ: bits", self.bits)
        checks.check_positive_int("BSQ: num_groups", self.num_groups)
        if self.dim is not None:
            checks.check_positive_int("BSQ: dim", self.dim)

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True) -> Quantized:
        q = bsq(self._in(z), entropy_weight=self.entropy_weight if train else 0.0,
                diversity_weight=self.diversity_weight, temperature=self.temperature,
                commitment_weight=self.commitment_weight, entropy_group_size=self.entropy_group_size,
                check_finite=self.check_finite)
        return self._finish(q, z)

    def encode(self, z: jax.Array) -> jax.Array:
        """int32 codes ``z.shape[:-1]`` (``+ (num_groups,)`` when grouped)."""
        return bsq_encode(self._in(z))

    def decode(self, codes: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``[..., dim]`` values of ``codes``."""
        return self._out(bsq_decode(codes, self.bits), dtype)
