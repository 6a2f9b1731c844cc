"""Link-prediction scorers and the NodePiece encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.graph import CLS, NOTHING, PAD
from vqjax.graph.models import LinkPredictor, NodePieceEncoder, score, score_all


def test_distmult_and_rotate_match_their_formulas():
    rng = np.random.default_rng(0)
    h, t, r = rng.normal(size=(5, 8)), rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    np.testing.assert_allclose(score("distmult", h, r, t), np.sum(h * r * t, -1), rtol=1e-5)
    phase = rng.uniform(0, 2 * np.pi, (5, 4))
    hc, tc = h[:, :4] + 1j * h[:, 4:], t[:, :4] + 1j * t[:, 4:]
    want = 9.0 - np.sum(np.abs(hc * np.exp(1j * phase) - tc), -1)
    np.testing.assert_allclose(score("rotate", h, phase, t, gamma=9.0), want, rtol=1e-5)
    with pytest.raises(ValueError, match="scorer must be one of"):
        score("transe", h, r, t)


@pytest.mark.parametrize("scorer,rdim", [("rotate", 4), ("distmult", 8)])
def test_score_all_equals_scoring_each_entity(scorer, rdim):
    rng = np.random.default_rng(1)
    h, r, ents = rng.normal(size=(3, 8)), rng.normal(size=(3, rdim)), rng.normal(size=(11, 8))
    got = score_all(scorer, jnp.asarray(h), jnp.asarray(r), jnp.asarray(ents), chunk=4)
    want = np.stack([[score(scorer, h[b], r[b], ents[e]) for e in range(11)] for b in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_encoder_shapes_and_padding_is_ignored_by_attention(kind):
    enc = NodePieceEncoder(vocab_size=20, dim=16, kind=kind, num_layers=1, num_heads=2)
    tokens = jnp.array([[5, 6, NOTHING, 12, PAD], [7, 5, 6, 13, 14]])
    dist = jnp.array([[0, 2, -1], [1, 1, 3]])
    params = jax.jit(enc.init)(jax.random.key(0), tokens, dist)
    out = enc.apply(params, tokens, dist)
    assert out.shape == (2, 16) and out.dtype == jnp.float32
    moved = jax.tree.map(lambda x: x, params)
    table = moved["params"]["tokens"]["embedding"]
    moved["params"]["tokens"]["embedding"] = table.at[PAD].add(3.0)
    changed = enc.apply(moved, tokens, dist)
    if kind == "transformer":          # PAD keys are masked: the pooled CLS output does not see them
        np.testing.assert_allclose(changed, out, atol=1e-5)
    np.testing.assert_allclose(changed[1], out[1], atol=1e-5)              # no PAD in the second node
    assert CLS not in np.asarray(tokens)


def test_token_encoders_do_not_grow_with_the_number_of_entities():
    def count(n, encoder):
        m = LinkPredictor(n, 5, 16, "rotate", encoder, vocab_size=30)
        one = jnp.zeros((1,), jnp.int32)
        tok, dist = jnp.zeros((n, 6), jnp.int32), jnp.zeros((n, 4), jnp.int32)
        p = jax.eval_shape(lambda k: m.init(k, one, one, one, tok, dist), jax.random.key(0))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(p))

    assert count(100, "mlp") == count(10_000, "mlp")
    assert count(10_000, "embedding") - count(100, "embedding") == 9_900 * 16
    with pytest.raises(ValueError, match="dim must be even for RotatE"):
        LinkPredictor(10, 2, 15, "rotate", "embedding").init(jax.random.key(0), jnp.zeros(1, int), jnp.zeros(1, int),
                                                            jnp.zeros(1, int))
