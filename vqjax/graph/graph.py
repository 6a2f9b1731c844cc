"""A multi-relational graph as integer (head, relation, tail) triples, checked once on construction.

    g = Graph.from_triples(triples)                      # int [E, 3]; node and relation counts inferred
    g = Graph.from_triples(triples, num_nodes=135, num_relations=46)
    g.with_inverse()                                     # adds (t, r + R, h) for every (h, r, t)

Hop distances in :mod:`vqjax.graph` are taken on the undirected graph (an edge joins its head and tail whichever
way it points), as in NodePiece, which is the same as following edges together with their inverses.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.sparse as sp

__all__ = ["Graph"]


def _check_ids(name: str, values: np.ndarray, limit: int, what: str) -> None:
    if values.size and values.min() < 0:
        bad = int(values[values < 0][0])
        raise ValueError(f"{name} must be >= 0; got {what} id {bad}")
    if values.size and values.max() >= limit:
        raise ValueError(f"{name} must be < {limit} (the number of {what}s); got {what} id {int(values.max())}")


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """Triples ``(head, relation, tail)`` over ``num_nodes`` nodes and ``num_relations`` relation types.

    Attributes:
      heads, relations, tails: int64 ``[E]``.
      num_nodes: node ids are ``0 .. num_nodes - 1`` (isolated nodes allowed).
      num_relations: relation ids are ``0 .. num_relations - 1``.
    """

    heads: np.ndarray
    relations: np.ndarray
    tails: np.ndarray
    num_nodes: int
    num_relations: int

    @classmethod
    def from_triples(cls, triples, *, num_nodes: int | None = None, num_relations: int | None = None) -> "Graph":
        """Checks and wraps an integer ``[E, 3]`` array of (head, relation, tail).

        Raises:
          TypeError: ``triples`` is not an integer array.
          ValueError: wrong shape, no triples, negative ids, ids out of ``num_nodes``/``num_relations``, or
            non-positive counts.
        """
        t = np.asarray(triples)
        if t.dtype.kind not in "iu":
            raise TypeError(f"triples must be an integer array of (head, relation, tail); got dtype {t.dtype}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"triples must have shape [E, 3] (head, relation, tail); got {t.shape}")
        if t.shape[0] == 0:
            raise ValueError("triples is empty: a graph needs at least one (head, relation, tail) triple")
        t = t.astype(np.int64)
        heads, relations, tails = t[:, 0].copy(), t[:, 1].copy(), t[:, 2].copy()
        for name, value in (("num_nodes", num_nodes), ("num_relations", num_relations)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value <= 0):
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if num_nodes is None:
            _check_ids("triples[:, 0] and triples[:, 2]", np.concatenate([heads, tails]), np.iinfo(np.int32).max,
                       "node")
            num_nodes = int(max(heads.max(), tails.max())) + 1
        if num_relations is None:
            _check_ids("triples[:, 1]", relations, np.iinfo(np.int32).max, "relation")
            num_relations = int(relations.max()) + 1
        _check_ids("triples[:, 0] (heads)", heads, num_nodes, "node")
        _check_ids("triples[:, 2] (tails)", tails, num_nodes, "node")
        _check_ids("triples[:, 1] (relations)", relations, num_relations, "relation")
        return cls(heads, relations, tails, int(num_nodes), int(num_relations))

    @property
    def num_edges(self) -> int:
        return int(self.heads.shape[0])

    @property
    def triples(self) -> np.ndarray:
        """int64 ``[E, 3]``."""
        return np.stack([self.heads, self.relations, self.tails], axis=1)

    def with_inverse(self) -> "Graph":
        """The graph with an inverse triple ``(t, r + R, h)`` for every ``(h, r, t)``; ``2R`` relation types."""
        R = self.num_relations
        return Graph(np.concatenate([self.heads, self.tails]), np.concatenate([self.relations, self.relations + R]),
                     np.concatenate([self.tails, self.heads]), self.num_nodes, 2 * R)

    def degrees(self) -> np.ndarray:
        """int64 ``[num_nodes]``: edges touching each node (in + out; a self-loop counts twice)."""
        return np.bincount(np.concatenate([self.heads, self.tails]), minlength=self.num_nodes)

    @functools.cached_property
    def adjacency(self):
        """The undirected adjacency as a symmetric ``scipy.sparse.csr_matrix`` ``[N, N]``: entry ``(u, v)`` counts
        the edges between ``u`` and ``v`` in either direction; self-loops dropped."""

        keep = self.heads != self.tails
        h, t = self.heads[keep], self.tails[keep]
        ones = np.ones(2 * h.size, np.float32)
        m = sp.csr_matrix((ones, (np.concatenate([h, t]), np.concatenate([t, h]))),
                          shape=(self.num_nodes, self.num_nodes))
        m.sum_duplicates()
        return m

    @property
    def neighbors(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct undirected neighbours in CSR form ``(indptr [N + 1], indices)``: the neighbours of node ``v`` are
        ``indices[indptr[v]:indptr[v + 1]]``, ascending."""
        m = self.adjacency
        return m.indptr.astype(np.int64), m.indices.astype(np.int64)
