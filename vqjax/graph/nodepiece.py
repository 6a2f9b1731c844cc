"""NodePiece tokenization (Galkin et al., ICLR 2022): every node as ``k`` anchor tokens with hop distances plus
``m`` relation-type tokens, from a vocabulary that stays small as the graph grows.

    g = Graph.from_triples(triples)
    vocab = NodePieceVocab.build(g, num_anchors=100, anchors_per_node=20, relations_per_node=6, seed=0)
    t = vocab.tokenize(g)            # NodeTokens(tokens int32 [N, 20 + 6], distances int32 [N, 20])
    new = vocab.tokenize_new(g, t, [(0, 3, 17), (0, 5, 42)])   # a new node from its edges, no retraining
    vocab.save("vocab.json"); NodePieceVocab.load("vocab.json")

Token ids: ``PAD = 0``, ``CLS = 1``, ``MASK = 2``, ``NOTHING = 3``, anchor ``i`` is ``4 + i``, relation type ``r``
(inverse relations ``r + R`` included) is ``4 + A + r``.

Nearest anchors come from one breadth-first search from all anchors at once: each node carries a bitset of the
anchors reached so far (``ceil(A / 64)`` uint64 words), and each round ORs the new bits of the frontier into its
unsaturated neighbours along the CSR adjacency. A node stops receiving once it
holds ``k`` anchors, which keeps every node's ``k`` nearest exact: ordering anchors by (distance, anchor index), a
node's ``k`` nearest are always among its neighbours' ``k`` nearest plus one hop. Memory is ``O(N A / 8)`` bytes
for the bitsets plus a few arrays over the edges of one round; ``N x A`` distances are never stored.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, NamedTuple

import numpy as np
import scipy.sparse as sp

from vqjax.graph.anchors import select_anchors
from vqjax.graph.graph import Graph

__all__ = ["PAD", "CLS", "MASK", "NOTHING", "NUM_SPECIAL", "NodeTokens", "NodePieceVocab", "nearest_anchors",
           "relational_context"]

PAD, CLS, MASK, NOTHING = 0, 1, 2, 3
NUM_SPECIAL = 4


class NodeTokens(NamedTuple):
    """Tokens of nodes.

    Attributes:
      tokens: int32 ``[N, k + m]``: ``k`` anchor tokens (nearest first; ``NOTHING`` where fewer than ``k`` anchors
        are reachable), then ``m`` relation tokens (ascending; ``PAD`` where the node has fewer than ``m`` types).
      distances: int32 ``[N, k]``: hop distance of each anchor token; ``-1`` for ``NOTHING``.
    """

    tokens: np.ndarray
    distances: np.ndarray


def _record(out_anchor, out_dist, count, nodes, new_words, hop, k):
    """Appends to each of ``nodes`` (distinct) its new anchors ``new_words`` (uint64 ``[W, len(nodes)]``) at
    distance ``hop``, lowest anchor index first, up to ``k`` in all. Set bits are peeled off word by word (lowest first), so the work is proportional to the bits
    taken, not to the number of anchors."""
    one = np.uint64(1)
    for w in range(new_words.shape[0]):
        word = new_words[w].copy()
        live = np.nonzero((word != 0) & (count[nodes] < k))[0]
        while live.size:
            x = word[live]
            low = x & (~x + one)                                  # lowest set bit
            rows = nodes[live]
            slot = count[rows]
            out_anchor[rows, slot] = 64 * w + np.bitwise_count(low - one).astype(np.int32)
            out_dist[rows, slot] = hop
            count[rows] = slot + 1
            word[live] = x ^ low
            live = live[(word[live] != 0) & (slot + 1 < k)]


def nearest_anchors(graph: Graph, anchors: np.ndarray, k: int, *, max_hops: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each node's ``k`` nearest anchors on the undirected graph, by (hop distance, anchor index).

    One breadth-first search from all anchors at once over bitsets stored word-major (``[ceil(A/64), N]`` uint64,
    so each word is a contiguous vector): a round gathers the frontier's new bits along the edges into unsaturated
    nodes and ORs them per destination (``np.bitwise_or.reduceat`` over the CSR order), one word at a time.

    Args:
      graph: the graph.
      anchors: int ``[A]`` distinct node ids; anchor ``i`` is reported as ``i``.
      k: anchors per node (at most ``A``).
      max_hops: stop the search after this many hops (``None``: until no node can gain an anchor).

    Returns:
      ``(anchor_index int32 [N, k], distance int32 [N, k])``, ``-1`` in both where fewer than ``k`` anchors are
      reachable (within ``max_hops``).

    Raises:
      ValueError: anchors not distinct node ids, ``k`` not in ``[1, A]``, negative ``max_hops``.
    """
    anchors = np.asarray(anchors)
    n, num_anchors = graph.num_nodes, int(anchors.size)
    if anchors.ndim != 1 or anchors.dtype.kind not in "iu" or num_anchors == 0:
        raise ValueError(f"anchors must be a non-empty 1-d integer array; got {anchors.dtype} {anchors.shape}")
    if anchors.min() < 0 or anchors.max() >= n:
        raise ValueError(f"anchors must be node ids in [0, {n}); got range [{anchors.min()}, {anchors.max()}]")
    if np.unique(anchors).size != num_anchors:
        raise ValueError("anchors must be distinct node ids; got repeated ids")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 < k <= num_anchors:
        raise ValueError(f"k (anchors per node) must be an int in [1, number of anchors={num_anchors}]; got {k!r}")
    if max_hops is not None and (not isinstance(max_hops, (int, np.integer)) or max_hops < 0):
        raise ValueError(f"max_hops must be a non-negative int or None; got {max_hops!r}")

    words = (num_anchors + 63) // 64
    indptr, sources = graph.neighbors
    dst_of_edge = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    out_anchor = np.full((n, k), -1, np.int32)
    out_dist = np.full((n, k), -1, np.int32)
    count = np.zeros(n, np.int64)

    order = np.argsort(anchors)
    frontier = anchors[order].astype(np.int64)
    frontier_bits = np.zeros((words, num_anchors), np.uint64)
    frontier_bits[order // 64, np.arange(num_anchors)] = np.left_shift(np.uint64(1), (order % 64).astype(np.uint64))
    reached = np.zeros((words, n), np.uint64)
    reached[:, frontier] = frontier_bits
    _record(out_anchor, out_dist, count, frontier, frontier_bits, 0, k)
    newly = np.zeros((words, n), np.uint64)           # new bits of the current frontier (other columns are stale)
    in_frontier = np.zeros(n, bool)
    hop = 0
    while frontier.size and (max_hops is None or hop < max_hops):
        hop += 1
        newly[:, frontier] = frontier_bits
        in_frontier[:] = False
        in_frontier[frontier] = True
        edges = np.nonzero(in_frontier[sources] & (count < k)[dst_of_edge])[0]     # sorted by destination
        if not edges.size:
            break
        src, dst = sources[edges], dst_of_edge[edges]
        starts = np.concatenate([[0], np.nonzero(dst[1:] != dst[:-1])[0] + 1])
        nodes = dst[starts]
        incoming = np.zeros((words, nodes.size), np.uint64)
        for w in range(words):
            if frontier_bits[w].any():
                incoming[w] = np.bitwise_or.reduceat(newly[w][src], starts) & ~reached[w][nodes]
        gained = incoming.any(axis=0)
        nodes, incoming = nodes[gained], incoming[:, gained]
        reached[:, nodes] |= incoming
        _record(out_anchor, out_dist, count, nodes, incoming, hop, k)
        frontier, frontier_bits = nodes, incoming
    return out_anchor, out_dist


def relational_context(graph: Graph, m: int, *, seed: int = 0) -> np.ndarray:
    """int32 ``[N, m]``: up to ``m`` distinct relation types on each node's outgoing edges (edges of
    ``graph.with_inverse()`` if you want incoming ones too), sampled uniformly without replacement (seeded), in
    ascending order, ``-1`` padded."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"m (relations per node) must be a non-negative int; got {m!r}")
    n, r = graph.num_nodes, graph.num_relations
    out = np.full((n, m), -1, np.int32)
    if m == 0:
        return out

    # distinct (node, relation) pairs in CSR form (counting sort, relations ascending within each node)
    pairs = sp.csr_matrix((np.ones(graph.num_edges, np.float32), (graph.heads, graph.relations)), shape=(n, r))
    pairs.sum_duplicates()
    indptr, rels = pairs.indptr.astype(np.int64), pairs.indices
    size = np.diff(indptr)
    # partial Fisher-Yates: after step j, slots [0, j] of each over-full node hold a uniform random j+1-subset
    big = np.nonzero(size > m)[0]
    perm = np.arange(rels.size)
    rng = np.random.default_rng(seed)
    for j in range(m):
        pick = j + (rng.random(big.size) * (size[big] - j)).astype(np.int64)
        a, b = indptr[big] + j, indptr[big] + pick
        perm[a], perm[b] = perm[b], perm[a]
    rank = np.arange(rels.size) - np.repeat(indptr[:-1], size)
    chosen = np.zeros(rels.size, bool)
    chosen[perm[rank < m]] = True                                   # kept in ascending relation order
    nodes = np.repeat(np.arange(n), size)[chosen]
    kept = np.bincount(nodes, minlength=n)
    out[nodes, np.arange(nodes.size) - np.repeat(np.cumsum(kept) - kept, kept)] = rels[chosen]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class NodePieceVocab:
    """The NodePiece vocabulary and tokenization settings.

    Attributes:
      anchors: int64 ``[A]`` anchor node ids (anchor ``i`` has token ``NUM_SPECIAL + i``).
      num_relations: relation types, inverse relations included when ``inverse`` (token ``NUM_SPECIAL + A + r``).
      anchors_per_node: ``k``.
      relations_per_node: ``m``.
      inverse: relation context and tokenization use ``graph.with_inverse()`` (incoming edges give ``r + R``).
      max_hops: BFS depth limit (``None``: unlimited).
      seed: relation sampling seed.
    """

    anchors: np.ndarray
    num_relations: int
    anchors_per_node: int
    relations_per_node: int
    inverse: bool = True
    max_hops: int | None = None
    seed: int = 0

    @classmethod
    def build(cls, graph: Graph, *, num_anchors: int, anchors_per_node: int, relations_per_node: int,
              strategy: str = "mix", fractions: dict[str, float] | None = None, inverse: bool = True,
              max_hops: int | None = None, seed: int = 0) -> "NodePieceVocab":
        """Selects anchors (:func:`vqjax.graph.select_anchors`) and fixes the settings.

        Raises:
          ValueError: bad strategy or fractions, ``num_anchors`` out of range, or ``anchors_per_node`` larger
            than ``num_anchors``.
        """
        if isinstance(anchors_per_node, bool) or not isinstance(anchors_per_node, (int, np.integer)) or not (
                0 < anchors_per_node <= num_anchors):
            raise ValueError(f"anchors_per_node (k) must be an int in [1, num_anchors={num_anchors}]; got "
                             f"{anchors_per_node!r}")
        anchors = select_anchors(graph, num_anchors, strategy=strategy, fractions=fractions, seed=seed)
        relations = graph.num_relations * (2 if inverse else 1)
        vocab = cls(anchors, relations, int(anchors_per_node), int(relations_per_node), inverse, max_hops, seed)
        relational_context(graph, vocab.relations_per_node)      # validates m
        return vocab

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.size)

    @property
    def size(self) -> int:
        """Number of distinct tokens: specials, anchors and relation types."""
        return NUM_SPECIAL + self.num_anchors + self.num_relations

    def anchor_token(self, index):
        return NUM_SPECIAL + np.asarray(index)

    def relation_token(self, relation):
        return NUM_SPECIAL + self.num_anchors + np.asarray(relation)

    def _graph(self, graph: Graph) -> Graph:
        expected = self.num_relations // 2 if self.inverse else self.num_relations
        if graph.num_relations != expected:
            raise ValueError(f"graph has {graph.num_relations} relation types; this vocabulary was built for "
                             f"{expected}")
        if self.anchors.max() >= graph.num_nodes:
            raise ValueError(f"graph has {graph.num_nodes} nodes but anchor node {int(self.anchors.max())} is "
                             f"in the vocabulary")
        return graph.with_inverse() if self.inverse else graph

    def tokenize(self, graph: Graph) -> NodeTokens:
        """Tokens of every node of ``graph`` (the graph the vocabulary was built on, or one that contains it)."""
        g = self._graph(graph)          # hop distances are undirected already: inverse edges only add relations
        anchor, dist = nearest_anchors(graph, self.anchors, self.anchors_per_node, max_hops=self.max_hops)
        rels = relational_context(g, self.relations_per_node, seed=self.seed)
        return NodeTokens(self._assemble(anchor, rels), dist)

    def _assemble(self, anchor: np.ndarray, rels: np.ndarray) -> np.ndarray:
        a = np.where(anchor >= 0, NUM_SPECIAL + anchor, NOTHING)
        r = np.where(rels >= 0, NUM_SPECIAL + self.num_anchors + rels, PAD)
        return np.concatenate([a, r], axis=1).astype(np.int32)

    def tokenize_new(self, graph: Graph, tokens: NodeTokens, edges: Iterable[tuple[int, int, int]]) -> NodeTokens:
        """Tokens of nodes that are not in ``graph``, from their edges to its nodes, without retraining.

        Args:
          graph: the graph ``tokens`` came from.
          tokens: ``self.tokenize(graph)``.
          edges: ``(new_node, relation, node)`` for an edge from new node ``new_node`` (0, 1, ... numbering the
            new nodes) to ``node`` of ``graph``, or ``(node, relation, -1 - new_node)`` for an edge into it.

        Returns:
          NodeTokens for new nodes ``0 .. max(new_node)``: anchors are the nearest among the neighbours' anchors
          one hop further (exact when the new nodes connect only to ``graph``), relations from the new edges.
        """
        e = np.asarray(list(edges), np.int64).reshape(-1, 3)
        if e.shape[0] == 0:
            raise ValueError("edges is empty: a new node needs at least one edge to the graph")
        incoming = e[:, 2] < 0
        new = np.where(incoming, -1 - e[:, 2], e[:, 0])
        old = np.where(incoming, e[:, 0], e[:, 2])
        rel = e[:, 1]
        base_r = self.num_relations // 2 if self.inverse else self.num_relations
        if new.min() < 0:
            raise ValueError(f"new node ids must be >= 0 (or -1 - id for an incoming edge); got {int(new.min())}")
        if old.min() < 0 or old.max() >= graph.num_nodes:
            raise ValueError(f"edges must connect to nodes of the graph in [0, {graph.num_nodes}); got "
                             f"[{int(old.min())}, {int(old.max())}]")
        if rel.min() < 0 or rel.max() >= base_r:
            raise ValueError(f"relation ids must be in [0, {base_r}); got [{int(rel.min())}, {int(rel.max())}]")
        count = int(new.max()) + 1
        k = self.anchors_per_node
        # candidate (distance, anchor) pairs from every neighbour's anchors, one hop further.
        nb_anchor = tokens.tokens[old, :k] - NUM_SPECIAL
        nb_dist = tokens.distances[old]
        valid = nb_dist >= 0
        cand_new = np.repeat(new, k)[valid.ravel()]
        cand_anchor = nb_anchor[valid]
        cand_dist = nb_dist[valid] + 1
        if self.max_hops is not None:
            near = cand_dist <= self.max_hops
            cand_new, cand_anchor, cand_dist = cand_new[near], cand_anchor[near], cand_dist[near]
        order = np.lexsort((cand_anchor, cand_dist, cand_new))
        cand_new, cand_anchor, cand_dist = cand_new[order], cand_anchor[order], cand_dist[order]
        # each (node, anchor) once, at its least distance: its first place in this (node, distance, anchor) order
        first = np.sort(np.unique(cand_new * self.num_anchors + cand_anchor, return_index=True)[1])
        cand_new, cand_anchor, cand_dist = cand_new[first], cand_anchor[first], cand_dist[first]
        rank = np.arange(cand_new.size) - np.searchsorted(cand_new, cand_new, side="left")
        keep = rank < k
        anchor = np.full((count, k), -1, np.int32)
        dist = np.full((count, k), -1, np.int32)
        anchor[cand_new[keep], rank[keep]] = cand_anchor[keep]
        dist[cand_new[keep], rank[keep]] = cand_dist[keep]
        out_rel = np.where(incoming, rel + base_r, rel) if self.inverse else rel[~incoming]
        out_nodes = new if self.inverse else new[~incoming]
        sub = Graph(out_nodes, out_rel, np.zeros_like(out_nodes), max(count, 1), self.num_relations)
        rels = relational_context(sub, self.relations_per_node, seed=self.seed)[:count]
        return NodeTokens(self._assemble(anchor, rels), dist)

    def save(self, path: str) -> None:
        """Writes the vocabulary as JSON."""
        with open(path, "w") as fh:
            json.dump({"format": "vqjax.nodepiece/1", "anchors": self.anchors.tolist(),
                       "num_relations": self.num_relations, "anchors_per_node": self.anchors_per_node,
                       "relations_per_node": self.relations_per_node, "inverse": self.inverse,
                       "max_hops": self.max_hops, "seed": self.seed}, fh)

    @classmethod
    def load(cls, path: str) -> "NodePieceVocab":
        """Reads a vocabulary written by :meth:`save`."""
        with open(path) as fh:
            d = json.load(fh)
        if d.get("format") != "vqjax.nodepiece/1":
            raise ValueError(f"{path!r} is not a vqjax NodePiece vocabulary (format {d.get('format')!r})")
        return cls(np.asarray(d["anchors"], np.int64), int(d["num_relations"]), int(d["anchors_per_node"]),
                   int(d["relations_per_node"]), bool(d["inverse"]), d["max_hops"], int(d["seed"]))
