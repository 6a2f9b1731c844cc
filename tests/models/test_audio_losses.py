"""Waveform losses against independent references: the STFT against scipy's, mel filters' placement and area,
SI-SDR's closed form and scale invariance; the losses vanish on identical signals and have finite gradients;
the discriminators' shapes and losses against their formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from vqjax.models.audio import discriminators as audio_gan, losses as L
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


def _spectra(seed=0, shape=(2, 30, 40)):
    """Complex spectra with magnitudes in [0.5, 1] (far above the loss's floor) and random phases."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.0, shape) * np.exp(2j * np.pi * rng.random(shape))).astype(np.complex64)


def _weights(ref):
    w = np.abs(ref)
    return w / w.sum(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("theta", [0.5, 2.0, np.pi])
def test_phase_loss_of_a_constant_offset_is_two_minus_two_cos(theta):
    """Every bin turned by theta: the instantaneous-phase term is 2 - 2 cos(theta) and the differences (group
    delay, instantaneous frequency) agree exactly; the amplitude and a turn by 2 pi do not count."""
    ref = _spectra()
    loss = jax.jit(L.phase_loss)
    assert float(loss(ref * np.exp(1j * theta), ref)) == pytest.approx(2 - 2 * np.cos(theta), rel=1e-4)
    assert float(loss(ref * 3.0 * np.exp(2j * np.pi), ref)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("axis", [1, 2])
def test_phase_loss_of_a_linear_phase_ramp(axis):
    """Phase ramps: ``omega t`` over frames (a wrong frequency) or ``tau k`` over bins (a time shift). The
    instantaneous-phase term is the weighted 2 - 2 cos of the ramp; the difference along that axis is off by
    omega everywhere (2 - 2 cos(omega) times the geometric-mean weights) and the other one agrees."""
    ref, omega = _spectra(1), 0.7
    index = np.arange(ref.shape[axis]).reshape((-1, 1) if axis == 1 else (1, -1))
    pred = ref * np.exp(1j * omega * index)
    w = _weights(ref)
    pair = np.sqrt(w[:, 1:] * w[:, :-1]) if axis == 1 else np.sqrt(w[:, :, 1:] * w[:, :, :-1])
    expected = (w * (2 - 2 * np.cos(omega * index))).sum(axis=(1, 2)) + (2 - 2 * np.cos(omega)) * pair.sum(axis=(1, 2))
    assert float(L.phase_loss(pred, ref)) == pytest.approx(float(expected.mean()), rel=1e-4)


def test_phase_loss_weights_by_the_reference_and_stays_finite_at_zero():
    """Bins where the reference is silent (below the floor) cost nothing whatever their phase, and the gradient
    at an all-zero prediction is finite."""
    ref = _spectra(2)
    ref[:, :, 20:] = 0
    noisy = ref.copy()
    noisy[:, :, 20:] = _spectra(3)[:, :, 20:]
    assert float(L.phase_loss(noisy, ref)) == pytest.approx(0.0, abs=1e-5)
    g = jax.grad(lambda re: L.phase_loss(jax.lax.complex(re, re), jnp.asarray(ref)))(jnp.zeros(ref.shape))
    assert bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="one shape"):
        L.phase_loss(ref[:, :10], ref)


def _voiced(f0, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return sum(np.cos(2 * np.pi * k * f0 * t + 0.3 * k) / k for k in range(1, int(7000 / f0)))


@pytest.mark.parametrize("f0", [70.0, 123.4, 220.0, 410.0])
def test_pitch_track_finds_the_period_of_a_harmonic_signal(f0):
    from vqjax.models.audio import frame_signal

    x = np.stack([_voiced(f0), np.zeros(8000), np.random.default_rng(0).normal(size=8000)]).astype(np.float32)
    frames, _ = frame_signal(jnp.asarray(x), 640, 160)
    pitch, voiced = jax.jit(functools.partial(L.pitch_track, min_pitch=50 / 16000, max_pitch=550 / 16000))(frames)
    np.testing.assert_allclose(np.asarray(pitch[0, 4:]) * 16000, f0, rtol=3e-3)
    assert np.asarray(voiced[0, 4:]).all()
    assert not np.asarray(voiced[1]).any()                                 # silence
    assert np.asarray(voiced[2]).mean() < 0.1                              # white noise
    with pytest.raises(ValueError, match="no period range"):
        L.pitch_track(frames[..., :40], 50 / 16000, 550 / 16000)


def test_pitch_loss_formula():
    pitch = jnp.array([[0.01, 0.02, 0.03]])
    target = jnp.array([[0.01, 0.01, 0.06]])
    voiced = jnp.array([[1.0, 1.0, 0.0]])
    logits = jnp.array([[2.0, -1.0, 0.5]])
    bce = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0)), np.log1p(np.exp(0.5))])
    assert float(L.pitch_loss(pitch, logits, target, voiced)) == pytest.approx(np.log(2.0) / 2 + bce, rel=1e-5)


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
