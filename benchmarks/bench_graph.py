"""NodePiece tokenization at scale: a synthetic graph of 1M nodes and 10M edges, 1000 anchors.

Reports the time of each stage (anchor selection with PageRank, nearest anchors, relation context) and the peak
resident memory of the tokenization above the graph itself, in a child process of its own. Goal (issue 5): under
60 s and 4 GB on the 2-core CPU machine. For context the same child also times scipy's per-anchor breadth-first
search (``scipy.sparse.csgraph.shortest_path(unweighted=True)``) on a sample of anchors and extrapolates it to all
of them: the one-search-per-anchor approach that the multi-source bitset search replaces.

    python benchmarks/bench_graph.py [--nodes 1000000 --edges 10000000 --anchors 1000 --k 20 --m 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import peak_mb, rss_mb, spawn


def synthetic_graph(nodes: int, edges: int, relations: int, seed: int = 0):
    """Heads uniform, tails from a heavy-tailed (Zipf-like) popularity, so degrees range from 1 to ~1e5."""
    from vqjax.graph import Graph

    rng = np.random.default_rng(seed)
    heads = rng.integers(0, nodes, edges)
    popularity = rng.permutation(nodes)
    tails = popularity[np.minimum((rng.pareto(1.2, edges) * nodes / 50).astype(np.int64), nodes - 1)]
    rels = rng.integers(0, relations, edges)
    return Graph(heads, rels, tails, nodes, relations)


def child(args) -> dict:
    from vqjax.graph import NodePieceVocab, nearest_anchors, relational_context

    g = synthetic_graph(args.nodes, args.edges, args.relations)
    base = rss_mb()
    t = time.perf_counter()
    _ = g.neighbors                                   # the undirected CSR adjacency, built once and cached
    csr_s = time.perf_counter() - t
    out = {"nodes": args.nodes, "edges": args.edges, "anchors": args.anchors, "k": args.k, "m": args.m,
           "graph_mb": round(base), "csr_s": csr_s}
    t = time.perf_counter()
    vocab = NodePieceVocab.build(g, num_anchors=args.anchors, anchors_per_node=args.k, relations_per_node=args.m)
    out["anchor_selection_s"] = time.perf_counter() - t
    t = time.perf_counter()
    anchor, dist = nearest_anchors(g, vocab.anchors, args.k)
    out["nearest_anchors_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rels = relational_context(g.with_inverse(), args.m)
    out["relation_context_s"] = time.perf_counter() - t
    out["total_s"] = sum(out[k] for k in ("csr_s", "anchor_selection_s", "nearest_anchors_s",
                                          "relation_context_s"))
    out["peak_mb_above_graph"] = round(peak_mb() - base)
    out["peak_mb"] = round(peak_mb())
    out["max_hops"] = int(dist.max())
    out["nodes_with_k_anchors"] = float(np.mean(anchor[:, -1] >= 0))
    out["mean_relations"] = float(np.mean(np.sum(rels >= 0, axis=1)))

    if args.baseline_anchors:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import shortest_path

        indptr, indices = g.neighbors
        adj = csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(g.num_nodes, g.num_nodes))
        t = time.perf_counter()
        shortest_path(adj, directed=False, unweighted=True, indices=vocab.anchors[:args.baseline_anchors])
        per_anchor = (time.perf_counter() - t) / args.baseline_anchors
        out["scipy_bfs_per_anchor_s"] = per_anchor
        out["scipy_bfs_all_anchors_s_extrapolated"] = per_anchor * args.anchors
        out["scipy_dense_distances_gb"] = args.anchors * g.num_nodes * 8 / 2**30
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true")
    p.add_argument("--nodes", type=int, default=1_000_000)
    p.add_argument("--edges", type=int, default=10_000_000)
    p.add_argument("--relations", type=int, default=50)
    p.add_argument("--anchors", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--baseline-anchors", type=int, default=4, help="anchors timed for the scipy baseline (0: skip)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "json")]
    res = spawn(__file__, passed, timeout=1800)
    print(json.dumps(res, indent=2))
    if "error" not in res:
        print("\n| stage | seconds |\n| --- | --- |")
        for k in ("csr_s", "anchor_selection_s", "nearest_anchors_s", "relation_context_s", "total_s"):
            print(f"| {k[:-2].replace('_', ' ')} | {res[k]:.1f} |")
        print(f"\npeak memory {res['peak_mb']} MB ({res['peak_mb_above_graph']} MB above the {res['graph_mb']} MB "
              f"graph); goal: total under 60 s and peak under 4096 MB")
        if "scipy_bfs_per_anchor_s" in res:
            print(f"scipy per-anchor BFS: {res['scipy_bfs_per_anchor_s']:.2f} s per anchor, "
                  f"~{res['scipy_bfs_all_anchors_s_extrapolated']:.0f} s for all {args.anchors} anchors, and a dense "
                  f"{res['scipy_dense_distances_gb']:.1f} GB distance matrix")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
