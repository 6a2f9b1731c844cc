"""Anchor selection for NodePiece (Galkin et al. 2022): which nodes become vocabulary tokens.

Strategies: ``'degree'`` (highest degree first), ``'pagerank'`` (highest PageRank, optionally personalised),
``'random'`` (uniform, seeded), and ``'mix'``, which fills given fractions of the anchors from each strategy in
the order degree, pagerank, random, never picking a node twice (the NodePiece default mixes 40% degree, 40%
PageRank and 20% random). Ties are broken by the lower node id, so every strategy is deterministic given a seed.
"""

from __future__ import annotations

import numpy as np

from vqjax.graph.graph import Graph

__all__ = ["STRATEGIES", "pagerank", "select_anchors"]

STRATEGIES = ("degree", "pagerank", "random", "mix")
DEFAULT_FRACTIONS = {"degree": 0.4, "pagerank": 0.4, "random": 0.2}


def pagerank(graph: Graph, *, damping: float = 0.85, personalization: np.ndarray | None = None,
             tol: float = 1e-6, max_iters: int = 200) -> np.ndarray:
    """PageRank of every node on the undirected graph by power iteration (scipy.sparse), float64 ``[N]``.

    ``r = (1 - damping) p + damping (P^T r + dangling mass · p)`` with ``P`` the row-normalised adjacency and
    ``p`` the teleport distribution (uniform, or ``personalization`` normalised to sum 1); stops when the L1 change
    falls below ``tol``. Parallel edges count with their multiplicity.
    """
    if not 0 < damping < 1:
        raise ValueError(f"damping must be in (0, 1); got {damping}")
    n = graph.num_nodes
    if personalization is None:
        p = np.full(n, 1.0 / n)
    else:
        p = np.asarray(personalization, np.float64)
        if p.shape != (n,) or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
            raise ValueError(f"personalization must be a non-negative finite [num_nodes={n}] vector with a "
                             f"positive sum; got shape {p.shape}")
        p = p / p.sum()
    adj = graph.adjacency.astype(np.float64)                         # symmetric, edge multiplicities
    deg = np.asarray(adj.sum(axis=1), np.float64).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    dangling = deg == 0
    r = p.copy()
    for _ in range(max_iters):
        new = damping * (adj @ (r * inv) + r[dangling].sum() * p) + (1.0 - damping) * p
        if np.abs(new - r).sum() < tol:
            return new
        r = new
    return r


def _ranked(scores: np.ndarray) -> np.ndarray:
    """Node ids by decreasing score, ties by lower id."""
    return np.lexsort((np.arange(scores.size), -scores))


def select_anchors(graph: Graph, num_anchors: int, *, strategy: str = "mix",
                   fractions: dict[str, float] | None = None, seed: int = 0,
                   personalization: np.ndarray | None = None) -> np.ndarray:
    """int64 ``[num_anchors]`` distinct anchor node ids, in the order their strategy ranked them.

    Args:
      graph: the graph.
      num_anchors: how many anchors (at most ``graph.num_nodes``).
      strategy: one of :data:`STRATEGIES`.
      fractions: for ``'mix'``: ``{'degree': a, 'pagerank': b, 'random': c}`` summing to 1 (missing keys are 0;
        default 0.4/0.4/0.2).
      seed: for ``'random'``.
      personalization: teleport weights for ``'pagerank'`` (personalised PageRank).

    Raises:
      ValueError: unknown strategy, ``num_anchors`` out of range, bad fractions.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    n = graph.num_nodes
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, (int, np.integer)) or not 0 < num_anchors <= n:
        raise ValueError(f"num_anchors must be an int in [1, num_nodes={n}]; got {num_anchors!r}")
    if strategy != "mix":
        if fractions is not None:
            raise ValueError(f"fractions only applies to strategy='mix'; got strategy={strategy!r}")
        fractions = {strategy: 1.0}
    elif fractions is None:
        fractions = DEFAULT_FRACTIONS
    unknown = set(fractions) - set(STRATEGIES[:3])
    if unknown:
        raise ValueError(f"fractions keys must be among {STRATEGIES[:3]}; got {sorted(unknown)}")
    values = np.asarray([float(fractions.get(s, 0.0)) for s in STRATEGIES[:3]])
    if np.any(values < 0) or abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1; got {dict(fractions)} "
                         f"(sum {values.sum():.6g})")
    counts = np.floor(values * num_anchors).astype(int)
    counts[np.argmax(values)] += num_anchors - counts.sum()          # rounding remainder to the largest share

    chosen = np.zeros(n, bool)
    picked: list[np.ndarray] = []
    for name, count in zip(STRATEGIES[:3], counts):
        if count == 0:
            continue
        if name == "degree":
            order = _ranked(graph.degrees().astype(np.float64))
        elif name == "pagerank":
            order = _ranked(pagerank(graph, personalization=personalization))
        else:
            order = np.random.default_rng(seed).permutation(n)
        order = order[~chosen[order]][:count]
        chosen[order] = True
        picked.append(order)
    return np.concatenate(picked).astype(np.int64)
