"""Row gathers and scatter-adds that work on any mesh: none, Auto axes, or Explicit axes.

Under a mesh with ``AxisType.Explicit`` axes, ``table[idx]`` with sharded ``idx`` is a sharding-type error
("use .at[...].get(out_sharding=)"), and so is ``segment_sum`` with sharded segment ids. These helpers pass
the output sharding explicitly in that case and fall back to the plain ops everywhere else.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

__all__ = ["explicit_mesh_active", "replicate", "gather_rows", "scatter_add_rows", "bincount"]


def explicit_mesh_active() -> bool:
    """True when the current abstract mesh has at least one ``Explicit`` axis."""
    mesh = jax.sharding.get_abstract_mesh()
    return (not mesh.empty) and any(t == AxisType.Explicit for t in mesh.axis_types)


def replicate(x: jax.Array) -> jax.Array:
    """``x`` replicated over an Explicit mesh (for sequential ops such as ``cumsum``); unchanged otherwise."""
    return jax.sharding.reshard(x, P()) if explicit_mesh_active() else x


def _spec(x: jax.Array) -> tuple:
    spec = tuple(jax.typeof(x).sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def gather_rows(table: jax.Array, idx: jax.Array) -> jax.Array:
    """``table[idx]`` for ``table [K, ...]`` and integer ``idx [...]``: shape ``idx.shape + table.shape[1:]``.

    The output is sharded like ``idx`` (trailing axes replicated) on an Explicit mesh. Multi-dimensional
    ``idx`` is flattened first: XLA's CPU gather is many times slower with a multi-dimensional index.
    """
    if idx.ndim > 1:
        return gather_rows(table, idx.reshape(-1)).reshape(idx.shape + table.shape[1:])
    if explicit_mesh_active():
        out_spec = P(*_spec(idx), *([None] * (table.ndim - 1)))
        return table.at[idx].get(out_sharding=out_spec)
    return table[idx]


def scatter_add_rows(values: jax.Array, idx: jax.Array, num_rows: int) -> jax.Array:
    """Sums rows of ``values [N, ...]`` into ``num_rows`` buckets given by ``idx [N]``: ``[num_rows, ...]``.

    This is ``jax.ops.segment_sum`` with a replicated output, so statistics over a batch sharded along N are
    global sums (XLA inserts the all-reduce), on one device or many.
    """
    out = jnp.zeros((num_rows,) + values.shape[1:], values.dtype)
    if explicit_mesh_active():
        return out.at[idx].add(values, out_sharding=P())
    return out.at[idx].add(values)


def bincount(idx: jax.Array, num_rows: int) -> jax.Array:
    """float32 counts of each value of ``idx`` (any shape) in ``[0, num_rows)``: ``[num_rows]``."""
    flat = idx.reshape(-1)
    return scatter_add_rows(jnp.ones(flat.shape, jnp.float32), flat, num_rows)
