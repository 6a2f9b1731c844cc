"""FSQ, LFQ, BSQ: exact round trips over every code, analytic gradients, factorised entropy, bounded memory,
codes always in range, bf16, no recompilation, refused bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import vqjax
from vqjax.quantizers.lfq import bit_entropy


def _normal(shape, seed=0, scale=1.0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, dtype)


def _fsq_preimage(codes, levels, eps=1e-3):
    """An input that FSQ maps to each code: invert value -> bounded -> tanh for every channel (numpy, float64)."""
    lv = np.asarray(levels, np.float64)
    half = np.floor(lv / 2)
    basis = np.cumprod([1] + list(levels[:-1]))
    digits = (np.asarray(codes)[..., None] // basis) % lv
    a = (lv - 1) * (1 + eps) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / a)
    return np.arctanh((digits - half + offset) / a) - shift


# --------------------------------------------------------------------------------------------------------- FSQ

@pytest.mark.parametrize("levels", [(3,), (2, 2), (8, 5, 5, 5), (4, 3, 2), (7, 6)])
def test_fsq_every_code_round_trips(levels):
    codes = jnp.arange(math.prod(levels), dtype=jnp.int32)
    z = jnp.asarray(_fsq_preimage(codes, levels), jnp.float32)
    q = jax.jit(lambda z: vqjax.fsq(z, levels))(z)
    np.testing.assert_array_equal(q.codes, codes)                      # every code is reachable, and exactly
    np.testing.assert_array_equal(vqjax.fsq_encode(z, levels), codes)
    np.testing.assert_array_equal(vqjax.fsq_decode(codes, levels), q.values)
    half = np.floor(np.asarray(levels) / 2)
    k = np.round(np.asarray(q.values, np.float64) * half)                # values are float32(k) / float32(L // 2)
    np.testing.assert_array_equal(q.values, k.astype(np.float32) / half.astype(np.float32))
    assert np.all(k >= -half) and np.all(k <= np.asarray(levels) - 1 - half)


@given(seed=st.integers(0, 2 ** 20), n=st.sampled_from([1, 7, 64]))
def test_fsq_large_codebook_round_trip(seed, n):
    levels = (8,) * 8                                                    # 16.7M codes, never materialised
    codes = jnp.asarray(np.random.default_rng(seed).integers(0, 8 ** 8, size=n), jnp.int32)
    z = jnp.asarray(_fsq_preimage(codes, levels), jnp.float32)
    q = _fsq_large(z)
    np.testing.assert_array_equal(q.codes, codes)
    np.testing.assert_array_equal(vqjax.fsq_decode(codes, levels), q.values)


_fsq_large = jax.jit(lambda z: vqjax.fsq(z, (8,) * 8))


def test_fsq_large_codebook_memory_is_bounded():
    z = _normal((4096, 8))
    compiled = jax.jit(lambda z: vqjax.fsq(z, (8,) * 8)).lower(z).compile()
    mem = compiled.memory_analysis()
    assert mem.temp_size_in_bytes < 8 * 2 ** 20, mem                 # a 16.7M histogram alone would be 64 MiB
    q = compiled(z)
    assert 0 < float(q.metrics["usage"]) <= 4096 / 8 ** 8


@pytest.mark.parametrize("z", [1e30, -1e30, np.inf, -np.inf, np.nan, 0.0, 1e-30])
@pytest.mark.parametrize("eps", [1e-7, 1e-3, 0.5])
def test_fsq_codes_always_in_range(z, eps):
    levels = (8, 5, 4, 2)
    x = jnp.full((3, 4), z, jnp.float32)
    codes = vqjax.fsq(x, levels, eps=eps).codes
    assert np.all((np.asarray(codes) >= 0) & (np.asarray(codes) < math.prod(levels)))
    np.testing.assert_array_equal(vqjax.fsq_encode(x, levels, eps=eps), codes)


def test_fsq_gradient_equals_analytic_formula():
    levels, eps = (8, 5, 4), 1e-3
    z = _normal((10, 3), seed=1)
    w = _normal((10, 3), seed=2)
    g = jax.grad(lambda z: jnp.sum(vqjax.fsq(z, levels, eps=eps).values * w))(z)
    lv = np.asarray(levels, np.float64)
    a = (lv - 1) * (1 + eps) / 2
    shift = np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / a)
    expected = np.asarray(w) * a * (1 - np.tanh(np.asarray(z, np.float64) + shift) ** 2) / np.floor(lv / 2)
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_fsq_bf16_in_and_out():
    z = _normal((5, 6, 4), dtype=jnp.bfloat16)
    q = vqjax.fsq(z, (8, 5, 5, 5))
    assert q.values.dtype == jnp.bfloat16 and q.codes.dtype == jnp.int32 and q.loss.dtype == jnp.float32
    np.testing.assert_array_equal(vqjax.fsq_decode(q.codes, (8, 5, 5, 5), dtype=jnp.bfloat16), q.values)
    np.testing.assert_array_equal(q.codes, vqjax.fsq(z.astype(jnp.float32), (8, 5, 5, 5)).codes)


def test_fsq_metrics_match_histogram():
    z = _normal((500, 3), seed=3)
    q = vqjax.fsq(z, (5, 5, 5))
    counts = np.bincount(np.asarray(q.codes), minlength=125)
    p = counts[counts > 0] / counts.sum()
    np.testing.assert_allclose(q.metrics["perplexity"], np.exp(-np.sum(p * np.log(p))), rtol=1e-5)
    np.testing.assert_allclose(q.metrics["usage"], np.mean(counts > 0), rtol=1e-6)


@pytest.mark.parametrize("call, err, match", [
    (lambda: vqjax.fsq(_normal((2, 3)), (8, 5)), ValueError, r"last dimension 2"),
    (lambda: vqjax.fsq(_normal((2, 1)), (1,)), ValueError, r"levels must hold ints >= 2"),
    (lambda: vqjax.fsq(_normal((2, 1)), ()), ValueError, r"at least one level"),
    (lambda: vqjax.fsq(_normal((2, 1)), 8), TypeError, r"levels must be a sequence"),
    (lambda: vqjax.fsq(_normal((2, 2)), (2 ** 16, 2 ** 16)), ValueError, r"more than int32 codes hold"),
    (lambda: vqjax.fsq(jnp.ones((2, 2), jnp.int32), (4, 4)), TypeError, r"fsq: z must be a floating-point"),
    (lambda: vqjax.fsq(_normal((2, 2)), (4, 4), eps=1.5), ValueError, r"eps must lie in \(0, 1\)"),
    (lambda: vqjax.fsq(_normal((2, 2)), (2, 4), eps=0.0), ValueError, r"eps must lie in \(0, 1\)"),
    (lambda: vqjax.fsq_decode(jnp.array([16]), (4, 4)), ValueError, r"must lie in \[0, 16\); got values in \[16, 16\]"),
])
def test_fsq_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# --------------------------------------------------------------------------------------------------------- LFQ

def test_lfq_every_code_round_trips_and_bit_order():
    dim = 5
    codes = jnp.arange(2 ** dim, dtype=jnp.int32)
    values = vqjax.lfq_decode(codes, dim, scale=0.5)
    q = vqjax.lfq(values, scale=0.5)
    np.testing.assert_array_equal(q.codes, codes)
    np.testing.assert_array_equal(q.values, values)
    np.testing.assert_array_equal(vqjax.lfq_encode(values), codes)
    # bit i is channel i (little-endian)
    np.testing.assert_array_equal(vqjax.lfq_encode(jnp.array([[1.0, -1, -1, -1, -1], [-1.0, 1, 1, -1, -1]])),
                                  [1, 6])


def _brute_entropies(x, scale, temperature):
    """Per-sample and codebook entropies over the full 2^d codebook (float64 numpy)."""
    d = x.shape[-1]
    codebook = np.where((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1, scale, -scale)
    dist = ((x[:, None, :] - codebook[None]) ** 2).sum(-1)
    logits = -dist / temperature
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    h = lambda q: -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), -1)
    return h(p).mean(), h(p.mean(0))


@pytest.mark.parametrize("scale, temperature", [(1.0, 0.5), (0.3, 0.1), (1.0, 2.0)])
def test_lfq_entropy_is_exact_within_one_group(scale, temperature):
    x = np.random.default_rng(4).normal(size=(200, 6))
    ent = bit_entropy(jnp.asarray(x, jnp.float32), scale=scale, temperature=temperature, group_size=8)
    per_sample, codebook = _brute_entropies(x, scale, temperature)
    np.testing.assert_allclose(ent.sample_entropy, per_sample, rtol=1e-4)
    np.testing.assert_allclose(ent.codebook_entropy, codebook, rtol=1e-4)


def test_lfq_grouped_codebook_entropy_is_an_upper_bound():
    x = np.random.default_rng(5).normal(size=(300, 8)) + np.linspace(-1, 1, 8)
    exact = _brute_entropies(x, 1.0, 1.0)[1]
    for g in (1, 2, 4):
        ent = bit_entropy(jnp.asarray(x, jnp.float32), scale=1.0, temperature=1.0, group_size=g)
        assert float(ent.codebook_entropy) >= exact - 1e-4
    full = bit_entropy(jnp.asarray(x, jnp.float32), scale=1.0, temperature=1.0, group_size=8)
    np.testing.assert_allclose(full.codebook_entropy, exact, rtol=1e-4)


def test_lfq_loss_and_gradients_equal_analytic_formula():
    z = _normal((16, 6), seed=6)
    w = _normal((16, 6), seed=7)
    kw = dict(scale=0.7, entropy_weight=0.0, commitment_weight=0.4)
    g = jax.grad(lambda z: jnp.sum(vqjax.lfq(z, **kw).values * w) + vqjax.lfq(z, **kw).loss)(z)
    q = np.where(np.asarray(z) > 0, 0.7, -0.7)
    expected = np.asarray(w) + 0.4 * 2 * (np.asarray(z) - q) / z.size      # identity (STE) + commitment
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)
    # entropy gradient is finite and the weighted loss adds up
    q2 = vqjax.lfq(z, entropy_weight=0.1, temperature=0.5)
    ent = bit_entropy(z, scale=1.0, temperature=0.5)
    np.testing.assert_allclose(q2.loss, 0.25 * q2.metrics["commitment"] + 0.1 * ent.loss, rtol=1e-5)
    assert np.all(np.isfinite(jax.grad(lambda z: vqjax.lfq(z, entropy_weight=0.1).loss)(z)))


def test_lfq_2_18_codes_with_entropy_fits_in_memory():
    z = jax.ShapeDtypeStruct((16384, 18), jnp.float32)
    fn = jax.jit(jax.value_and_grad(lambda z: vqjax.lfq(z, entropy_weight=0.1).loss))
    mem = fn.lower(z).compile().memory_analysis()
    assert mem.temp_size_in_bytes < 512 * 2 ** 20, mem               # dense 2^18 probabilities would be 16 GiB


def test_lfq_bf16_and_no_recompilation(trace_counter):
    fn = trace_counter(lambda z: vqjax.lfq(z))
    jitted = jax.jit(fn)
    a = jitted(_normal((4, 8, 10), seed=1, dtype=jnp.bfloat16))
    b = jitted(_normal((4, 8, 10), seed=2, dtype=jnp.bfloat16))
    assert fn.traces == 1
    assert a.values.dtype == jnp.bfloat16 and a.codes.dtype == jnp.int32
    np.testing.assert_array_equal(vqjax.lfq_decode(b.codes, 10, dtype=jnp.bfloat16), b.values)


@pytest.mark.parametrize("call, err, match", [
    (lambda: vqjax.lfq(_normal((2, 32))), ValueError, r"32 bits give 2\^32 codes, more than int32 codes hold \(at most 31 bits\)"),
    (lambda: vqjax.lfq(_normal((2, 4)), scale=0.0), ValueError, r"lfq: scale must be > 0"),
    (lambda: vqjax.lfq(_normal((2, 4)), temperature=0.0), ValueError, r"lfq: temperature must be > 0"),
    (lambda: vqjax.lfq(_normal((2, 4)), entropy_weight=-1.0), ValueError, r"entropy_weight must be a finite non-neg"),
    (lambda: vqjax.lfq(_normal((2, 4)), entropy_group_size=17), ValueError, r"entropy_group_size must be <= 16"),
    (lambda: vqjax.lfq(jnp.zeros(())), ValueError, r"rank >= 1"),
    (lambda: vqjax.lfq(jnp.ones((2, 4), jnp.complex64)), TypeError, r"complex"),
    (lambda: vqjax.lfq_decode(jnp.array([16]), 4), ValueError, r"\[0, 16\)"),
    (lambda: vqjax.bsq(_normal((2, 40))), ValueError, r"40 bits"),
])
def test_lfq_bsq_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# --------------------------------------------------------------------------------------------------------- BSQ

def test_bsq_values_on_the_sphere_and_round_trip():
    z = _normal((3, 7, 12), seed=8, scale=5.0)
    q = jax.jit(vqjax.bsq)(z)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(q.values), axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vqjax.bsq_decode(q.codes, 12), q.values)
    np.testing.assert_array_equal(vqjax.bsq_encode(z), q.codes)
    np.testing.assert_array_equal(q.codes, vqjax.lfq_encode(z))      # signs are scale-invariant
    codes = jnp.arange(2 ** 6, dtype=jnp.int32)
    np.testing.assert_array_equal(vqjax.bsq_encode(vqjax.bsq_decode(codes, 6)), codes)


def test_bsq_gradient_goes_through_the_normalisation():
    z = np.asarray(_normal((5, 8), seed=9))
    w = np.asarray(_normal((5, 8), seed=10))
    g = jax.grad(lambda z: jnp.sum(vqjax.bsq(z, entropy_weight=0.0, commitment_weight=0.0).values * w))(
        jnp.asarray(z))
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    u = z / norm
    expected = (w - u * np.sum(u * w, -1, keepdims=True)) / norm        # (I - u uᵀ) w / |z|
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_bsq_entropy_uses_code_scale_one_over_sqrt_d():
    z = _normal((64, 6), seed=11)
    q = vqjax.bsq(z, entropy_weight=1.0, temperature=0.3, commitment_weight=0.0, entropy_group_size=6)
    u = np.asarray(z) / np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)
    per_sample, codebook = _brute_entropies(u, 1 / np.sqrt(6), 0.3)
    np.testing.assert_allclose(q.metrics["sample_entropy"], per_sample, rtol=1e-4)
    np.testing.assert_allclose(q.metrics["codebook_entropy"], codebook, rtol=1e-4)
    np.testing.assert_allclose(q.loss, per_sample - codebook, rtol=1e-4, atol=1e-5)


def test_check_finite_in_scalar_quantizers():
    bad = jnp.array([[0.0, np.nan, 1.0, 2.0]])
    for fn in (lambda z: vqjax.fsq(z, (3, 3, 3, 3), check_finite=True), lambda z: vqjax.lfq(z, check_finite=True),
               lambda z: vqjax.bsq(z, check_finite=True)):
        with pytest.raises(ValueError, match=r"z contains 1 non-finite"):
            fn(bad)


def test_exact_lfq_codebook_entropy_equals_the_dense_formula_with_bounded_memory():
    """``entropy_group_size=None``: the entropy of the batch-mean distribution over all 2^d codes, equal to the
    dense N x 2^d computation (and its gradient), while the chunked scan never holds that matrix."""
    from vqjax.quantizers.lfq import bit_entropy

    x = jax.random.normal(jax.random.key(0), (300, 10))
    tau, s = 0.5, 1.0

    def dense(x):
        codes = np.arange(2 ** 10)
        signs = np.where((codes[:, None] >> np.arange(10)) & 1, s, -s).astype(np.float32)      # [1024, 10]
        logits = -jnp.sum((x[:, None, :] - signs[None]) ** 2, -1) / tau
        avg = jnp.mean(jax.nn.softmax(logits, axis=-1), 0)
        return -jnp.sum(avg * jnp.log(avg))

    exact = lambda x: bit_entropy(x, scale=s, temperature=tau, group_size=None).codebook_entropy
    np.testing.assert_allclose(jax.jit(exact)(x), dense(x), rtol=1e-4)
    np.testing.assert_allclose(jax.jit(jax.grad(exact))(x), jax.grad(dense)(x), rtol=2e-3, atol=1e-6)
    grouped = bit_entropy(x, scale=s, temperature=tau, group_size=4).codebook_entropy
    assert float(grouped) >= float(exact(x)) - 1e-4                        # the factorised form is an upper bound
    big = jax.ShapeDtypeStruct((16384, 18), jnp.float32)                   # 2^18 codes: N x 2^d would be 16 GiB
    mem = jax.jit(jax.grad(exact)).lower(big).compile().memory_analysis()
    if mem is not None:
        assert mem.temp_size_in_bytes < 2 ** 30
    q = vqjax.lfq(x, entropy_group_size=None, entropy_weight=0.1)
    assert np.isfinite(float(q.loss)) and "codebook_entropy" in q.metrics
