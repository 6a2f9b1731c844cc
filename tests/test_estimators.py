"""Estimators: exact forward values and custom_vjp gradients equal to their analytic formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vqjax


def _rand(key, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32).astype(dtype)


@pytest.mark.parametrize("estimator", [vqjax.straight_through, vqjax.rotation_trick])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_is_q_exactly(estimator, dtype):
    z, q = _rand(0, (5, 3, 8), dtype), _rand(1, (5, 3, 8), jnp.float32)
    out = jax.jit(estimator)(z, q)
    assert out.dtype == dtype and out.shape == z.shape
    np.testing.assert_array_equal(np.asarray(out), np.asarray(q.astype(dtype)))


def test_straight_through_gradient_is_identity():
    z, q, w = _rand(0, (4, 6)), _rand(1, (4, 6)), _rand(2, (4, 6))
    gz, gq = jax.jit(jax.grad(lambda z, q: jnp.sum(w * vqjax.straight_through(z, q)), argnums=(0, 1)))(z, q)
    np.testing.assert_array_equal(gz, w)
    np.testing.assert_array_equal(gq, jnp.zeros_like(q))


def _rotation_matrix(e, qh):
    """Dense R = I - 2 r rᵀ + 2 q̂ eᵀ with r = (e + q̂)/|e + q̂| (the paper's formula, built explicitly)."""
    r = (e + qh) / np.linalg.norm(e + qh)
    return np.eye(e.size) - 2 * np.outer(r, r) + 2 * np.outer(qh, e)


def test_rotation_trick_gradient_matches_dense_formula():
    z, q, w = (np.asarray(_rand(i, (7, 5)), np.float64) for i in range(3))
    gz = jax.jit(jax.grad(lambda z: jnp.sum(jnp.asarray(w, jnp.float32) * vqjax.rotation_trick(z, jnp.asarray(
        q, jnp.float32)))))(jnp.asarray(z, jnp.float32))
    for i in range(z.shape[0]):
        nz, nq = np.linalg.norm(z[i]), np.linalg.norm(q[i])
        rot = _rotation_matrix(z[i] / nz, q[i] / nq)
        np.testing.assert_allclose(rot @ (z[i] / nz), q[i] / nq, atol=1e-12)       # R takes e to q̂
        np.testing.assert_allclose(rot.T @ rot, np.eye(5), atol=1e-12)             # R is orthogonal
        np.testing.assert_allclose(gz[i], (nq / nz) * rot.T @ w[i], rtol=1e-5, atol=1e-6)


def test_rotation_trick_q_gets_no_gradient_and_antipodal_is_finite():
    z = jnp.array([[1.0, 2.0, -0.5]])
    q = -3.0 * z                                     # e = -q̂: r undefined, reflection used instead
    w = jnp.array([[0.3, -1.0, 2.0]])
    gz, gq = jax.grad(lambda z, q: jnp.sum(w * vqjax.rotation_trick(z, q)), argnums=(0, 1))(z, q)
    assert np.all(np.isfinite(gz))
    np.testing.assert_array_equal(gq, 0.0)
    e = np.asarray(z[0]) / np.linalg.norm(z[0])
    reflection = np.eye(3) - 2 * np.outer(e, e)
    np.testing.assert_allclose(gz[0], 3.0 * reflection.T @ np.asarray(w[0]), rtol=1e-5)


def test_rotation_trick_bf16_gradient_dtype():
    z, q = _rand(0, (4, 8), jnp.bfloat16), _rand(1, (4, 8), jnp.bfloat16)
    g = jax.grad(lambda z: jnp.sum(vqjax.rotation_trick(z, q).astype(jnp.float32)))(z)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_value_and_gradient(hard):
    logits, w = _rand(0, (6, 10)), _rand(1, (6, 10))
    key, tau = jax.random.key(3), 0.7
    y = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau)
    out = jax.jit(lambda l: vqjax.gumbel_softmax(l, key, temperature=tau, hard=hard))(logits)
    if hard:
        np.testing.assert_array_equal(out, jax.nn.one_hot(jnp.argmax(y, -1), 10))
    else:
        np.testing.assert_allclose(out, y, rtol=1e-6)
    g = jax.grad(lambda l: jnp.sum(w * vqjax.gumbel_softmax(l, key, temperature=tau, hard=hard)))(logits)
    expected = y * (w - jnp.sum(w * y, -1, keepdims=True)) / tau   # softmax VJP of the soft sample
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-6)


def test_estimators_refuse_bad_input():
    with pytest.raises(ValueError, match="q must have the shape of z"):
        vqjax.straight_through(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(TypeError, match="z must be a floating-point array.*int32"):
        vqjax.rotation_trick(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="temperature must be a positive number; got 0"):
        vqjax.gumbel_softmax(jnp.ones((2, 3)), jax.random.key(0), temperature=0)
