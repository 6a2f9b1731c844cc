"""vqjax.vq: the Quantized contract, exact round trips, analytic gradients, no recompilation, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import vqjax
from vqjax.checks import NonFiniteError


def _data(shape=(4, 5, 8), k=33, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=shape), dtype),
            jnp.asarray(rng.normal(size=(k, shape[-1])), jnp.float32))


@pytest.mark.parametrize("estimator", ["ste", "rotation", "gumbel"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_contract_shapes_dtypes_and_round_trip(estimator, metric, dtype):
    z, cb = _data(dtype=dtype)
    fn = jax.jit(lambda z, cb, key: vqjax.vq(z, cb, metric=metric, estimator=estimator, key=key))
    q = fn(z, cb, jax.random.key(0))
    assert isinstance(q, vqjax.Quantized)
    assert q.values.shape == z.shape and q.values.dtype == dtype
    assert q.codes.shape == z.shape[:-1] and q.codes.dtype == jnp.int32
    assert q.loss.shape == () and q.loss.dtype == jnp.float32
    assert {"perplexity", "usage"} <= set(q.metrics)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in q.metrics.values())
    # Under jit, as the other round-trip tests: the suite compiles at XLA opt level 0, where an eager
    # (op-by-op) l2 normalisation may round its last bit differently from the fused one.
    decoded = jax.jit(lambda c, cb: vqjax.vq_decode(c, cb, metric=metric, dtype=dtype))(q.codes, cb)
    np.testing.assert_array_equal(np.asarray(decoded, np.float32), np.asarray(q.values, np.float32))
    if estimator != "gumbel":                    # gumbel samples its codes; the others are the nearest code
        np.testing.assert_array_equal(vqjax.vq_encode(z, cb, metric=metric), q.codes)


@jax.jit
def _round_trip(z, cb):
    q = vqjax.vq(z, cb, chunk_size=16)
    codes = vqjax.vq_encode(z, cb, chunk_size=16)
    return q, codes, vqjax.vq_decode(codes, cb)


@given(n=st.sampled_from([1, 9, 40]), d=st.sampled_from([1, 3, 12]), k=st.sampled_from([1, 16, 70]),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2 ** 16))
def test_round_trip_property(n, d, k, scale, seed):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(n, d)) * scale, jnp.float32)
    cb = jnp.asarray(rng.normal(size=(k, d)) * scale, jnp.float32)
    q, codes, decoded = _round_trip(z, cb)
    np.testing.assert_array_equal(codes, q.codes)
    np.testing.assert_array_equal(decoded, q.values)
    assert np.all((np.asarray(codes) >= 0) & (np.asarray(codes) < k))


def test_ste_gradients_equal_analytic_formula():
    z, cb = _data((6, 8), 20)
    w = jax.random.normal(jax.random.key(1), z.shape)
    beta, cw = 0.3, 0.8

    def objective(z, cb):
        q = vqjax.vq(z, cb, beta=beta, codebook_weight=cw)
        return jnp.sum(w * q.values) + q.loss

    gz, gcb = jax.jit(jax.grad(objective, argnums=(0, 1)))(z, cb)
    codes = np.asarray(vqjax.vq_encode(z, cb))
    q = np.asarray(cb)[codes]
    numel = z.size
    np.testing.assert_allclose(gz, np.asarray(w) + beta * 2 * (np.asarray(z) - q) / numel, rtol=1e-5, atol=1e-7)
    expected_cb = np.zeros_like(np.asarray(cb))
    np.add.at(expected_cb, codes, cw * 2 * (q - np.asarray(z)) / numel)
    np.testing.assert_allclose(gcb, expected_cb, rtol=1e-5, atol=1e-7)


def test_rotation_gradient_in_vq():
    z, cb = _data((6, 8), 20)
    w = jax.random.normal(jax.random.key(1), z.shape)
    gz = jax.grad(lambda z: jnp.sum(w * vqjax.vq(z, cb, estimator="rotation", beta=0.0).values))(z)
    q = cb[vqjax.vq_encode(z, cb)]
    expected = jax.grad(lambda z: jnp.sum(w * vqjax.rotation_trick(z, q)))(z)
    np.testing.assert_allclose(gz, expected, rtol=1e-6)


def test_gumbel_gradient_reaches_codebook_and_needs_key():
    z, cb = _data((6, 8), 20)
    g = jax.grad(lambda cb: jnp.sum(vqjax.vq(z, cb, estimator="gumbel", key=jax.random.key(0),
                                             codebook_weight=0.0, beta=0.0).values ** 2))(cb)
    assert np.all(np.isfinite(g)) and np.count_nonzero(np.abs(np.asarray(g)).sum(-1)) > 6
    with pytest.raises(ValueError, match="estimator='gumbel' samples codes and needs key"):
        vqjax.vq(z, cb, estimator="gumbel")


def test_entropy_term_is_added_with_its_weight():
    z, cb = _data()
    plain = vqjax.vq(z, cb)
    reg = vqjax.vq(z, cb, entropy_weight=0.5, entropy_temperature=2.0, diversity_weight=0.3)
    terms = vqjax.regularizers.entropy_loss(z, cb, temperature=2.0, diversity_weight=0.3)
    np.testing.assert_allclose(reg.loss, plain.loss + 0.5 * terms.loss, rtol=1e-6)
    np.testing.assert_allclose(reg.metrics["codebook_entropy"], terms.codebook_entropy, rtol=1e-6)


def test_cosine_values_are_unit_vectors():
    z, cb = _data()
    q = vqjax.vq(z, cb, metric="cosine")
    np.testing.assert_allclose(jnp.linalg.norm(q.values, axis=-1), 1.0, rtol=1e-6)


def test_metrics_values():
    cb = jnp.eye(4)
    z = jnp.array([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1.0, 0, 0]])
    q = vqjax.vq(z, cb)
    np.testing.assert_allclose(q.metrics["usage"], 0.5)
    p = np.array([2 / 3, 1 / 3])
    np.testing.assert_allclose(q.metrics["perplexity"], np.exp(-(p * np.log(p)).sum()), rtol=1e-6)


def test_vmap_and_no_recompilation(trace_counter):
    z, cb = _data((3, 7, 8))
    batched = jax.vmap(lambda z: vqjax.vq(z, cb).values)(z)
    np.testing.assert_array_equal(batched, vqjax.vq(z, cb).values)
    fn = trace_counter(lambda z, cb: vqjax.vq(z, cb, estimator="rotation"))
    jitted = jax.jit(fn)
    jitted(z, cb)
    jitted(z * 2.0, cb + 1.0)
    assert fn.traces == 1


def test_check_finite_eager_and_jit():
    z, cb = _data()
    bad = z.at[0, 0, 0].set(jnp.nan)
    with pytest.raises(NonFiniteError, match="vq: z contains 1 non-finite values"):
        vqjax.vq(bad, cb, check_finite=True)
    with pytest.raises(Exception, match="vq: codebook contains 1 non-finite values"):
        jax.jit(lambda z, cb: vqjax.vq(z, cb, check_finite=True).values)(z, cb.at[1, 1].set(jnp.inf)) \
            .block_until_ready()
    q = jax.jit(lambda z, cb: vqjax.vq(z, cb, check_finite=True).values)(z, cb)   # finite input passes
    assert np.all(np.isfinite(q))


@pytest.mark.parametrize("args,kwargs,err,match", [
    ((jnp.ones((4, 3)), jnp.ones((5, 4))), {}, ValueError, r"codebook must have D = 3.*\(5, 4\)"),
    ((jnp.ones((4, 3), jnp.int32), jnp.ones((5, 3))), {}, TypeError, "z must be a floating-point array.*int32"),
    ((jnp.ones((4, 3), jnp.complex64), jnp.ones((5, 3))), {}, TypeError, "complex"),
    ((jnp.float32(2.0), jnp.ones((5, 1))), {}, ValueError, "rank >= 1.*rank-0"),
    ((jnp.ones((4, 3)), jnp.ones((2, 5, 3))), {}, ValueError, r"rank 2, shape \[K, D\]"),
    ((jnp.ones((4, 3)), jnp.ones((0, 3))), {}, ValueError, "at least one code"),
    ((jnp.ones((4, 3)), jnp.ones((5, 3))), {"metric": "dot"}, ValueError, "metric must be one of"),
    ((jnp.ones((4, 3)), jnp.ones((5, 3))), {"estimator": "reinforce"}, ValueError,
     r"estimator must be one of \('ste', 'rotation', 'gumbel'\); got 'reinforce'"),
    ((jnp.ones((4, 3)), jnp.ones((5, 3))), {"beta": -1.0}, ValueError, "beta must be a finite non-negative"),
    ((jnp.ones((4, 3)), jnp.ones((5, 3))), {"entropy_temperature": 0.0}, ValueError,
     "entropy_temperature must be > 0"),
    ((jnp.ones((4, 3)), jnp.ones((5, 3))), {"chunk_size": -2}, ValueError, "chunk_size must be a positive int"),
])
def test_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        vqjax.vq(*args, **kwargs)


def test_decode_refuses_out_of_range_codes():
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 5\); got values in \[-1, 2\]"):
        vqjax.vq_decode(jnp.array([0, 2, -1]), jnp.ones((5, 3)))
    with pytest.raises(TypeError, match="integer array"):
        vqjax.vq_decode(jnp.array([0.0, 1.0]), jnp.ones((5, 3)))
