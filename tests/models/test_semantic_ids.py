"""Item features, the RQ-VAE and collision handling of semantic IDs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import model_from_spec
from vqjax.models import semantic_ids as s


def test_disambiguate_numbers_items_sharing_a_tuple_in_order():
    codes = np.asarray([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    out = s.disambiguate(codes, 4)
    np.testing.assert_array_equal(out[:, :2], codes)
    np.testing.assert_array_equal(out[:, 2], [0, 0, 1, 2, 0])
    assert s.collision_stats(out)["collision_rate"] == 0.0
    assert s.collision_stats(codes) == {"collision_rate": 0.4, "colliding_items": 0.6, "max_items_per_tuple": 3}
    with pytest.raises(ValueError, match=r"3 items share the tuple \[1, 2\], more than the 2 codes"):
        s.disambiguate(codes, 2)


def test_sinkhorn_distinct_gives_distinct_codes_and_the_optimum_when_it_is_clear():
    rng = np.random.default_rng(0)
    cost = rng.uniform(1.0, 2.0, (5, 8))
    cost[np.arange(5), [3, 1, 7, 0, 5]] = 0.0                    # a clear best one-to-one matching
    np.testing.assert_array_equal(s.sinkhorn_distinct(cost), [3, 1, 7, 0, 5])
    crowded = np.tile(rng.uniform(0, 1, 8), (6, 1))               # everyone prefers the same codes
    got = s.sinkhorn_distinct(crowded)
    assert len(set(got.tolist())) == 6
    assert set(got.tolist()) == set(np.argsort(crowded[0])[:6].tolist())
    with pytest.raises(ValueError, match="cannot take distinct codes"):
        s.sinkhorn_distinct(np.zeros((9, 8)))


def test_balanced_last_level_only_moves_colliding_groups():
    codes = np.asarray([[0, 1, 2], [0, 1, 2], [0, 1, 3], [1, 0, 0], [2, 2, 2]])
    costs = np.random.default_rng(1).uniform(size=(5, 4))
    costs[np.arange(5), codes[:, -1]] = 0.0
    out = s.balanced_last_level(codes, costs)
    assert s.collision_stats(out)["collision_rate"] == 0.0
    np.testing.assert_array_equal(out[3:], codes[3:])             # groups without a collision keep theirs
    np.testing.assert_array_equal(out[:, :2], codes[:, :2])
    with pytest.raises(ValueError, match="more than the 2 codes of the last level"):
        s.balanced_last_level(np.zeros((3, 2), int), np.zeros((3, 2)))


@pytest.mark.parametrize("mode", ["extra_level", "balanced"])
def test_assign_new_keeps_existing_ids_and_refuses_full_groups(mode):
    prefixes = np.asarray([[0, 1], [0, 1], [1, 1]])
    if mode == "extra_level":
        existing = s.disambiguate(prefixes, 3)
        with pytest.raises(ValueError, match="no free ID"):
            s.assign_new(existing, np.asarray([[0, 1], [0, 1]]), mode, size=3)
        new = s.assign_new(existing, np.asarray([[0, 1], [2, 0]]), mode, size=3)
        np.testing.assert_array_equal(new, [[0, 1, 2], [2, 0, 0]])
    else:
        existing = np.asarray([[0, 0], [0, 1], [1, 1]])
        costs = np.asarray([[0.0, 0.1, 0.5, 0.7], [0.0, 0.1, 0.5, 0.7], [0.0, 0.1, 0.5, 0.7]])
        new = s.assign_new(existing, np.asarray([[0, 0], [0, 0], [1, 0]]), mode, costs=costs)
        np.testing.assert_array_equal(new, [[0, 2], [0, 3], [1, 0]])   # 0, 1 taken in group 0; 1 in group 1
        with pytest.raises(ValueError, match="no free ID"):
            s.assign_new(existing, np.asarray([[0, 0], [0, 0]]), mode, costs=np.zeros((2, 2)))
    assert s.collision_stats(np.concatenate([existing, new]))["collision_rate"] == 0.0


def test_featurizer_content_and_collaborative_parts_round_trip(tmp_path):
    docs = [s.item_terms(t, y, g) for t, y, g in [("Star Wars", 1977, ["Sci-Fi", "Action"]),
                                                   ("Star Trek", 1979, ["Sci-Fi"]),
                                                   ("Love Story", 1970, ["Romance"]),
                                                   ("Ghost Story", 0, ["Horror"])]]
    assert "y:1977" in docs[0] and "d:1970" in docs[0] and not any(t.startswith("y:") for t in docs[3])
    cf = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    f = s.ItemFeaturizer.fit("both", docs, content_dim=3, cf=cf)
    x = f.features(docs, cf)
    assert x.shape == (4, 3 + 5) and f.dim == 8
    np.testing.assert_allclose(np.mean(x ** 2, axis=1), 1.0, rtol=1e-5)
    c = f.content_vectors(docs)
    assert c[0] @ c[1] > c[0] @ c[2]                                    # Star Wars is nearer Star Trek
    cold = f.features(docs[:1])                                         # no CF row: predicted from content
    assert cold.shape == (1, 8) and np.all(np.isfinite(cold))
    f.save(str(tmp_path))
    g = s.ItemFeaturizer.load(str(tmp_path))
    np.testing.assert_array_equal(g.features(docs, cf), x)
    with pytest.raises(ValueError, match="kind must be one of"):
        s.ItemFeaturizer.fit("text", docs, content_dim=3)
    with pytest.raises(ValueError, match="needs cf vectors"):
        s.ItemFeaturizer.fit("collaborative", docs, content_dim=3)


def test_bpr_ranks_held_in_items_above_others_and_is_deterministic():
    rng = np.random.default_rng(0)
    seqs = [rng.choice(10, 5, replace=False) + 10 * (u % 2) for u in range(30)]       # two taste groups
    vec, seen = s.fit_bpr(seqs, 25, dim=8, steps=300, batch_size=256, learning_rate=0.05, seed=3)
    assert seen[:20].all() and not seen[20:].any()
    sim = vec[:20] @ vec[:20].T
    within = np.mean([sim[i, j] for i in range(10) for j in range(10) if i != j])
    across = np.mean(sim[:10, 10:20])
    assert within > across
    again, _ = s.fit_bpr(seqs, 25, dim=8, steps=300, batch_size=256, learning_rate=0.05, seed=3)
    np.testing.assert_array_equal(vec, again)


def test_rqvae_codes_decode_to_the_quantized_reconstruction():
    model = model_from_spec({"name": "rqvae", "kwargs": {
        "input_dim": 6, "hidden": [16], "latent_dim": 4, "quantizer": "rvq",
        "quantizer_kwargs": {"num_levels": 3, "codebook_size": 5}}})
    x = jax.random.normal(jax.random.key(0), (7, 6))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    recon, q = jax.jit(model.apply)(variables, x)
    codes = jax.jit(lambda v, z: model.apply(v, z, method=model.encode))(variables, x)
    assert codes.shape == (7, 3) and codes.dtype == jnp.int32
    np.testing.assert_array_equal(codes, q.codes)
    decoded = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))(variables, codes)
    np.testing.assert_allclose(decoded, recon, rtol=1e-5, atol=1e-6)
    costs = jax.jit(lambda v, z: model.apply(v, z, method=model.last_level_costs))(variables, x)
    np.testing.assert_array_equal(np.argmin(costs, axis=1), codes[:, -1])
    with pytest.raises(ValueError, match="features must have width 6"):
        model.apply(variables, x[:, :5], method=model.encode)
    with pytest.raises(ValueError, match="code tuple per item"):
        model_from_spec({"name": "rqvae", "kwargs": {"input_dim": 6, "hidden": [8], "latent_dim": 4,
                                                     "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 4}}})


def test_random_ids_are_deterministic_per_seed():
    a, b = s.random_ids(50, [4, 8], 0), s.random_ids(50, [4, 8], 0)
    np.testing.assert_array_equal(a, b)
    assert a[:, 0].max() < 4 and a[:, 1].max() < 8 and not np.array_equal(a, s.random_ids(50, [4, 8], 1))


def test_genre_coherence_by_hand():
    from vqjax.train.tasks.semantic_ids import genre_coherence

    codes = np.asarray([[0, 0], [0, 1], [1, 0], [1, 1]])
    genres = [("A",), ("A", "B"), ("C",), ("D",)]
    assert genre_coherence(codes, genres, 1) == pytest.approx((0.5 + 0.0) / 2)     # pairs (0, 1) and (2, 3)
    assert genre_coherence(codes, genres, 2) == 0.0                                  # no pair shares both codes
    assert genre_coherence(codes, genres, 0) == pytest.approx(0.5 / 6)               # one of six pairs overlaps
