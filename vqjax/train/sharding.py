"""Precision and parameter sharding for every task: ``config.precision`` and ``config.sharding``.

``config.precision`` is the compute dtype of the models ('float32' or 'bfloat16'); parameters are stored in
float32 and the quantizers' own arithmetic (distances, rounding, entropy, codebook and EMA updates, usage
statistics) stays float32 whatever it is.

``config.sharding`` places the train state on the device mesh:

* ``'replicated'``: every device holds all parameters and optimizer state (data parallelism);
* ``'fsdp'``: parameters, optimizer state and the weights' EMA are split over the ``data`` axis by a rule on each
  array's shape (big_vision's: the largest axis that the axis size divides, the last of equal ones; arrays of fewer
  than :data:`FSDP_MIN_SIZE` elements stay replicated). The step gathers the parameters before it computes (one
  all-gather), so it computes what the replicated step computes; the stored state is about ``1 / data`` per device;
* ``'fsdp+model'``: as ``'fsdp'``, and a task with a model-parallel layout (the LM: its heads, MLP and vocabulary)
  also splits those over the ``model`` axis; a tokenizer task has no such layout and shards as ``'fsdp'``.

Codebook statistics (the ``vq_stats`` collection) stay replicated: they are global reductions over the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vqjax.train.config import PRECISIONS, SHARDINGS

__all__ = ["PRECISIONS", "SHARDINGS", "FSDP_MIN_SIZE", "compute_dtype", "fsdp_spec",
           "state_shardings", "gather", "gathering_params", "stored_bytes", "micro_batches"]

FSDP_MIN_SIZE = 1024
REPLICATED_COLLECTIONS = ("vq_stats",)


def compute_dtype(precision: str) -> Any:
    """The jnp dtype of ``config.precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    return jnp.dtype(precision)


def fsdp_spec(shape: tuple[int, ...], axis_size: int, axis: str = "data", min_size: int = FSDP_MIN_SIZE) -> P:
    """The ``PartitionSpec`` of an array of ``shape`` under FSDP: its largest axis that ``axis_size`` divides (the
    last of equal ones) split over ``axis``; replicated when it has fewer than ``min_size`` elements or no such
    axis."""
    if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    best = None
    for i, size in enumerate(shape):
        if size > 0 and size % axis_size == 0 and (best is None or size >= shape[best]):
            best = i
    if best is None:
        return P()
    return P(*([None] * best + [axis]))


def _in_collection(path, names) -> bool:
    return any(getattr(k, "key", getattr(k, "name", None)) in names for k in path)


def state_shardings(abstract, mesh: Mesh, mode: str, *, base=None, min_size: int = FSDP_MIN_SIZE):
    """``NamedSharding``s of a train state (a pytree like ``abstract``) for ``config.sharding = mode``.

    Args:
      abstract: the state's shapes (``jax.eval_shape`` of its init).
      mesh: a mesh with a ``data`` axis.
      mode: one of :data:`SHARDINGS`.
      base: the shardings a task's own layout gives (the LM's model-parallel ones), or None (replicated); under
        ``'fsdp'``/``'fsdp+model'`` an array whose base sharding leaves the ``data`` axis free gets it on its
        largest free axis that the data axis divides.
      min_size: arrays smaller than this stay as ``base`` places them.

    Returns:
      A pytree of ``NamedSharding`` like ``abstract``; leaves under a ``vq_stats`` key stay replicated.
    """
    if mode not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}; got {mode!r}")
    replicated = NamedSharding(mesh, P())
    if base is None:
        base = jax.tree.map(lambda _: replicated, abstract)
    data = mesh.shape["data"]

    def place(path, leaf, given):
        if mode == "replicated" or _in_collection(path, REPLICATED_COLLECTIONS):
            return given
        spec = tuple(given.spec) + (None,) * (len(leaf.shape) - len(given.spec))
        used = {a for entry in spec if entry is not None for a in (entry if isinstance(entry, tuple) else (entry,))}
        if "data" in used:
            return given
        free = tuple(s if p is None else 0 for s, p in zip(leaf.shape, spec))   # axes the base already splits: 0
        extra = fsdp_spec(free, data, min_size=0) if np.prod(leaf.shape, dtype=np.int64) >= min_size else P()
        if not len(extra):
            return given
        axis = len(extra) - 1
        spec = spec[:axis] + ("data",) + spec[axis + 1:]
        return NamedSharding(mesh, P(*spec))

    return jax.tree_util.tree_map_with_path(place, abstract, base)


def gather(tree, mesh: Mesh):
    """``tree`` constrained to be replicated on ``mesh`` inside ``jit``: FSDP's all-gather of the parameters before
    the step computes with them (the gradients return to the sharded state through the step's output shardings)."""
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: NamedSharding(mesh, P()), tree))


def gathering_params(step: Callable, mesh: Mesh, mode: str) -> Callable:
    """``step(state, *args)`` that, under ``'fsdp'``/``'fsdp+model'``, first gathers ``state.params`` onto every
    device (:func:`gather`) so it computes what the replicated step computes; ``step`` itself otherwise."""
    if mode == "replicated":
        return step

    def gathered(state, *args, **kwargs):
        return step(state._replace(params=gather(state.params, mesh)), *args, **kwargs)

    return gathered


def stored_bytes(tree) -> tuple[int, int]:
    """``(largest bytes any one device stores, bytes of the whole tree)`` of the arrays in ``tree``, measured from
    their addressable shards."""
    per_device: dict[Any, int] = {}
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        total += leaf.size * leaf.dtype.itemsize
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.size * shard.data.dtype.itemsize
    return (max(per_device.values()) if per_device else 0), total


def micro_batches(batch, steps: int):
    """``batch`` (a pytree of arrays with a leading batch axis) as ``steps`` micro-batches stacked on a new leading
    axis: ``[B, ...] -> [steps, B / steps, ...]``, micro-batch ``i`` holding examples ``i, i + steps, ...`` so that
    each micro-batch keeps the batch's sharding over the ``data`` axis."""
    def split(x):
        if x.shape[0] % steps:
            raise ValueError(f"micro_batches: batch axis {x.shape[0]} is not divisible by {steps} steps")
        return jnp.swapaxes(x.reshape((x.shape[0] // steps, steps) + x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)
