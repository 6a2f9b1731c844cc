"""Rematerialised blocks whose parameters keep their names (``config.remat``)."""

from __future__ import annotations

import functools

import flax.linen as nn

__all__ = ["block"]


@functools.cache
def _remat(cls: type[nn.Module]) -> type[nn.Module]:
    wrapped = nn.remat(cls)
    # Flax names an unnamed submodule after its class: keep ``ResBlock_0`` rather than ``CheckpointResBlock_0``, so
    # the parameters of a rematerialised model are those of the plain one (same checkpoints and exports).
    wrapped.__name__ = wrapped.__qualname__ = cls.__name__
    return wrapped


def block(cls: type[nn.Module], remat: bool) -> type[nn.Module]:
    """``cls``, or with ``remat`` its ``flax.linen.remat`` form: the backward pass recomputes the block's
    activations from its input instead of keeping them (less memory, one more forward pass of the block)."""
    return _remat(cls) if remat else cls
