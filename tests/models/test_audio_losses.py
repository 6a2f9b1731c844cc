"""Waveform losses against independent references: the STFT against scipy's, mel filters' placement and area,
SI-SDR's closed form and scale invariance; the losses vanish on identical signals and have finite gradients;
the discriminators' shapes and losses against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from vqjax.models import audio_gan, audio_losses as L
from vqjax.models.vqgan import discriminator_loss, generator_loss


def _noise(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 0.3


@pytest.mark.parametrize("n_fft", [32, 256])
def test_stft_matches_scipy(n_fft):
    x = _noise((2, 1000))
    ours = np.asarray(L.stft(x, n_fft))
    hop = n_fft // 4
    _, _, ref = scipy.signal.stft(x, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary="even",
                                  padded=False, axis=-1)
    ref = np.swapaxes(ref, 1, 2) * np.hanning(n_fft + 1)[:-1].sum()       # scipy divides by the window's sum
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(L.stft(x, n_fft, xp=np), ours, rtol=1e-4, atol=1e-4)


def test_mel_filters_sit_on_the_mel_scale_with_unit_area():
    fb = L.mel_filterbank(16000, 2048, 40)
    freqs = np.linspace(0, 8000, 1025)
    assert fb.shape == (1025, 40) and (fb >= 0).all()
    mel = 2595 * np.log10(1 + freqs[np.argmax(fb, axis=0)] / 700)
    assert np.all(np.diff(mel) > 0)
    np.testing.assert_allclose(np.diff(mel), np.diff(mel).mean(), atol=10)        # evenly spaced in mel
    area = fb.sum(0) * (freqs[1] - freqs[0])
    np.testing.assert_allclose(area[5:], 1.0, rtol=0.03)          # the narrow low filters are too coarsely sampled


def test_si_sdr_closed_form_and_scale_invariance():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(1, 4000))
    s -= s.mean()
    n = rng.normal(size=(1, 4000))
    n -= n.mean()
    n -= (n @ s.T) / (s @ s.T) * s                    # orthogonal to s
    n *= np.sqrt(0.01 * (s ** 2).sum() / (n ** 2).sum())        # 20 dB under
    assert float(L.si_sdr(s, s + n)[0]) == pytest.approx(20.0, abs=1e-3)
    assert float(L.si_sdr(s, 5 * (s + n))[0]) == pytest.approx(20.0, abs=1e-3)
    assert float(L.si_sdr(s, s + n, xp=np)[0]) == pytest.approx(20.0, abs=1e-3)
    mask = np.concatenate([np.ones((1, 2000)), np.zeros((1, 2000))], 1)
    junk = np.where(mask > 0, s + n, 9.0)
    assert float(L.si_sdr(s, junk, mask)[0]) == pytest.approx(float(L.si_sdr(s[:, :2000], (s + n)[:, :2000])[0]),
                                                              abs=1e-3)


def test_losses_vanish_on_identical_signals_and_have_gradients():
    x = jnp.asarray(_noise((2, 4000, 1)))
    y = jnp.asarray(_noise((2, 4000, 1), 1))
    for loss in (lambda a, b: L.multiscale_mel_loss(a, b, 16000), L.multiresolution_stft_loss, L.l1_loss):
        fn = jax.jit(loss)                     # compiled once: op by op, the gradient alone took 20 s
        assert float(fn(x, x)) == pytest.approx(0.0, abs=1e-6)
        assert float(fn(y, x)) > 0.1
        g = jax.jit(jax.grad(lambda a: loss(a, x)))(y)
        assert g.shape == y.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    assert float(L.multiscale_mel_loss(x, y, 16000)) == pytest.approx(float(L.multiscale_mel_loss(y, x, 16000)),
                                                                       rel=1e-6)
    with pytest.raises(ValueError, match="mono"):
        L.l1_loss(jnp.zeros((2, 10, 2)), jnp.zeros((2, 10, 2)))
    with pytest.raises(ValueError, match="equal length"):
        L.multiscale_mel_loss(x, y, 16000, windows=(32, 64), bands=(5,))


def test_discriminators_and_their_losses():
    disc = audio_gan.AudioDiscriminators(periods=(2, 3), fft_sizes=(64,), channels=4)
    x = jnp.asarray(_noise((2, 1200, 1)))
    params = jax.jit(disc.init)(jax.random.key(0), x)
    apply = jax.jit(disc.apply)                     # compiled once (op by op this test took 15 s)
    real, fake = apply(params, x), apply(params, 0.5 * x)
    assert len(real) == 3
    assert real[0][0].shape[:1] == (2,) and real[0][0].shape[2] == 2 and len(real[0][1]) == 5
    assert real[1][0].shape[2] == 3
    want = np.mean([discriminator_loss(r, f, "hinge") for (r, _), (f, _) in zip(real, fake)])
    assert float(audio_gan.discriminator_losses(real, fake, "hinge")) == pytest.approx(float(want), rel=1e-6)
    want_g = np.mean([generator_loss(f, "non_saturating") for f, _ in fake])
    assert float(audio_gan.generator_losses(fake, "non_saturating")) == pytest.approx(float(want_g), rel=1e-6)
    assert float(audio_gan.feature_matching(real, real)) == 0.0
    assert float(audio_gan.feature_matching(real, fake)) > 0
    g = jax.jit(jax.grad(lambda y: audio_gan.feature_matching(real, disc.apply(params, y))))(0.5 * x)
    assert bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="mono"):
        disc.apply(params, jnp.zeros((2, 1200, 2)))
