"""Codebook state: EMA update rule, gradient accumulation, k-means, dead-code replacement, SimVQ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import codebook as cbk, kmeans as km
from vqjax import search
import vqjax


def _setup(n=300, k=12, d=5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)).astype(np.float32)
    cb = rng.normal(size=(k, d)).astype(np.float32)
    codes = np.asarray(search.nearest_code(jnp.asarray(z), jnp.asarray(cb)).codes)
    return z, cb, codes


def test_code_statistics_match_numpy():
    z, cb, codes = _setup()
    stats = jax.jit(lambda z, c: cbk.code_statistics(z, c, 12))(z, codes)
    np.testing.assert_allclose(stats.counts, np.bincount(codes, minlength=12))
    expected = np.stack([z[codes == k].sum(0) if np.any(codes == k) else np.zeros(5) for k in range(12)])
    np.testing.assert_allclose(stats.sums, expected, rtol=1e-5, atol=1e-5)


def test_ema_update_follows_the_rule():
    z, cb, codes = _setup()
    decay, eps = 0.9, 1e-5
    state = cbk.ema_init(jnp.asarray(cb))
    new = jax.jit(lambda s, z, c: cbk.ema_update(s, z, c, decay=decay, eps=eps))(state, z, codes)
    counts = np.bincount(codes, minlength=12).astype(np.float64)
    sums = np.stack([z[codes == k].sum(0) for k in range(12)])
    cs = decay * 1.0 + (1 - decay) * counts
    es = decay * cb + (1 - decay) * sums
    smoothed = (cs + eps) / (cs.sum() + 12 * eps) * cs.sum()
    np.testing.assert_allclose(new.cluster_size, cs, rtol=1e-6)
    np.testing.assert_allclose(new.embed_sum, es, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.codebook, es / smoothed[:, None], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new.pending.counts, 0.0)


def test_ema_gradient_accumulation_equals_one_big_batch():
    z, cb, codes = _setup(400)
    state = cbk.ema_init(jnp.asarray(cb))
    big = cbk.ema_update(state, z, codes, decay=0.95)
    acc = state
    for i, part in enumerate(np.split(np.arange(400), 4)):
        acc = jax.jit(lambda s, z, c, a: cbk.ema_update(s, z, c, decay=0.95, apply=a))(
            acc, z[part], codes[part], jnp.asarray(i == 3))
        if i < 3:
            np.testing.assert_array_equal(acc.codebook, state.codebook)   # held until the chosen step
    for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(big)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ema_refuses_bad_arguments():
    z, cb, codes = _setup()
    state = cbk.ema_init(jnp.asarray(cb))
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\); got 1.5"):
        cbk.ema_update(state, z, codes, decay=1.5)
    with pytest.raises(ValueError, match=r"codes must have shape z.shape\[:-1\] = \(300,\); got \(299,\)"):
        cbk.ema_update(state, z, codes[:-1])
    with pytest.raises(ValueError, match="last dimension 5"):
        cbk.ema_update(state, z[:, :4], codes)


def test_sample_rows_follows_weights():
    x = jnp.arange(4, dtype=jnp.float32)[:, None]
    w = jnp.array([0.0, 1.0, 0.0, 3.0])
    rows = cbk.sample_rows(jax.random.key(0), x, 20000, w)[:, 0]
    freq = np.bincount(np.asarray(rows, np.int64), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0, 0.25, 0, 0.75], atol=0.02)
    uniform = cbk.sample_rows(jax.random.key(1), x, 20000, jnp.zeros(4))[:, 0]   # all-zero weights: uniform
    np.testing.assert_allclose(np.bincount(np.asarray(uniform, np.int64), minlength=4) / 20000, 0.25, atol=0.02)


def test_replace_dead_codes_only_touches_dead_ones():
    z, cb, _ = _setup()
    usage = jnp.array([5.0, 0.1, 3.0, 0.0] + [2.0] * 8)
    new, dead = cbk.replace_dead_codes(jax.random.key(0), jnp.asarray(cb), usage, jnp.asarray(z), threshold=1.0)
    np.testing.assert_array_equal(dead, np.asarray(usage) < 1.0)
    np.testing.assert_array_equal(np.asarray(new)[~np.asarray(dead)], cb[~np.asarray(dead)])
    for row in np.asarray(new)[np.asarray(dead)]:                    # re-seeded from batch vectors
        assert np.any(np.all(np.isclose(z, row), axis=1))


def test_kmeans_plusplus_picks_distinct_data_points():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(500, 3)), jnp.float32)
    centers = km.kmeans_plusplus(jax.random.key(0), x, 20)
    assert len({tuple(np.round(c, 6)) for c in np.asarray(centers)}) == 20
    for c in np.asarray(centers):
        assert np.any(np.all(np.isclose(np.asarray(x), c), axis=1))


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(6, 4)) * 20
    x = (means[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 4))).astype(np.float32)
    res = jax.jit(lambda k, x: km.kmeans(k, x, 6, iters=20, chunk_size=4))(jax.random.key(0), x)
    assert float(res.inertia) < 4 * 1.3          # per-point squared distance ≈ D = 4 at the true centers
    matched = np.min(((np.asarray(res.centers)[:, None] - means[None]) ** 2).sum(-1), axis=0)
    assert np.all(matched < 1.0)


def test_kmeans_is_lloyd():
    """One iteration from given centers equals the numpy Lloyd step (empty clusters keep their place)."""
    z, cb, codes = _setup(200, 8)
    res = km.kmeans(jax.random.key(0), jnp.asarray(z), 8, iters=1, init=jnp.asarray(cb))
    expected = np.stack([z[codes == k].mean(0) if np.any(codes == k) else cb[k] for k in range(8)])
    np.testing.assert_allclose(res.centers, expected, rtol=1e-5, atol=1e-5)


def test_simvq_codebook_gradient_reaches_only_projection():
    basis, proj = cbk.simvq_init(jax.random.key(0), 32, 6)
    np.testing.assert_array_equal(cbk.simvq_codebook(basis, proj), basis)     # identity start
    w = jax.random.normal(jax.random.key(1), (32, 6))
    gb, gp = jax.grad(lambda b, p: jnp.sum(w * cbk.simvq_codebook(b, p)), argnums=(0, 1))(basis, proj)
    np.testing.assert_array_equal(gb, 0.0)
    np.testing.assert_allclose(gp, basis.T @ w, rtol=1e-5, atol=1e-6)     # d(B W)/dW = Bᵀ g


def test_usage_update_is_an_ema_of_counts():
    usage = jnp.array([1.0, 0.0, 2.0])
    new = cbk.usage_update(usage, jnp.array([0, 0, 2, 2, 2]), decay=0.5)
    np.testing.assert_allclose(new, [0.5 + 1.0, 0.0, 1.0 + 1.5])


def test_subsample_draws_distinct_rows_uniformly():
    x = jnp.arange(1000, dtype=jnp.float32)[:, None]
    rows = np.asarray(km.subsample(jax.random.key(0), x, 300))[:, 0]
    assert len(set(rows.tolist())) == 300
    assert not np.all(np.diff(rows) > 0)                  # random order, not the input order
    hits = np.zeros(1000)
    for seed in range(40):
        hits[np.asarray(km.subsample(jax.random.key(seed), x, 500))[:, 0].astype(int)] += 1
    assert 3 < hits.min() and hits.max() < 37             # each row drawn about 20 times of 40 (sd 3.2)
    assert 2.5 < hits.std() < 4.0
    assert km.subsample(jax.random.key(0), x, None) is x


def test_progressive_kmeans_with_one_step_is_lloyd_from_random_rows():
    """Lloyd is invariant to the centring and rotation, so one dimension step equals Lloyd on x itself from the
    same random rows; with several steps the early ones see only the leading principal components."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(600, 6)) * np.arange(1, 7), jnp.float32)
    key = jax.random.key(3)
    zero = km.progressive_kmeans(key, x, 16, iters=0, dim_steps=1)         # the seeds: 16 distinct rows of x
    dist = np.min(np.sum((np.asarray(zero)[:, None] - np.asarray(x)[None]) ** 2, -1), axis=1)
    np.testing.assert_allclose(dist, 0.0, atol=1e-6)
    assert len({tuple(r) for r in np.asarray(zero).round(3)}) == 16
    start = zero
    one = km.progressive_kmeans(key, x, 16, iters=5, dim_steps=1)
    np.testing.assert_allclose(one, km.lloyd(x, start, iters=5), atol=2e-4)
    many = km.progressive_kmeans(key, x, 16, iters=5, dim_steps=3)
    assert many.shape == (16, 6) and not np.allclose(many, one, atol=1e-3)
    assert float(jnp.mean(search.nearest_code(x, many).distances)) < float(jnp.mean(search.nearest_code(x, start).distances))


def test_progressive_kmeans_refuses_too_few_rows():
    with pytest.raises(ValueError, match="num_codes = 8"):
        km.progressive_kmeans(jax.random.key(0), jnp.ones((5, 3)), 8)


# The codebook state and its remedies as (init, start, update) transforms.

def _batch(x, codebook, learned=None, apply=True):
    codes = vqjax.vq_encode(x, codebook)
    errors = jnp.sum((x - codebook[codes]) ** 2, -1)
    return cbk.CodebookBatch(x, codes, errors, learned, apply)


def test_chain_applies_its_transforms_in_order_with_their_own_keys():
    x = jax.random.normal(jax.random.key(0), (64, 4)) + 6.0
    state = cbk.codebook_state(jax.random.normal(jax.random.key(1), (16, 4)), ema=True)
    batch = _batch(x, state.codebook)
    key = jax.random.key(5)
    chained = cbk.chain(cbk.ema(0.5), cbk.reseed_dead(0.9), cbk.count_steps()).update(state, batch, key)
    by_hand = cbk.ema(0.5).update(state, batch, jax.random.fold_in(key, 0))
    by_hand = cbk.reseed_dead(0.9).update(by_hand, batch, jax.random.fold_in(key, 1))
    for a, b in zip(jax.tree.leaves(chained), jax.tree.leaves(by_hand._replace(step=by_hand.step + 1))):
        np.testing.assert_array_equal(a, b)
    assert int(chained.step) == 1


def test_ema_transform_is_the_ema_rule_and_holds_when_not_applied():
    x = jax.random.normal(jax.random.key(0), (64, 4))
    state = cbk.codebook_state(jax.random.normal(jax.random.key(1), (8, 4)), ema=True)
    batch = _batch(x, state.codebook)
    new = cbk.ema(0.9).update(state, batch, jax.random.key(0))
    ref = cbk.ema_update(cbk.ema_init(state.codebook), x, batch.codes, decay=0.9)
    np.testing.assert_allclose(new.codebook, ref.codebook, rtol=1e-6)
    np.testing.assert_allclose(new.usage, ref.cluster_size, rtol=1e-6)
    held = cbk.ema(0.9).update(state, batch._replace(apply=False), jax.random.key(0))
    np.testing.assert_array_equal(held.codebook, state.codebook)
    np.testing.assert_array_equal(held.pending.counts, np.bincount(np.asarray(batch.codes), minlength=8))


def test_reseed_dead_moves_only_dead_codes_onto_batch_vectors_of_a_learned_codebook():
    learned = jax.random.normal(jax.random.key(1), (16, 4))
    x = jax.random.normal(jax.random.key(0), (32, 4)) * 0.1 + 8.0               # far from every code
    state = cbk.codebook_state(learned, ema=False)._replace(usage=jnp.where(jnp.arange(16) < 4, 5.0, 0.0))
    new = cbk.reseed_dead(1.0).update(state, _batch(x, learned, learned), jax.random.key(2))
    searched = np.asarray(cbk.searched_codebook(new, learned))
    np.testing.assert_array_equal(searched[:4], np.asarray(learned)[:4])        # alive: untouched
    rows = {tuple(r) for r in np.asarray(x).round(5)}
    assert all(tuple(r) in rows for r in searched[4:].round(5))                 # dead: now batch vectors
    np.testing.assert_array_equal(new.usage[4:], 1.0)
    unapplied = cbk.reseed_dead(1.0).update(state, _batch(x, learned, learned, apply=False), jax.random.key(2))
    np.testing.assert_array_equal(cbk.searched_codebook(unapplied, learned), learned)


def test_kmeans_start_fits_once_and_track_usage_follows_apply():
    x = jax.random.normal(jax.random.key(0), (128, 4))
    t = cbk.chain(cbk.kmeans_start(5), cbk.track_usage(0.5))
    state = t.init(cbk.codebook_state(jnp.zeros((8, 4)), ema=False))
    learned = jax.random.normal(jax.random.key(3), (8, 4)) * 10
    started = t.start(state, x, jax.random.key(1), learned)
    assert bool(started.initialized) and float(jnp.min(started.usage)) >= 1.0
    fitted = cbk.searched_codebook(started, learned)
    inertia = lambda cb: float(jnp.mean(jnp.min(((x[:, None] - cb[None]) ** 2).sum(-1), -1)))
    assert inertia(fitted) < 0.2 * inertia(learned)
    again = t.start(started, x * 5, jax.random.key(2), learned)
    np.testing.assert_array_equal(again.codebook, started.codebook)
    batch = _batch(x, fitted, learned)
    np.testing.assert_array_equal(t.update(started, batch._replace(apply=False), jax.random.key(0)).usage,
                                  started.usage)
    counts = np.bincount(np.asarray(batch.codes), minlength=8)
    np.testing.assert_allclose(t.update(started, batch, jax.random.key(0)).usage,
                               0.5 * np.asarray(started.usage) + 0.5 * counts, rtol=1e-6)
