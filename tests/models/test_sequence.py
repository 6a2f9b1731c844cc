"""The sequence tokenizer: encode/decode agree with the call, normalisation travels in the model, multi-scale
residual codes, the spectral loss against hand-made cases, the Transformer blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import sequence_tokenizer
from vqjax.models.sequence import LatentTransformer, MultiScaleResidual, patch_spectrum, spectral_loss

MEAN = [1.0, -2.0, 0.5]
SCALE = [2.0, 0.5, 3.0]


def _model(**kw):
    args = dict(channels=8, strides=(2, 2), latent_dim=8, signal_channels=3, mean=MEAN, scale=SCALE,
                quantizer="vq", quantizer_kwargs=dict(codebook_size=32))
    args.update(kw)
    return sequence_tokenizer(**args)


def _init(model, t=32):
    x = jax.random.normal(jax.random.key(0), (2, t, 3)) * jnp.array(SCALE) + jnp.array(MEAN)
    return model.init({"params": jax.random.key(1), "vq": jax.random.key(2)}, x), x


@pytest.mark.parametrize("kw, codes_shape", [
    (dict(), (2, 8)),
    (dict(quantizer="rvq", quantizer_kwargs=dict(codebook_size=32, num_levels=3)), (2, 8, 3)),
    (dict(quantizer="fsq", quantizer_kwargs=dict(levels=(5, 5, 5)), latent_dim=3, scales=(4, 2, 1),
          transformer_layers=1), (2, 2 + 4 + 8)),
])
def test_encode_decode_agree_with_the_call(kw, codes_shape):
    model = _model(**kw)
    variables, x = _init(model)
    xn = model.apply(variables, x, method=model.normalize)
    np.testing.assert_allclose(xn, (x - jnp.array(MEAN)) / jnp.array(SCALE), rtol=1e-6, atol=1e-6)
    recon, q = jax.jit(lambda v, a: model.apply(v, a))(variables, xn)
    codes = jax.jit(lambda v, a: model.apply(v, a, method=model.encode))(variables, x)
    assert codes.shape == codes_shape and codes.dtype == jnp.int32
    np.testing.assert_array_equal(codes, q.codes)
    decoded = model.apply(variables, codes, method=model.decode)       # raw units: the call's output denormalised
    np.testing.assert_allclose(decoded, recon * jnp.array(SCALE) + jnp.array(MEAN), rtol=1e-5, atol=1e-5)


def test_fewer_residual_levels_reconstruct_from_the_first_codes():
    model = _model(quantizer="rvq", quantizer_kwargs=dict(codebook_size=32, num_levels=3))
    variables, x = _init(model)
    xn = model.apply(variables, x, method=model.normalize)
    codes = model.apply(variables, x, method=model.encode)
    one, all_codes = model.apply(variables, xn, 1, method=model.reconstruct)
    np.testing.assert_array_equal(all_codes, codes)
    manual = model.apply(variables, codes.at[..., 1:].set(-1), method=model.decode)
    np.testing.assert_allclose(model.apply(variables, one, method=model.denormalize), manual, rtol=1e-5, atol=1e-5)
    assert not np.allclose(one, model.apply(variables, xn, None, method=model.reconstruct)[0])


def test_multiscale_residual_quantizes_coarse_to_fine():
    from vqjax import nn as vqnn

    quant = MultiScaleResidual((vqnn.VectorQuantizer(dim=2, codebook_size=4),
                                vqnn.VectorQuantizer(dim=2, codebook_size=4)), (4, 1))
    z = jax.random.normal(jax.random.key(3), (1, 8, 2))
    variables = jax.jit(quant.init)({"params": jax.random.key(4), "vq": jax.random.key(5)}, z)
    q = quant.apply(variables, z)
    assert q.codes.shape == (1, 2 + 8)
    # the coarse scale quantizes the mean of 4 frames; its value repeats over those frames
    coarse = quant.apply(variables, q.codes[:, :2], method=lambda m, c: m.quantizers[0].decode(c))
    fine = quant.apply(variables, q.codes[:, 2:], method=lambda m, c: m.quantizers[1].decode(c))
    np.testing.assert_allclose(q.values, jnp.repeat(coarse, 4, axis=1) + fine, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(quant.apply(variables, q.codes, method=quant.decode), q.values, atol=1e-6)
    with pytest.raises(ValueError, match="not a whole number of latent frames"):
        quant.apply(variables, q.codes[:, :7], method=quant.decode)
    with pytest.raises(ValueError, match="every scale must divide the latent frames"):
        quant.apply(variables, z[:, :6])


def test_spectral_loss_hand_made_cases():
    t = np.arange(64)
    x = np.stack([np.sin(2 * np.pi * 4 * t / 16), np.cos(2 * np.pi * 2 * t / 16)], axis=-1)[None].astype(np.float32)
    assert float(spectral_loss(jnp.asarray(x), jnp.asarray(x), 16)) == pytest.approx(0.0, abs=1e-6)
    amp, phase = patch_spectrum(jnp.asarray(x), 16)
    assert amp.shape == (1, 4, 2, 9)
    assert float(amp[0, 0, 0, 4]) == pytest.approx(8.0, rel=1e-4)           # sin at bin 4 of 16: amplitude 16 / 2
    # a sign flip keeps every amplitude and turns every phase by pi: 1 - cos(pi) = 2, weighted to 2 per patch
    assert float(spectral_loss(jnp.asarray(-x), jnp.asarray(x), 16)) == pytest.approx(2.0, rel=1e-4)
    # twice the amplitude: only the amplitude term, |2a - a| averaged over bins
    doubled = float(spectral_loss(jnp.asarray(2 * x), jnp.asarray(x), 16))
    assert doubled == pytest.approx(float(jnp.mean(amp)) / 4.0, rel=1e-4)
    grad = jax.grad(lambda r: spectral_loss(r, jnp.asarray(x), 16))(jnp.asarray(x * 0.5))
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
    # empty bins (a constant reconstruction has no energy but at 0 Hz): the gradient stays finite
    flat = jax.grad(lambda r: spectral_loss(r, jnp.asarray(x), 16))(jnp.zeros_like(jnp.asarray(x)))
    assert np.isfinite(np.asarray(flat)).all()
    with pytest.raises(ValueError, match="multiple of the patch"):
        spectral_loss(jnp.asarray(x[:, :60]), jnp.asarray(x[:, :60]), 16)


def test_latent_transformer_is_a_residual_stack():
    h = jax.random.normal(jax.random.key(6), (2, 5, 3))
    zero = LatentTransformer(0)
    assert zero.apply(zero.init(jax.random.key(0), h), h) is h
    two = LatentTransformer(2, width=16, num_heads=4)
    params = jax.jit(two.init)(jax.random.key(0), h)
    out = two.apply(params, h)
    assert out.shape == h.shape and not np.allclose(out, h)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        LatentTransformer(1, width=10, num_heads=4).init(jax.random.key(0), h)


def test_the_builder_refuses_mismatched_statistics():
    with pytest.raises(ValueError, match="one value per channel \\(3\\)"):
        _model(mean=[0.0, 0.0])
    with pytest.raises(ValueError, match="scales must be positive"):
        _model(scales=(2, 0))
