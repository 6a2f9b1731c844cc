"""Quantizers chosen by name, for configs: a registry that refuses duplicates and unknown fields.

``make_quantizer('vq', dim=64, codebook_size=1024, codebook_learning='ema')`` builds ``vqjax.nn.VectorQuantizer``;
the names are ``vq``, ``rvq``, ``pq``, ``aq``, ``fsq``, ``lfq`` and ``bsq``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

import flax.linen as nn

from vqjax import nn as vqnn

__all__ = ["QUANTIZERS", "register_quantizer", "make_quantizer", "quantizer_vocab_size"]

QUANTIZERS: dict[str, type[nn.Module]] = {}


def register_quantizer(name: str, cls: type[nn.Module]) -> None:
    """Adds ``cls`` under ``name``; a name can be registered once."""
    if name in QUANTIZERS:
        raise ValueError(f"quantizer {name!r} is already registered (as {QUANTIZERS[name].__name__})")
    QUANTIZERS[name] = cls


for _name, _cls in (("vq", vqnn.VectorQuantizer), ("rvq", vqnn.ResidualVQ), ("pq", vqnn.ProductVQ),
                    ("aq", vqnn.AdditiveVQ), ("fsq", vqnn.FSQ), ("lfq", vqnn.LFQ), ("bsq", vqnn.BSQ)):
    register_quantizer(_name, _cls)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}


def make_quantizer(name: str, dim: int, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The quantizer registered as ``name`` with model width ``dim`` and the other fields from ``kwargs``.

    Raises:
      ValueError: unknown name, an unknown field, or a missing required field, naming what is allowed.
    """
    if name not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}; got {name!r}")
    cls = QUANTIZERS[name]
    kwargs = dict(kwargs or {})
    fields = _fields(cls)
    unknown = sorted(set(kwargs) - fields)
    if unknown:

        near = {u: difflib.get_close_matches(u, sorted(fields), n=1, cutoff=0.5) for u in unknown}
        hints = "".join(f" ({u!r}: did you mean {n[0]!r}?)" for u, n in near.items() if n)
        raise ValueError(f"quantizer {name!r} ({cls.__name__}) has no field(s) {unknown}{hints}; its fields are "
                         f"{sorted(fields - {'dim'})}")
    required = sorted(f.name for f in dataclasses.fields(cls)
                      if f.name in fields and f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING and f.name != "dim")
    missing = [f for f in required if f not in kwargs]
    if missing:
        raise ValueError(f"quantizer {name!r} ({cls.__name__}) needs field(s) {missing}; got {sorted(kwargs)}")
    if "levels" in kwargs:
        kwargs["levels"] = tuple(kwargs["levels"])
    return cls(dim=dim, **kwargs)


def quantizer_vocab_size(quantizer: nn.Module) -> int:
    """Distinct values one token (one entry of the codes array) takes: the quantizer module's own ``vocab_size``
    (``K``, ``prod(levels)`` or ``2^bits``), so a quantizer added with :func:`register_quantizer` works as long as it
    states its own.

    Raises:
      TypeError: a module without a ``vocab_size``.
    """
    size = getattr(quantizer, "vocab_size", None)
    if size is None:
        raise TypeError(f"quantizer_vocab_size: {type(quantizer).__name__} has no vocab_size; a quantizer module must "
                        f"state the distinct values of one code as a `vocab_size` property")
    return int(size)
