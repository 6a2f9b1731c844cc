"""RVQ, PQ, AQ and their residual/grouped forms: codes against a numpy reference, beam never worse than greedy,
quantizer dropout, exact round trips, analytic gradients, post-training fits on real patches, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import vqjax
from vqjax.quantizers.aq import lstsq_codebooks
from vqjax.quantizers.multisearch import beam_encode, greedy_encode, icm_refine


def _normal(shape, seed=0, scale=1.0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, dtype)


def _err(x, values):
    return np.sum((np.asarray(x, np.float64) - np.asarray(values, np.float64)) ** 2, axis=-1)


def _greedy_numpy(x, books):
    r, out = np.asarray(x, np.float64), []
    for c in np.asarray(books, np.float64):
        k = ((r[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        out.append(k)
        r = r - c[k]
    return np.stack(out, 1)


# --------------------------------------------------------------------------------------------------------- RVQ

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rvq_contract_and_round_trip(dtype):
    z = _normal((3, 7, 6), dtype=dtype)
    books = _normal((4, 16, 6), seed=1, scale=0.5)
    q = jax.jit(lambda z, b: vqjax.rvq(z, b, beam_width=3))(z, books)
    assert q.values.shape == z.shape and q.values.dtype == dtype
    assert q.codes.shape == (3, 7, 4) and q.codes.dtype == jnp.int32
    assert q.loss.shape == () and q.loss.dtype == jnp.float32
    assert {"perplexity", "usage", "commitment", "codebook_loss"} <= set(q.metrics)
    np.testing.assert_array_equal(vqjax.rvq_decode(q.codes, books, dtype=dtype), q.values)
    np.testing.assert_array_equal(vqjax.rvq_encode(z, books, beam_width=3), q.codes)


def test_rvq_greedy_matches_numpy():
    x, books = _normal((50, 5)), _normal((3, 20, 5), seed=2)
    np.testing.assert_array_equal(vqjax.rvq_encode(x, books), _greedy_numpy(x, books))
    np.testing.assert_array_equal(vqjax.rvq_encode(x, books, beam_width=1), greedy_encode(x, books))


@given(seed=st.integers(0, 2 ** 20), beam=st.sampled_from([2, 4, 8]), levels=st.sampled_from([2, 3, 5]))
def test_rvq_beam_equals_a_reference_beam_search(seed, beam, levels):
    """Beam search against an independent numpy beam search (best ``beam`` of all ``beam * K`` extensions per
    level, then the best final beam, then the better of that and greedy per vector). A search that fell back to
    greedy fails here (and below, where a wide beam must find the exhaustive optimum)."""
    x = _normal((40, 4), seed=seed)
    books = _normal((levels, 8, 4), seed=seed + 1, scale=0.7)
    greedy = _err(x, _decode(_greedy(x, books), books))
    beamed = _err(x, _decode(_beam(x, books, beam), books))
    xs, bs = np.asarray(x, np.float64), np.asarray(books, np.float64)
    reference = []
    for v in xs:
        beams = [np.zeros(4)]
        for level in range(levels):
            cands = sorted(((np.sum((v - s - c) ** 2), tuple(s + c)) for s in beams for c in bs[level]))
            beams = [np.asarray(t) for _, t in cands[:beam]]
        reference.append(min(np.sum((v - s) ** 2) for s in beams))
    reference = np.minimum(np.asarray(reference), greedy)
    np.testing.assert_allclose(beamed, reference, rtol=1e-4, atol=1e-5)


_beam = jax.jit(lambda x, b, w: beam_encode(x, b, w), static_argnums=2)
_greedy = jax.jit(greedy_encode)
_decode = jax.jit(vqjax.rvq_decode)


def test_rvq_beam_finds_the_exhaustive_optimum_when_wide_enough():
    x, books = _normal((30, 3), seed=3), _normal((2, 6, 3), seed=4)
    best = np.full(30, np.inf)
    for i in range(6):
        for j in range(6):
            best = np.minimum(best, _err(x, books[0, i] + books[1, j]))
    np.testing.assert_allclose(_err(x, vqjax.rvq_decode(_beam(x, books, 6), books)), best, rtol=1e-5)


def test_rvq_gradients_equal_analytic_formula():
    z, books = _normal((12, 4), seed=5), _normal((3, 10, 4), seed=6)
    w = _normal((12, 4), seed=7)
    beta, cw = 0.3, 0.7

    def f(z, books):
        q = vqjax.rvq(z, books, beta=beta, codebook_weight=cw)
        return jnp.sum(q.values * w) + q.loss

    gz, gb = jax.grad(f, argnums=(0, 1))(z, books)
    codes = np.asarray(vqjax.rvq_encode(z, books))
    b = np.asarray(books, np.float64)
    qs = np.stack([b[l][codes[:, l]] for l in range(3)], 1)           # [N, L, D]
    r = np.asarray(z, np.float64)[:, None, :] - (np.cumsum(qs, 1) - qs)
    n = z.size
    expected_z = np.asarray(w) + beta * np.sum(2 * (r - qs), axis=1) / n
    expected_b = np.zeros_like(b)
    for l in range(3):
        np.add.at(expected_b[l], codes[:, l], cw * 2 * (qs[:, l] - r[:, l]) / n)
    np.testing.assert_allclose(gz, expected_z, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb, expected_b, rtol=1e-4, atol=1e-6)


def test_rvq_quantizer_dropout_keeps_a_prefix_of_levels():
    z, books = _normal((400, 4), seed=8), _normal((5, 8, 4), seed=9)
    q = vqjax.rvq(z, books, quantizer_dropout=0.5, key=jax.random.key(0))
    codes = np.asarray(q.codes)
    kept = (codes >= 0).sum(1)
    assert np.all(kept >= 1) and np.all(codes[:, 0] >= 0)
    for row, n in zip(codes, kept):                                   # present levels form a prefix
        assert np.all(row[:n] >= 0) and np.all(row[n:] == -1)
    frac_full = np.mean(kept == 5)
    assert 0.5 < frac_full < 0.7                                       # 0.5 + 0.5 / 5 expected
    np.testing.assert_array_equal(vqjax.rvq_decode(q.codes, books), q.values)
    full = np.asarray(vqjax.rvq_encode(z, books))
    np.testing.assert_array_equal(np.where(codes >= 0, full, -1), codes)


def test_rvq_shared_codebook_equals_broadcast():
    z, book = _normal((20, 4), seed=10), _normal((12, 4), seed=11)
    a = vqjax.rvq(z, book, num_levels=3)
    b = vqjax.rvq(z, jnp.broadcast_to(book, (3, 12, 4)))
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.values, b.values)
    g = jax.grad(lambda c: vqjax.rvq(z, c, num_levels=3).loss)(book)
    assert g.shape == book.shape and np.any(np.asarray(g) != 0)


@pytest.mark.parametrize("levels", [(8, 5, 5), (4, 4)])
def test_residual_fsq_round_trip_and_error_falls_with_levels(levels):
    z = jnp.tanh(_normal((200, len(levels)), seed=12))
    errs = []
    for n in (1, 2, 4):
        q = vqjax.residual_fsq(z, levels, n)
        assert q.codes.shape == (200, n) and int(q.codes.min()) >= 0
        np.testing.assert_array_equal(vqjax.residual_fsq_decode(q.codes, levels, n), q.values)
        np.testing.assert_array_equal(vqjax.residual_fsq_encode(z, levels, n), q.codes)
        errs.append(_err(z, q.values).mean())
    assert errs[0] > errs[1] > errs[2]
    g = jax.grad(lambda z: jnp.sum(vqjax.residual_fsq(z, levels, 2).values))(z)
    np.testing.assert_array_equal(g, np.ones(z.shape))


def test_residual_lfq_round_trip_and_error_falls_with_levels():
    z = _normal((200, 6), seed=13)
    errs = []
    for n in (1, 2, 4):
        q = vqjax.residual_lfq(z, n, scale=1.0)
        np.testing.assert_array_equal(vqjax.residual_lfq_decode(q.codes, 6, n), q.values)
        np.testing.assert_array_equal(vqjax.residual_lfq_encode(z, n), q.codes)
        errs.append(_err(z, q.values).mean())
    assert errs[0] > errs[1] > errs[2]
    assert np.isfinite(float(q.loss))


# --------------------------------------------------------------------------------------------------------- PQ

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pq_equals_vq_per_group(dtype):
    z = _normal((5, 9, 8), seed=14, dtype=dtype)
    books = _normal((4, 16, 2), seed=15)
    q = jax.jit(vqjax.pq)(z, books)
    assert q.codes.shape == (5, 9, 4) and q.values.dtype == dtype
    vq = jax.jit(vqjax.vq)
    for g in range(4):
        ref = vq(z[..., 2 * g:2 * g + 2], books[g])
        np.testing.assert_array_equal(q.codes[..., g], ref.codes)
        np.testing.assert_array_equal(q.values[..., 2 * g:2 * g + 2], ref.values)
    np.testing.assert_array_equal(vqjax.pq_decode(q.codes, books, dtype=dtype), q.values)
    np.testing.assert_array_equal(vqjax.pq_encode(z, books), q.codes)
    shared = vqjax.pq(z, books[0], num_groups=4)
    np.testing.assert_array_equal(shared.codes, vqjax.pq(z, jnp.broadcast_to(books[0], (4, 16, 2))).codes)


def test_pq_gradients_equal_analytic_formula():
    z, books, w = _normal((10, 6), seed=16), _normal((3, 8, 2), seed=17), _normal((10, 6), seed=18)
    def f(z, b):
        q = vqjax.pq(z, b, beta=0.5)
        return jnp.sum(q.values * w) + q.loss

    gz, gb = jax.jit(jax.grad(f, argnums=(0, 1)))(z, books)
    q = np.asarray(vqjax.pq_decode(vqjax.pq_encode(z, books), books))
    np.testing.assert_allclose(gz, np.asarray(w) + 0.5 * 2 * (np.asarray(z) - q) / z.size, rtol=1e-5, atol=1e-7)
    codes = np.asarray(vqjax.pq_encode(z, books))
    expected = np.zeros(books.shape)
    for g in range(3):
        np.add.at(expected[g], codes[:, g], 2 * (q[:, 2 * g:2 * g + 2] - np.asarray(z)[:, 2 * g:2 * g + 2]) / z.size)
    np.testing.assert_allclose(gb, expected, rtol=1e-5, atol=1e-7)


def test_grouped_fsq_and_lfq():
    z = _normal((7, 12), seed=19)
    q = vqjax.grouped_fsq(z, (8, 5, 3), 4)
    assert q.codes.shape == (7, 4)
    np.testing.assert_array_equal(vqjax.grouped_fsq_decode(q.codes, (8, 5, 3)), q.values)
    np.testing.assert_array_equal(vqjax.grouped_fsq_encode(z, (8, 5, 3), 4), q.codes)
    wide = _normal((7, 64), seed=20)                                   # 64 bits: four int32 codes of 16 bits
    q = vqjax.grouped_lfq(wide, 4)
    assert q.codes.shape == (7, 4)
    np.testing.assert_array_equal(vqjax.grouped_lfq_decode(q.codes, 16), q.values)
    np.testing.assert_array_equal(vqjax.grouped_lfq_encode(wide, 4), q.codes)
    with pytest.raises(ValueError, match=r"grouped_fsq: z must have last dimension num_groups \* len\(levels\) = 9"):
        vqjax.grouped_fsq(z, (8, 5, 3), 3)


# --------------------------------------------------------------------------------------------------------- AQ

def test_aq_icm_never_increases_error_and_round_trips():
    x, books = _normal((60, 5), seed=21), _normal((3, 16, 5), seed=22, scale=0.6)
    beam = _beam(x, books, 2)
    refined = jax.jit(icm_refine, static_argnums=3)(x, books, beam, 3)
    e0, e1 = _err(x, vqjax.aq_decode(beam, books)), _err(x, vqjax.aq_decode(refined, books))
    assert np.all(e1 <= e0 + 1e-5) and e1.mean() < e0.mean()
    q = jax.jit(lambda x, b: vqjax.aq(x, b, beam_width=2, icm_iters=3))(x, books)
    np.testing.assert_array_equal(q.codes, refined)
    np.testing.assert_array_equal(vqjax.aq_decode(q.codes, books), q.values)
    np.testing.assert_array_equal(vqjax.aq_encode(x, books, beam_width=2, icm_iters=3), q.codes)


def test_aq_gradients_and_least_squares_update():
    x, books, w = _normal((40, 4), seed=23), _normal((2, 8, 4), seed=24), _normal((40, 4), seed=25)
    def f(z, b):
        q = vqjax.aq(z, b)
        return jnp.sum(q.values * w) + q.loss

    gz, gb = jax.jit(jax.grad(f, argnums=(0, 1)))(x, books)
    codes = np.asarray(jax.jit(vqjax.aq_encode)(x, books))
    q = np.asarray(jax.jit(vqjax.aq_decode)(codes, books), np.float64)
    n = x.size
    np.testing.assert_allclose(gz, np.asarray(w) + 0.25 * 2 * (np.asarray(x) - q) / n, rtol=1e-5, atol=1e-7)
    expected = np.zeros(books.shape)
    for m in range(2):
        np.add.at(expected[m], codes[:, m], 2 * (q - np.asarray(x)) / n)
    np.testing.assert_allclose(gb, expected, rtol=1e-4, atol=1e-7)
    # the least-squares step is the optimum for fixed codes (up to its small ridge)
    new = jax.jit(lambda x, c, b: lstsq_codebooks(x, c, b, ridge=1e-6))(x, jnp.asarray(codes), books)
    before, after = _err(x, q).mean(), _err(x, vqjax.aq_decode(codes, new)).mean()
    assert after < before
    onehot = np.concatenate([np.eye(8)[codes[:, m]] for m in range(2)], 1)
    ls = np.linalg.lstsq(onehot, np.asarray(x, np.float64), rcond=None)[0]
    np.testing.assert_allclose(after, _err(x, onehot @ ls).mean(), rtol=1e-3)


@pytest.mark.parametrize("call, err, match", [
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 8, 5))), ValueError, r"D = 4"),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((8, 4))), ValueError, r"needs num_levels=L"),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 8, 4)), num_levels=2), ValueError, r"num_levels must equal L = 3"),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 0, 4))), ValueError, r"at least one level and one code"),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 8, 4)), beam_width=0), ValueError, r"beam_width must be a pos"),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 8, 4)), quantizer_dropout=0.5), ValueError, r"needs key="),
    (lambda: vqjax.rvq(_normal((2, 4)), _normal((3, 8, 4)), estimator="gumbel"), ValueError, r"estimator must be one of"),
    (lambda: vqjax.rvq(jnp.ones((2, 4), jnp.int32), _normal((3, 8, 4))), TypeError, r"rvq: z must be a floating"),
    (lambda: vqjax.rvq_decode(jnp.array([[0, 9]]), _normal((2, 8, 4))), ValueError, r"\[-1, 8\)"),
    (lambda: vqjax.rvq_decode(jnp.array([[0, 1, 2]]), _normal((2, 8, 4))), ValueError, r"\[\.\.\., L\] with L = 2"),
    (lambda: vqjax.pq(_normal((2, 6)), _normal((4, 8, 2))), ValueError, r"4 \* 2 = 8 must equal D = 6"),
    (lambda: vqjax.pq(_normal((2, 6)), _normal((8, 2))), ValueError, r"needs num_groups=G"),
    (lambda: vqjax.pq_decode(jnp.array([[0, 1]]), _normal((3, 8, 2))), ValueError, r"G = 3"),
    (lambda: vqjax.aq(_normal((2, 4)), _normal((8, 4))), ValueError, r"\[L, K, D\]"),
    (lambda: vqjax.aq(_normal((2, 4)), _normal((2, 8, 4)), icm_iters=-1), ValueError, r"icm_iters must be a non-neg"),
    (lambda: vqjax.aq_decode(jnp.array([[-1, 0]]), _normal((2, 8, 4))), ValueError, r"\[0, 8\)"),
    (lambda: vqjax.residual_fsq(_normal((2, 3)), (4, 4), 2), ValueError, r"last dimension 2"),
    (lambda: vqjax.residual_lfq(_normal((2, 40)), 2), ValueError, r"40 bits"),
    (lambda: vqjax.fit_pq(jax.random.key(0), _normal((20, 6)), 4, 8), ValueError, r"num_groups must divide D = 6"),
    (lambda: vqjax.fit_aq(jax.random.key(0), _normal((20, 6)), 2, 8, ridge=0.0), ValueError, r"ridge must be > 0"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_no_recompilation(trace_counter):
    books = _normal((3, 8, 4), seed=26)
    for fn in (lambda z: vqjax.rvq(z, books, beam_width=2), lambda z: vqjax.aq(z, books, icm_iters=1),
               lambda z: vqjax.pq(z, books[:, :, :2].reshape(2, 8, 3)[:, :, :2])):
        counted = trace_counter(fn)
        jitted = jax.jit(counted)
        jitted(_normal((10, 4), seed=1))
        jitted(_normal((10, 4), seed=2))
        assert counted.traces == 1


# ------------------------------------------------------------------------------------------ post-training fits

@pytest.fixture(scope="module")
def patches():
    from vqjax.demo import load_patches
    train, test = load_patches(6000, 2000, seed=3)
    return jnp.asarray(train), jnp.asarray(test)


def _rel(test, values):
    test = np.asarray(test, np.float64)
    return np.mean((test - np.asarray(values)) ** 2) / np.mean((test - test.mean(0)) ** 2)


def test_post_training_fits_on_real_patches(patches):
    train, test = patches
    key = jax.random.key(0)
    pq_books = vqjax.fit_pq(key, train, 8, 16, iters=10)
    rvq_books = vqjax.fit_rvq(key, train, 4, 16, iters=10)
    rvq_beam_books = vqjax.fit_rvq(key, train, 4, 16, iters=10, beam_width=4)
    aq_books = vqjax.fit_aq(key, train, 4, 16, iters=2, beam_width=4, kmeans_iters=10)
    pq_err = _rel(test, vqjax.pq_decode(vqjax.pq_encode(test, pq_books), pq_books))
    rvq_err = _rel(test, vqjax.rvq_decode(vqjax.rvq_encode(test, rvq_books), rvq_books))
    rvq_beam_err = _rel(test, vqjax.rvq_decode(vqjax.rvq_encode(test, rvq_beam_books, beam_width=4),
                                               rvq_beam_books))
    aq_err = _rel(test, vqjax.aq_decode(vqjax.aq_encode(test, aq_books, beam_width=4), aq_books))
    # 32 bits (PQ) vs 16 bits (RVQ, AQ): all far below the variance; beam fitting and AQ's joint fit help.
    assert pq_err < 0.5 and rvq_err < 0.6
    assert rvq_beam_err < rvq_err
    assert aq_err < rvq_beam_err
