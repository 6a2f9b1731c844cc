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


def test_group_norm_keeps_enough_values_per_group_on_tiny_maps():
    from vqjax.models.autoencoder import group_count

    # 7x7 and larger maps keep up to 32 groups (trained checkpoints compute as before)
    assert [group_count(c, positions=p) for c, p in ((16, 784), (64, 49), (128, 49), (64, 16))] == [16, 32, 32, 32]
    # a 2x2 or 1x1 map: at least 16 values a group, not pairs of numbers normalised to +-1
    assert group_count(64, positions=4) == 16 and group_count(64, positions=1) == 4 and group_count(8, positions=1) == 1


def test_images_the_downsampling_does_not_divide_are_padded_and_cropped():
    from vqjax.models import image_tokenizer

    model = image_tokenizer(channels=4, channel_mult=(1, 2, 2), num_res_blocks=1, latent_dim=4,
                            image_channels=1, quantizer="fsq", quantizer_kwargs={"levels": [5, 5, 5, 5]},
                            image_size=(14, 14))
    x = jax.random.uniform(jax.random.key(0), (2, 14, 14, 1))
    variables = model.init({"params": jax.random.key(1)}, x)
    recon, q = model.apply(variables, x)
    assert recon.shape == x.shape and q.codes.shape == (2, 4, 4)      # 14 -> 16 -> a 4x4 grid
    z = model.apply(variables, x, method=lambda m, v: m.encoder(v))
    padded = jnp.pad(x, ((0, 0), (0, 2), (0, 2), (0, 0)))
    np.testing.assert_allclose(np.asarray(z), np.asarray(model.apply(variables, padded,
                                                                      method=lambda m, v: m.encoder(v))), atol=1e-6)
    # the decoder's crop is its last step: the explicit last layer reproduces it
    (out, _, h) = model.apply(variables, x, return_features=True)
    last = model.last_layer_params(variables["params"])
    np.testing.assert_allclose(np.asarray(model.decoder.apply_last_layer(last, h)), np.asarray(out), atol=1e-6)
    # as an artifact: the spec's image_size rebuilds the crop, codes round trip through export and load
    import vqjax

    spec = {"modality": "image", "input": {"shape": [14, 14, 1], "dtype": "float32", "range": [0.0, 1.0]},
            "model": {"name": "image_tokenizer", "kwargs": dict(
                channels=4, channel_mult=[1, 2, 2], num_res_blocks=1, latent_dim=4, image_channels=1, quantizer="fsq",
                quantizer_kwargs={"levels": [5, 5, 5, 5]}, image_size=[14, 14])},
            "codes_shape": [4, 4], "vocab_size": 625}
    import tempfile

    tok = vqjax.Tokenizer.load(vqjax.Tokenizer(spec, model, dict(variables)).export(tempfile.mkdtemp()))
    codes = tok.encode(np.asarray(x))
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(q.codes))
    assert np.asarray(tok.decode(codes)).shape == (2, 14, 14, 1)
