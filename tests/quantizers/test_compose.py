"""The residual and grouped combinators: any family's encode/decode composes into its residual and grouped forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vqjax
from vqjax.quantizers.compose import grouped, grouped_decode, grouped_encode, residual_decode, residual_encode


def test_residual_combinator_over_a_toy_family_matches_numpy():
    """Rounding to a grid of step ``s_l`` per level: codes and sums against a plain numpy loop."""
    x = jax.random.normal(jax.random.key(0), (20, 3)) * 4
    steps = jnp.asarray([1.0, 0.25, 0.0625])
    encode = lambda r, s: jnp.clip(jnp.round(r[:, 0] / s), -20, 20).astype(jnp.int32) + 20
    decode = lambda c, s: jnp.stack([(c - 20).astype(jnp.float32) * s, jnp.zeros_like(c, jnp.float32),
                                     jnp.zeros_like(c, jnp.float32)], -1)
    codes = jax.jit(lambda x: residual_encode(encode, decode, x, steps))(x)
    r, expected = np.asarray(x, np.float64)[:, 0].copy(), []
    for s in np.asarray(steps, np.float64):
        c = np.clip(np.round(r / s), -20, 20)
        expected.append(c + 20)
        r = r - c * s
    np.testing.assert_array_equal(codes, np.stack(expected, -1))
    total = residual_decode(decode, codes, steps, 3)
    np.testing.assert_allclose(total[:, 0], np.sum((np.stack(expected, -1) - 20) * np.asarray(steps), -1), rtol=1e-6)
    dropped = residual_decode(decode, codes.at[:, 2].set(-1), steps, 3)        # -1: level absent
    np.testing.assert_allclose(dropped[:, 0], total[:, 0] - (codes[:, 2] - 20) * steps[2], rtol=1e-5, atol=1e-6)


def test_residual_vq_is_the_combinator_over_nearest_code_search():
    x = jax.random.normal(jax.random.key(1), (30, 4))
    books = jax.random.normal(jax.random.key(2), (3, 16, 4))
    codes = residual_encode(lambda r, c: vqjax.vq_encode(r, c), lambda k, c: c[k], x, books)
    np.testing.assert_array_equal(vqjax.rvq_encode(x, books), codes)
    np.testing.assert_array_equal(vqjax.rvq_decode(codes, books), residual_decode(lambda k, c: c[k], codes, books, 4))


@pytest.mark.parametrize("family", ["fsq", "lfq", "bsq"])
def test_grouped_forms_round_trip_and_equal_the_family_per_group(family):
    z = jax.random.normal(jax.random.key(3), (5, 7, 12))
    if family == "fsq":
        q = vqjax.grouped_fsq(z, (5, 4, 3), 4)
        codes, values = vqjax.grouped_fsq_encode(z, (5, 4, 3), 4), vqjax.grouped_fsq_decode(q.codes, (5, 4, 3))
        per_group = [vqjax.fsq(z[..., 3 * g:3 * g + 3], (5, 4, 3)) for g in range(4)]
    elif family == "lfq":
        q = vqjax.grouped_lfq(z, 4)
        codes, values = vqjax.grouped_lfq_encode(z, 4), vqjax.grouped_lfq_decode(q.codes, 3)
        per_group = [vqjax.lfq(z[..., 3 * g:3 * g + 3]) for g in range(4)]
    else:
        q = vqjax.grouped_bsq(z, 4)
        codes, values = vqjax.grouped_bsq_encode(z, 4), vqjax.grouped_bsq_decode(q.codes, 3)
        per_group = [vqjax.bsq(z[..., 3 * g:3 * g + 3]) for g in range(4)]
    assert q.codes.shape == (5, 7, 4) and q.values.shape == z.shape
    np.testing.assert_array_equal(codes, q.codes)
    np.testing.assert_array_equal(values, q.values)
    for g, ref in enumerate(per_group):
        np.testing.assert_array_equal(q.codes[..., g], ref.codes)
        np.testing.assert_allclose(q.values[..., 3 * g:3 * g + 3], ref.values, rtol=1e-6)
    with pytest.raises(ValueError, match="num_groups must divide"):
        grouped(vqjax.lfq, z, 5, name="grouped_lfq")
    np.testing.assert_array_equal(grouped_encode(vqjax.lfq_encode, z, 4, name="g"), vqjax.grouped_lfq_encode(z, 4))
    np.testing.assert_array_equal(grouped_decode(vqjax.lfq_decode, vqjax.grouped_lfq_encode(z, 4), 3),
                                  vqjax.grouped_lfq_decode(vqjax.grouped_lfq_encode(z, 4), 3))
