"""NodePiece tokenization: exact nearest anchors against networkx, anchors, relation context, vocabulary,
unseen nodes, determinism, refused bad input."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vqjax.graph import (MASK, NOTHING, NUM_SPECIAL, PAD, Graph, NodePieceVocab, nearest_anchors, pagerank,
                         relational_context, select_anchors)


def _random_graph(seed, n, e, r=3):
    rng = np.random.default_rng(seed)
    t = np.stack([rng.integers(0, n, e), rng.integers(0, r, e), rng.integers(0, n, e)], 1)
    return Graph.from_triples(t, num_nodes=n, num_relations=r)


def _brute_force(g, anchors, k, max_hops=None):
    """Each node's k nearest anchors by (networkx hop distance, anchor index)."""
    nxg = nx.Graph()
    nxg.add_nodes_from(range(g.num_nodes))
    nxg.add_edges_from(zip(g.heads.tolist(), g.tails.tolist()))
    dist = {i: nx.single_source_shortest_path_length(nxg, int(a), cutoff=max_hops) for i, a in enumerate(anchors)}
    out_a = np.full((g.num_nodes, k), -1)
    out_d = np.full((g.num_nodes, k), -1)
    for v in range(g.num_nodes):
        found = sorted((dist[i][v], i) for i in range(len(anchors)) if v in dist[i])[:k]
        for j, (d, i) in enumerate(found):
            out_a[v, j], out_d[v, j] = i, d
    return out_a, out_d


@settings(max_examples=150)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), density=st.floats(0.3, 3.0),
       num_anchors=st.integers(1, 70), k=st.integers(1, 8), max_hops=st.sampled_from([None, 1, 2, 3]))
def test_nearest_anchors_equal_networkx_shortest_paths(seed, n, density, num_anchors, k, max_hops):
    g = _random_graph(seed, n, max(1, int(density * n)))
    num_anchors = min(num_anchors, n)
    anchors = np.random.default_rng(seed + 1).permutation(n)[:num_anchors]
    k = min(k, num_anchors)
    got_a, got_d = nearest_anchors(g, anchors, k, max_hops=max_hops)
    want_a, want_d = _brute_force(g, anchors, k, max_hops)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_a, want_a)


def test_nearest_anchors_over_many_bitset_words():
    """More than 64 anchors (several bitset words)."""
    g = _random_graph(7, 400, 1200)
    anchors = np.random.default_rng(0).permutation(400)[:150]
    got = nearest_anchors(g, anchors, 12)
    want = _brute_force(g, anchors, 12)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_unreachable_anchors_give_nothing():
    g = Graph.from_triples([[0, 0, 1], [1, 0, 2], [3, 0, 4]], num_nodes=6)     # node 5 isolated
    vocab = NodePieceVocab(np.array([0, 3]), 2, 2, 1)
    t = vocab.tokenize(g)
    np.testing.assert_array_equal(t.tokens[2, :2], [NUM_SPECIAL + 0, NOTHING])
    np.testing.assert_array_equal(t.distances[2], [2, -1])
    np.testing.assert_array_equal(t.tokens[5, :2], [NOTHING, NOTHING])
    assert t.tokens[5, 2] == PAD


def test_pagerank_matches_networkx():
    g = _random_graph(3, 50, 120)
    nxg = nx.Graph()
    nxg.add_nodes_from(range(50))
    nxg.add_edges_from((h, t) for h, t in zip(g.heads.tolist(), g.tails.tolist()) if h != t)
    want = nx.pagerank(nxg, alpha=0.85, tol=1e-12)
    # networkx's Graph collapses parallel edges: compare on the same simple graph
    simple = np.array(sorted({(min(h, t), 0, max(h, t)) for h, t in nxg.edges()}))
    got = pagerank(Graph.from_triples(simple, num_nodes=50), tol=1e-13)
    np.testing.assert_allclose(got, [want[i] for i in range(50)], atol=1e-8)
    p = np.zeros(50)
    p[4] = 1.0
    personal = pagerank(Graph.from_triples(simple, num_nodes=50), personalization=p, tol=1e-13)
    want_p = nx.pagerank(nxg, alpha=0.85, personalization={i: float(p[i]) for i in range(50)}, tol=1e-12)
    np.testing.assert_allclose(personal, [want_p[i] for i in range(50)], atol=1e-8)


def test_anchor_strategies():
    g = _random_graph(5, 200, 600)
    deg = g.degrees()
    top = select_anchors(g, 10, strategy="degree")
    assert np.all(deg[top][:-1] >= deg[top][1:]) and deg[top].min() >= np.sort(deg)[-10]
    pr = pagerank(g)
    assert set(select_anchors(g, 10, strategy="pagerank")) == set(np.argsort(-pr, kind="stable")[:10])
    r1, r2 = select_anchors(g, 10, strategy="random", seed=1), select_anchors(g, 10, strategy="random", seed=2)
    assert not np.array_equal(r1, r2)
    np.testing.assert_array_equal(r1, select_anchors(g, 10, strategy="random", seed=1))
    mix = select_anchors(g, 20, fractions={"degree": 0.5, "pagerank": 0.25, "random": 0.25}, seed=0)
    assert mix.size == 20 and np.unique(mix).size == 20
    np.testing.assert_array_equal(mix[:10], top)


def test_relational_context_samples_distinct_types_deterministically():
    t = [[0, r, 1] for r in range(6)] + [[0, 2, 3], [1, 4, 0]]
    g = Graph.from_triples(t, num_nodes=5, num_relations=6)
    ctx = relational_context(g, 3, seed=0)
    assert set(ctx[0]) <= set(range(6)) and len(set(ctx[0])) == 3 and list(ctx[0]) == sorted(ctx[0])
    np.testing.assert_array_equal(ctx[1], [4, -1, -1])
    np.testing.assert_array_equal(ctx[2], [-1, -1, -1])
    np.testing.assert_array_equal(ctx, relational_context(g, 3, seed=0))
    draws = {tuple(relational_context(g, 3, seed=s)[0]) for s in range(20)}
    assert len(draws) > 3                                                   # it samples
    freq = np.bincount(np.concatenate([relational_context(g, 3, seed=s)[0] for s in range(3000)]), minlength=6)
    np.testing.assert_allclose(freq / 3000, 0.5, atol=0.04)                  # each type in half the draws
    np.testing.assert_array_equal(relational_context(g, 8)[0], [0, 1, 2, 3, 4, 5, -1, -1])


def test_vocab_tokenize_save_load_and_determinism(tmp_path):
    g = _random_graph(11, 300, 900, r=5)
    vocab = NodePieceVocab.build(g, num_anchors=30, anchors_per_node=5, relations_per_node=4, seed=3)
    t = vocab.tokenize(g)
    assert t.tokens.shape == (300, 9) and t.tokens.dtype == np.int32 and t.distances.shape == (300, 5)
    assert vocab.size == NUM_SPECIAL + 30 + 10 and t.tokens.max() < vocab.size and t.tokens.min() >= 0
    assert MASK not in t.tokens
    anchor_nodes = vocab.anchors
    np.testing.assert_array_equal(t.tokens[anchor_nodes, 0], NUM_SPECIAL + np.arange(30))   # itself at hop 0
    assert np.all(t.distances[anchor_nodes, 0] == 0)
    vocab.save(str(tmp_path / "v.json"))
    again = NodePieceVocab.load(str(tmp_path / "v.json"))
    t2 = again.tokenize(g)
    np.testing.assert_array_equal(t2.tokens, t.tokens)
    np.testing.assert_array_equal(t2.distances, t.distances)
    t3 = NodePieceVocab.build(g, num_anchors=30, anchors_per_node=5, relations_per_node=4, seed=3).tokenize(g)
    np.testing.assert_array_equal(t3.tokens, t.tokens)


@pytest.mark.parametrize("inverse,max_hops", [(True, None), (False, 2)])
def test_unseen_nodes_are_tokenized_like_members_of_the_grown_graph(inverse, max_hops):
    g = _random_graph(13, 120, 300, r=4)
    vocab = NodePieceVocab.build(g, num_anchors=15, anchors_per_node=6, relations_per_node=8, inverse=inverse,
                                 max_hops=max_hops, seed=0)
    t = vocab.tokenize(g)
    edges = [(0, 1, 5), (0, 3, 77), (3, 2, -1), (1, 0, 9), (1, 2, 10)]      # two new nodes
    new = vocab.tokenize_new(g, t, edges)
    grown = np.concatenate([g.triples, [[120, 1, 5], [120, 3, 77], [3, 2, 120], [121, 0, 9], [121, 2, 10]]])
    full = vocab.tokenize(Graph.from_triples(grown, num_nodes=122, num_relations=4))
    np.testing.assert_array_equal(new.tokens, full.tokens[120:])
    np.testing.assert_array_equal(new.distances, full.distances[120:])


@pytest.mark.parametrize("triples,kwargs,error,match", [
    ([[0, 0, 1], [1, -1, 2]], {}, ValueError, "relation id -1"),
    ([[0, 0, 1], [-3, 0, 2]], {}, ValueError, "node id -3"),
    ([[0, 0, 1], [1, 5, 2]], dict(num_relations=3), ValueError, r"< 3 \(the number of relations\); got relation id 5"),
    ([[0, 0, 1], [1, 0, 9]], dict(num_nodes=5), ValueError, r"< 5 \(the number of nodes\); got node id 9"),
    (np.zeros((0, 3), int), {}, ValueError, "triples is empty"),
    ([[0.0, 0, 1]], {}, TypeError, "integer array"),
    ([[0, 1]], {}, ValueError, r"shape \[E, 3\]"),
])
def test_bad_graphs_are_refused(triples, kwargs, error, match):
    with pytest.raises(error, match=match):
        Graph.from_triples(np.asarray(triples), **kwargs)


def test_bad_settings_are_refused():
    g = _random_graph(0, 30, 60)
    with pytest.raises(ValueError, match=r"anchors_per_node \(k\) must be an int in \[1, num_anchors=5\]; got 6"):
        NodePieceVocab.build(g, num_anchors=5, anchors_per_node=6, relations_per_node=2)
    with pytest.raises(ValueError, match=r"k \(anchors per node\) must be an int in \[1, number of anchors=3\]"):
        nearest_anchors(g, np.arange(3), 4)
    with pytest.raises(ValueError, match="sum to 1"):
        select_anchors(g, 5, fractions={"degree": 0.5, "random": 0.2})
    with pytest.raises(ValueError, match="fractions keys"):
        select_anchors(g, 5, fractions={"degree": 0.5, "betweenness": 0.5})
    with pytest.raises(ValueError, match="strategy must be one of"):
        select_anchors(g, 5, strategy="closeness")
    with pytest.raises(ValueError, match=r"num_anchors must be an int in \[1, num_nodes=30\]; got 31"):
        select_anchors(g, 31)
    vocab = NodePieceVocab.build(g, num_anchors=5, anchors_per_node=2, relations_per_node=2)
    t = vocab.tokenize(g)
    with pytest.raises(ValueError, match=r"nodes of the graph in \[0, 30\)"):
        vocab.tokenize_new(g, t, [(0, 0, 30)])
    with pytest.raises(ValueError, match=r"relation ids must be in \[0, 3\)"):
        vocab.tokenize_new(g, t, [(0, 3, 1)])
    with pytest.raises(ValueError, match="7 relation types"):
        vocab.tokenize(_random_graph(0, 30, 60, r=7))
