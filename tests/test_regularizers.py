"""Regularisers: chunked values and gradients equal their dense formulas; memory stays bounded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import metrics, regularizers, search


def _data(n=120, k=50, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d)), jnp.float32), jnp.asarray(rng.normal(size=(k, d)), jnp.float32)


def _dense_entropy(z, cb, temperature, diversity_weight, metric):
    p = jax.nn.softmax(-search.dense_distances(z, cb, metric) / temperature, -1)
    h = lambda p: -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
    return jnp.mean(h(p)) - diversity_weight * h(jnp.mean(p, 0))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_entropy_loss_and_gradient_equal_dense(metric):
    z, cb = _data()
    kw = dict(temperature=0.5, diversity_weight=0.7, metric=metric)
    chunked = lambda z, cb: regularizers.entropy_loss(z, cb, chunk_size=16, **kw).loss
    dense = lambda z, cb: _dense_entropy(z, cb, 0.5, 0.7, metric)
    np.testing.assert_allclose(jax.jit(chunked)(z, cb), dense(z, cb), rtol=1e-5, atol=1e-6)
    g_chunked = jax.jit(jax.grad(chunked, argnums=(0, 1)))(z, cb)
    g_dense = jax.grad(dense, argnums=(0, 1))(z, cb)
    for a, b in zip(g_chunked, g_dense):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_entropy_terms_bounds():
    z, cb = _data()
    terms = regularizers.entropy_loss(z, cb, temperature=1e3)      # near-uniform p
    np.testing.assert_allclose(terms.sample_entropy, np.log(50), rtol=1e-3)
    np.testing.assert_allclose(terms.codebook_entropy, np.log(50), rtol=1e-3)


def test_entropy_gradient_memory_is_chunk_bounded():
    n, k, d = 2048, 16384, 8
    z, cb = jnp.zeros((n, d)), jnp.zeros((k, d))
    grad = jax.jit(jax.grad(lambda z, cb: regularizers.entropy_loss(z, cb, chunk_size=512).loss, argnums=(0, 1)))
    mem = grad.lower(z, cb).compile().memory_analysis()
    if mem is None:
        pytest.skip("memory analysis not available")
    assert mem.temp_size_in_bytes < n * k * 4 / 4, mem.temp_size_in_bytes


def test_orthogonal_loss_equals_dense():
    _, cb = _data(k=30)
    c = cb / jnp.linalg.norm(cb, axis=-1, keepdims=True)
    dense = lambda c: jnp.sum((c @ c.T - jnp.eye(30)) ** 2) / 900
    np.testing.assert_allclose(regularizers.orthogonal_loss(cb), dense(c), rtol=1e-5)
    g = jax.grad(regularizers.orthogonal_loss)(cb)
    g_dense = jax.grad(lambda cb: dense(cb / jnp.linalg.norm(cb, axis=-1, keepdims=True)))(cb)
    np.testing.assert_allclose(g, g_dense, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(regularizers.orthogonal_loss(jnp.eye(6)), 0.0, atol=1e-7)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_soft_quantize_equals_dense_and_goes_hard_at_low_temperature(metric):
    z, cb = _data()
    table = cb if metric == "l2" else search.l2_normalize(cb)
    dense = lambda z, cb, t: jax.nn.softmax(-search.dense_distances(z, cb, metric) / t, -1) @ (
        cb if metric == "l2" else search.l2_normalize(cb))
    soft = lambda z, cb, t: regularizers.soft_quantize(z, cb, temperature=t, metric=metric, chunk_size=16).values
    np.testing.assert_allclose(soft(z, cb, 0.7), dense(z, cb, 0.7), rtol=1e-5, atol=1e-5)
    ga = jax.grad(lambda z, cb: jnp.sum(soft(z, cb, 0.7) ** 2), argnums=(0, 1))(z, cb)
    gb = jax.grad(lambda z, cb: jnp.sum(dense(z, cb, 0.7) ** 2), argnums=(0, 1))(z, cb)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    hard = regularizers.soft_quantize(z, cb, temperature=1e-6, metric=metric)
    codes = search.nearest_code(z, cb, metric=metric).codes
    np.testing.assert_array_equal(hard.codes, codes)
    np.testing.assert_allclose(hard.values, table[codes], atol=1e-4)


def test_soft_quantize_gumbel_noise_matches_dense_sample():
    z, cb = _data()
    key = jax.random.key(7)
    res = regularizers.soft_quantize(z, cb, key=key, gumbel_temperature=0.5, chunk_size=50)  # one chunk
    logits = -search.dense_distances(z, cb) + jax.random.gumbel(jax.random.fold_in(key, 0), (120, 50))
    np.testing.assert_array_equal(res.codes, jnp.argmax(logits, -1))
    np.testing.assert_allclose(res.values, jax.nn.softmax(logits / 0.5, -1) @ cb, rtol=1e-4, atol=1e-5)


def test_commitment_and_codebook_losses_route_gradients():
    z, q = _data(10, 10)
    gz, gq = jax.grad(lambda z, q: regularizers.commitment_loss(z, q), argnums=(0, 1))(z, q)
    np.testing.assert_allclose(gz, 2 * (z - q) / z.size, rtol=1e-6)
    np.testing.assert_array_equal(gq, 0.0)
    gz, gq = jax.grad(lambda z, q: regularizers.codebook_loss(z, q), argnums=(0, 1))(z, q)
    np.testing.assert_array_equal(gz, 0.0)
    np.testing.assert_allclose(gq, 2 * (q - z) / z.size, rtol=1e-6)


def test_metrics():
    counts = jnp.array([2.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(metrics.perplexity(counts), 2.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.usage(counts), 0.5)
    np.testing.assert_allclose(metrics.dead_code_count(jnp.array([0.1, 2.0, 0.5]), 1.0), 2.0)
    m = metrics.code_metrics(jnp.array([[0, 1], [2, 3]]), 8)
    np.testing.assert_allclose(m["perplexity"], 4.0, rtol=1e-6)
    np.testing.assert_allclose(m["usage"], 0.5)
