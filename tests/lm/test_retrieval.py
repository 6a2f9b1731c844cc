"""The ID trie, trie-constrained beam search (against exhaustive scoring) and SASRec."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.lm.model import DecoderLM
from vqjax.lm import retrieval as r
from vqjax.models.retrieval import SASRec

SIZES = (3, 4, 2)


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(0)
    every = np.asarray(list(itertools.product(*[range(k) for k in SIZES])))
    return every[rng.permutation(len(every))[:11]]                  # 11 of the 24 tuples are items


def test_trie_children_match_brute_force(catalogue):
    trie = r.build_trie(catalogue, SIZES)
    prefixes = [()]
    for level, k in enumerate(SIZES):
        nodes, node_of = [], {}
        for p in sorted({tuple(row[:level]) for row in catalogue}):
            node_of[p] = len(node_of)
        for p, node in node_of.items():
            valid, child = r.trie_children(trie, level, k, jnp.asarray([node], jnp.int32))
            want = {int(row[level]) for row in catalogue if tuple(row[:level]) == p}
            assert set(np.flatnonzero(np.asarray(valid[0])).tolist()) == want
            if level == len(SIZES) - 1:                               # leaves are the items
                for c in want:
                    item = int(child[0, c])
                    assert tuple(catalogue[item]) == p + (c,)
    with pytest.raises(ValueError, match="share a tuple"):
        r.build_trie(np.concatenate([catalogue, catalogue[:1]]), SIZES)
    with pytest.raises(ValueError, match=r"\[0, K_t\)"):
        r.build_trie(catalogue + 5, SIZES)


def _exhaustive(model, params, tokens, catalogue):
    """Every item's log-probability after each history, each level renormalised over the valid codes."""
    offsets = r.token_offsets(SIZES)
    out = np.zeros((tokens.shape[0], len(catalogue)))

    @jax.jit
    def forward(seq):                                     # the whole sequence at once, no cache
        seg = (seq > 0).astype(jnp.int32)
        return model.apply({"params": params}, seq, jnp.maximum(jnp.cumsum(seg, 1) - 1, 0), seg)[0]

    for i, row in enumerate(catalogue):
        tup = np.asarray([offsets[t] + c for t, c in enumerate(row)], np.int32)
        logits = forward(jnp.asarray(np.concatenate([tokens, np.tile(tup[:-1], (tokens.shape[0], 1))], axis=1)))
        total = 0.0
        for t in range(len(SIZES)):
            lg = np.asarray(logits[:, tokens.shape[1] - 1 + t, offsets[t]:offsets[t] + SIZES[t]])
            valid = sorted({int(x[t]) for x in catalogue if tuple(x[:t]) == tuple(row[:t])})
            sub = lg[:, valid]
            lse = np.log(np.sum(np.exp(sub - sub.max(1, keepdims=True)), 1)) + sub.max(1)
            total = total + lg[:, row[t]] - lse
        out[:, i] = total
    return out


def test_beam_search_is_exhaustive_search_when_the_beam_holds_every_item(catalogue):
    model = DecoderLM(vocab_size=1 + sum(SIZES), dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    tokens = r.item_tokens(catalogue, np.asarray([[3, 1, 4], [-1, 2, 7], [-1, -1, 10]]), SIZES)
    tokens = jnp.asarray(tokens)
    params = jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens)["params"]
    trie = r.build_trie(catalogue, SIZES)
    items, scores = r.beam_search(model, params, trie, jnp.asarray(tokens), SIZES, 16)
    items, scores = np.asarray(items), np.asarray(scores)
    want = _exhaustive(model, params, tokens, catalogue)
    for b in range(tokens.shape[0]):
        order = np.argsort(-want[b])
        np.testing.assert_array_equal(items[b, :11], order)                   # every item, best first
        np.testing.assert_allclose(scores[b, :11], want[b, order], rtol=1e-4, atol=1e-4)
        assert (items[b, 11:] == -1).all() and np.isneginf(scores[b, 11:]).all()   # only 11 items exist
    small, _ = r.beam_search(model, params, trie, jnp.asarray(tokens), SIZES, 4)
    assert set(np.asarray(small).ravel().tolist()) <= set(range(11))         # a narrow beam: still items only


def test_item_tokens_layout():
    codes = np.asarray([[0, 1, 1], [2, 3, 0]])
    tok = r.item_tokens(codes, np.asarray([[-1, 1, 0]]), SIZES)
    np.testing.assert_array_equal(tok, [[0, 0, 0, 1 + 2, 4 + 3, 8 + 0, 1 + 0, 4 + 1, 8 + 1]])


def test_sasrec_is_causal_and_scores_every_item():
    model = SASRec(num_items=20, dim=8, num_layers=2, num_heads=2, max_len=6, dropout=0.0)
    items = jnp.asarray([[-1, -1, 3, 4, 5, 6]])
    params = jax.jit(model.init)(jax.random.key(0), items)["params"]
    apply = jax.jit(model.apply)
    states = apply({"params": params}, items)
    later = apply({"params": params}, items.at[0, 5].set(11))
    np.testing.assert_allclose(states[0, :5], later[0, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(states[0, 5], later[0, 5])
    assert model.apply({"params": params}, states, method=model.scores).shape == (1, 6, 20)
    with pytest.raises(ValueError, match="max_len=6"):
        model.apply({"params": params}, jnp.zeros((1, 7), jnp.int32))


def test_new_items_join_after_the_generated_item_of_their_prefix():
    codes = np.asarray([[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 2]])
    new = np.asarray([False, True, False, False, True, True])         # items 1, 4 and 5 were never trained on
    items = np.asarray([[2, 0, 3, -1], [3, 2, -1, -1]])
    np.testing.assert_array_equal(r.with_new_items(items, codes, new, k=4, max_new=0), items)
    np.testing.assert_array_equal(r.with_new_items(items, codes, new, k=4, max_new=2), [[2, 4, 0, 1], [3, 2, 4, -1]])
    np.testing.assert_array_equal(r.with_new_items(items, codes, new, k=5, max_new=1), [[2, 4, 0, 3, -1],
                                                                                        [3, 2, 4, -1, -1]])
    np.testing.assert_array_equal(r.with_new_items(items[:1], codes, new, k=4, max_new=2, prefix_len=1),
                                  [[2, 4, 0, 1]])
    np.testing.assert_array_equal(r.with_new_items(np.asarray([[3, 0]]), codes, new, k=3, max_new=3, prefix_len=1),
                                  [[3, 1, 5]])                     # item 3's first code 0: new items 1 and 5
    with pytest.raises(ValueError, match="prefix_len"):
        r.with_new_items(items, codes, new, k=4, max_new=1, prefix_len=4)
