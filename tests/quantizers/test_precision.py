"""bf16 in, float32 inside: for every family, a bf16 input gives exactly the codes of its float32 cast (the
quantizer's arithmetic runs on the cast, so not even ties can differ) and values in bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vqjax

Z = jax.random.normal(jax.random.key(0), (64, 8))
BOOKS = jax.random.normal(jax.random.key(1), (3, 32, 8))

FAMILIES = {
    "vq": lambda z: vqjax.vq(z, BOOKS[0]),
    "vq_cosine": lambda z: vqjax.vq(z, BOOKS[0], metric="cosine"),
    "rvq": lambda z: vqjax.rvq(z, BOOKS * 0.5, beam_width=2),
    "pq": lambda z: vqjax.pq(z, BOOKS[:, :, :4].reshape(2, 48, 4)[:, :32]),
    "aq": lambda z: vqjax.aq(z, BOOKS * 0.5, beam_width=2),
    "fsq": lambda z: vqjax.fsq(z, (8, 5, 5, 5, 4, 4, 3, 3)),
    "lfq": lambda z: vqjax.lfq(z),
    "bsq": lambda z: vqjax.bsq(z),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bf16_input_gives_the_codes_of_its_float32_cast(name):
    fn = jax.jit(FAMILIES[name])
    z16 = Z.astype(jnp.bfloat16)
    low, cast = fn(z16), fn(z16.astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(low.codes), np.asarray(cast.codes))
    assert low.values.dtype == jnp.bfloat16 and low.codes.dtype == jnp.int32 and low.loss.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(low.values, np.float32),
                                  np.asarray(cast.values.astype(jnp.bfloat16), np.float32))
