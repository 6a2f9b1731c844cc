"""Convolutional tokenizers and the quantizer registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import nn as vqnn
from vqjax.models import Decoder, Encoder, ImageTokenizer, make_quantizer, quantizer_vocab_size, register_quantizer


@pytest.mark.parametrize("mult,size,out", [((1, 2, 2), 28, 7), ((1, 2), 32, 16), ((1, 1, 2, 2), 32, 4)])
def test_encoder_decoder_shapes(mult, size, out):
    enc, dec = Encoder(8, mult, 1, 6), Decoder(8, mult, 1, 3)
    x = jnp.zeros((2, size, size, 3))
    z, _ = enc.init_with_output(jax.random.key(0), x)
    assert z.shape == (2, out, out, 6)
    y, _ = dec.init_with_output(jax.random.key(1), z)
    assert y.shape == x.shape and y.dtype == jnp.float32


@pytest.mark.parametrize("name,kwargs,vocab,codes_tail", [
    ("vq", dict(codebook_size=32), 32, ()),
    ("fsq", dict(levels=[4, 4, 3]), 48, ()),
    ("lfq", dict(bits=5), 32, ()),
    ("bsq", dict(bits=6), 64, ()),
    ("rvq", dict(num_levels=3, codebook_size=16), 16, (3,)),
    ("pq", dict(num_groups=2, codebook_size=16), 16, (2,)),
])
def test_tokenizer_encode_decode_matches_the_forward_pass(name, kwargs, vocab, codes_tail):
    q = make_quantizer(name, 8, kwargs)
    assert quantizer_vocab_size(q) == vocab
    model = ImageTokenizer(Encoder(8, (1, 2), 1, 8), q, Decoder(8, (1, 2), 1, 1))
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    variables = jax.jit(model.init)({"params": jax.random.key(1), "vq": jax.random.key(2)}, x)
    recon, quantized = model.apply(variables, x)
    codes = model.apply(variables, x, method=model.encode)
    assert codes.shape == (2, 4, 4) + codes_tail and codes.dtype == jnp.int32
    np.testing.assert_array_equal(codes, quantized.codes)
    np.testing.assert_allclose(model.apply(variables, codes, method=model.decode), recon, atol=1e-5)


def test_registry_refuses_duplicates_unknown_names_and_fields():
    with pytest.raises(ValueError, match="already registered"):
        register_quantizer("vq", vqnn.VectorQuantizer)
    with pytest.raises(ValueError, match="quantizer must be one of"):
        make_quantizer("vqq", 8, {})
    with pytest.raises(ValueError, match=r"has no field\(s\) \['codebook_sise'\]"):
        make_quantizer("vq", 8, dict(codebook_sise=4))
    with pytest.raises(ValueError, match=r"needs field\(s\) \['codebook_size'\]"):
        make_quantizer("vq", 8, {})
