"""Chunked nearest-code search equals the dense computation; memory stays bounded; bad input refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import search


def _data(n=700, k=300, d=16, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, d)), dtype), jnp.asarray(rng.normal(size=(k, d)), jnp.float32))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk_size,block_rows", [(None, None), (64, None), (37, 128), (300, 50)])
def test_chunked_equals_dense(metric, chunk_size, block_rows):
    z, cb = _data()
    dense = search.dense_distances(z, cb, metric)
    res = jax.jit(lambda z, cb: search.nearest_code(z, cb, metric=metric, chunk_size=chunk_size,
                                                    block_rows=block_rows))(z, cb)
    assert res.codes.dtype == jnp.int32 and res.codes.shape == (700,)
    np.testing.assert_array_equal(res.codes, jnp.argmin(dense, -1))
    np.testing.assert_allclose(res.distances, jnp.min(dense, -1), rtol=1e-5, atol=1e-5)


def test_distances_are_true_distances():
    z, cb = _data(50, 20)
    res = search.nearest_code(z, cb)
    exact = np.min(((np.asarray(z)[:, None] - np.asarray(cb)[None]) ** 2).sum(-1), -1)
    np.testing.assert_allclose(res.distances, exact, rtol=1e-4, atol=1e-4)


def test_ties_resolve_to_lowest_index_across_chunks():
    # Integer-valued data: every distance is exact, and codes 3, 40 and 77 are copies of each other.
    rng = np.random.default_rng(1)
    cb = rng.integers(-3, 4, size=(100, 6)).astype(np.float32)
    cb[40] = cb[3]
    cb[77] = cb[3]
    z = np.concatenate([np.repeat(cb[3:4], 5, 0), rng.integers(-3, 4, size=(200, 6))]).astype(np.float32)
    dense = np.argmin(np.asarray(search.dense_distances(jnp.asarray(z), jnp.asarray(cb))), -1)
    for chunk in (7, 32, 41, 100):
        codes = search.nearest_code(jnp.asarray(z), jnp.asarray(cb), chunk_size=chunk).codes
        np.testing.assert_array_equal(codes, dense)
        assert np.all(np.asarray(codes[:5]) == 3)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_input_searches_in_float32(dtype):
    z, cb = _data(dtype=dtype)
    res = search.nearest_code(z, cb, chunk_size=50)
    dense = search.dense_distances(z.astype(jnp.float32), cb)
    np.testing.assert_array_equal(res.codes, jnp.argmin(dense, -1))
    assert res.distances.dtype == jnp.float32


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_top_k_equals_sorted_dense(metric):
    z, cb = _data(200, 90)
    dense = np.asarray(search.dense_distances(z, cb, metric))
    res = search.nearest_code(z, cb, metric=metric, top_k=5, chunk_size=16)
    assert res.codes.shape == (200, 5)
    np.testing.assert_array_equal(res.codes, np.argsort(dense, -1, kind="stable")[:, :5])
    np.testing.assert_allclose(res.distances, np.sort(dense, -1)[:, :5], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [20, 80, 256, 1024, 4096])
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("values", ["normal", "ties", "inf"])
def test_tile_top_k_equals_stable_sort(width, k, values):
    # The two-stage selection (group minima, then candidates) and the masked-minimum rounds must give exactly the
    # k smallest per row with ties to the lower column, including rows with many equal entries and +inf padding.
    rng = np.random.default_rng(width + k)
    if values == "normal":
        d = rng.normal(size=(64, width))
    elif values == "ties":
        d = rng.integers(0, 3, size=(64, width)).astype(np.float64)
    else:
        d = np.where(rng.random((64, width)) < 0.9, np.inf, rng.normal(size=(64, width)))
    d = d.astype(np.float32)
    order = np.argsort(d, axis=-1, kind="stable")[:, :k]
    for fn in (search.tile_top_k, search.smallest_k):
        vals, idx = jax.jit(fn, static_argnums=1)(jnp.asarray(d), k)
        assert idx.dtype == jnp.int32 and idx.shape == (64, k)
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_array_equal(vals, np.take_along_axis(d, order, axis=-1))


def test_top_k_two_stage_search_equals_sorted_dense():
    z, cb = _data(300, 1024, 8)
    dense = np.asarray(search.dense_distances(z, cb))
    res = search.nearest_code(z, cb, top_k=7)
    np.testing.assert_array_equal(res.codes, np.argsort(dense, -1, kind="stable")[:, :7])


def test_any_leading_shape():
    z, cb = _data(24, 10)
    res = search.nearest_code(z.reshape(2, 3, 4, 16), cb)
    assert res.codes.shape == (2, 3, 4)
    np.testing.assert_array_equal(res.codes.reshape(-1), search.nearest_code(z, cb).codes)


def test_search_never_builds_n_by_k():
    """The compiled search holds no buffer of N x K elements (only chunk tiles)."""
    n, k, d = 4096, 8192, 8
    z, cb = jnp.zeros((n, d)), jnp.zeros((k, d))
    lowered = jax.jit(lambda z, cb: search.nearest_code(z, cb, chunk_size=512, block_rows=1024)).lower(z, cb)
    mem = lowered.compile().memory_analysis()
    if mem is None:
        pytest.skip("memory analysis not available on this backend")
    assert mem.temp_size_in_bytes < n * k * 4 / 4, mem.temp_size_in_bytes


def test_no_recompilation(trace_counter):
    fn = trace_counter(lambda z, cb: search.nearest_code(z, cb, chunk_size=32).codes)
    jitted = jax.jit(fn)
    z, cb = _data(64, 100)
    jitted(z, cb)
    jitted(z + 1.0, cb * 2.0)
    assert fn.traces == 1


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(z=jnp.ones((4, 3), jnp.int32)), TypeError, "z must be a floating-point array.*int32"),
    (dict(z=jnp.ones((4, 3), jnp.complex64)), TypeError, "complex"),
    (dict(z=jnp.float32(1.0)), ValueError, "rank >= 1.*rank-0"),
    (dict(codebook=jnp.ones((5, 4))), ValueError, r"D = 3.*\(5, 4\)"),
    (dict(codebook=jnp.ones((5,))), ValueError, "rank >= 2"),
    (dict(codebook=jnp.ones((0, 3))), ValueError, "at least one code"),
    (dict(metric="dot"), ValueError, r"metric must be one of \('l2', 'cosine'\); got 'dot'"),
    (dict(top_k=9), ValueError, "top_k must be <= K = 5; got 9"),
    (dict(chunk_size=0), ValueError, "chunk_size must be a positive int; got 0"),
])
def test_bad_input(kwargs, err, match):
    args = dict(z=jnp.ones((4, 3)), codebook=jnp.ones((5, 3)))
    args.update(kwargs)
    z, cb = args.pop("z"), args.pop("codebook")
    with pytest.raises(err, match=match):
        search.nearest_code(z, cb, **args)
