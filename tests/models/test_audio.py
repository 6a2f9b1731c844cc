"""The SEANet and the STFT/inverse-STFT encoders and decoders: shapes set by the strides; the causal ones stream
(consecutive chunks with the state carried equal the whole signal); a future sample never changes a past output;
the transposed convolution is the adjoint of the strided one; the inverse STFT gives back the signal whose frame
spectra it is given; bad input refused."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from streaming_helpers import run_in_chunks

from vqjax.models.audio import (ISTFTDecoder, SEANetDecoder, SEANetEncoder, STFTEncoder, StreamingConv1d,
                                StreamingConvTranspose1d, frame_signal, harmonic_frames, inverse_stft, overlap_add)

STRIDES = (2, 4, 5)             # hop 40
ARCHITECTURES = {"seanet": (SEANetEncoder, SEANetDecoder, STRIDES, 4),
                 "stft": (STFTEncoder, ISTFTDecoder, (10, 4), 8),        # STFT hop 10 (window 40), then 4 per frame
                 "stft_harmonic": (STFTEncoder, functools.partial(ISTFTDecoder, harmonic=True), (10, 4), 8)}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def codec(request):
    encoder, decoder, strides, width = ARCHITECTURES[request.param]
    enc = encoder(channels=width, strides=strides, latent_dim=6)
    dec = decoder(channels=width, strides=strides)
    x = jnp.zeros((1, 40, 1))
    pe = jax.jit(enc.init)(jax.random.key(0), x)
    pd = jax.jit(dec.init)(jax.random.key(1), jnp.zeros((1, 1, 6)))
    return enc, dec, pe, pd


def _wave(n, batch=2, seed=0):
    t = np.arange(n) / 16000
    rng = np.random.default_rng(seed)
    return (np.sin(2 * np.pi * 220 * t)[None] * rng.uniform(0.2, 1, (batch, 1)) + 0.05 * rng.normal(size=(batch, n))
            ).astype(np.float32)[..., None]


def test_shapes_follow_the_strides(codec):
    enc, dec, pe, pd = codec
    x = _wave(400)
    z, state = jax.jit(enc.apply)(pe, x)
    assert z.shape == (2, 10, 6) and enc.hop_length == 40
    y, _ = jax.jit(dec.apply)(pd, z)
    assert y.shape == (2, 400, 1)
    nc = enc.clone(causal=False)
    zn, none = nc.apply(pe, x)
    assert zn.shape == z.shape and none is None


@pytest.mark.parametrize("cuts", [[40, 80, 200], [120], [360]])
def test_causal_encoder_and_decoder_stream_exactly(codec, cuts):
    enc, dec, pe, pd = codec
    x = _wave(400)
    whole, _ = jax.jit(enc.apply)(pe, x)
    np.testing.assert_allclose(run_in_chunks(enc, pe, x, cuts), whole, rtol=1e-5, atol=1e-5)
    frames = [c // 40 for c in cuts]
    y_whole, _ = jax.jit(dec.apply)(pd, whole)
    # The harmonic decoder's pulse trains turn the last-bit differences between a chunk's and the whole signal's
    # pitch into sample differences up to (harmonics x phase error) of their peak: compared at 1e-3 of the peak.
    atol = 1e-3 * float(np.abs(y_whole).max()) if getattr(dec, "harmonic", False) else 1e-5
    np.testing.assert_allclose(run_in_chunks(dec, pd, whole, frames), y_whole, rtol=1e-5, atol=atol)


def test_causal_outputs_never_see_the_future(codec):
    enc, dec, pe, pd = codec
    x = _wave(400)
    later = x.copy()
    later[:, 200:] = np.random.default_rng(3).normal(size=later[:, 200:].shape)
    a, _ = enc.apply(pe, x)
    b, _ = enc.apply(pe, later)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])             # frames 0..4 end at sample 199
    assert not np.allclose(a[:, 5:], b[:, 5:])
    ya, _ = dec.apply(pd, a)
    yb, _ = dec.apply(pd, b)
    np.testing.assert_array_equal(ya[:, :200], yb[:, :200])        # outputs of frames 0..4 only
    # The non-causal encoder does look ahead.
    nc = enc.clone(causal=False)
    assert not np.allclose(nc.apply(pe, x)[0][:, :5], nc.apply(pe, later)[0][:, :5])


def test_transposed_convolution_is_the_adjoint_of_the_strided_one():
    # <conv(x), y> == <x, conv_transpose(y)> with the same kernel (no bias): the pair are transposes of each other,
    # the causal transposed convolution keeping the first T * stride outputs of the full one.
    k, s, cin, cout, t = 8, 4, 3, 5, 6
    kernel = jax.random.normal(jax.random.key(0), (k, cin, cout))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, t * s + k, cin)).astype(np.float32)
    y = rng.normal(size=(1, t + 1, cout)).astype(np.float32)
    # A valid strided convolution of x (no padding) against the full transposed convolution of y.
    conv = jax.lax.conv_general_dilated(x, kernel, (s,), [(0, 0)], dimension_numbers=("NWC", "WIO", "NWC"))
    up = StreamingConvTranspose1d(cin, k, s, causal=True)
    params = {"params": {"kernel": jnp.swapaxes(kernel, 1, 2), "bias": jnp.zeros(cin)}}
    full, tail = up.apply(params, y)
    full = jnp.concatenate([full, tail], 1)                        # all (T - 1) * s + k outputs
    assert full.shape[1] == x.shape[1]
    np.testing.assert_allclose(jnp.sum(conv * y), jnp.sum(x * full), rtol=1e-4)


def test_inverse_stft_of_unwindowed_frames_is_the_signal():
    # Frames of x (no analysis window) -> rfft -> inverse_stft: the Hann synthesis windows sum to one, so every
    # sample covered by four frames comes back exactly; the causal form streams, the centred one is the same
    # signal shifted by the half overlap.
    n_fft, hop = 64, 16
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 320)).astype(np.float32))
    frames, _ = frame_signal(x, n_fft, hop, causal=True)
    assert frames.shape == (2, 20, 64)
    np.testing.assert_array_equal(frames[:, 3], x[:, 0:64])            # frame t ends at sample (t + 1) hop
    y, tail = inverse_stft(jnp.fft.rfft(frames, axis=-1), n_fft, hop, causal=True)
    assert y.shape == (2, 320) and tail.shape == (2, 48)
    # Frame t lands on samples t hop .. t hop + 63 and holds x[t hop - 48 .. t hop + 15]: a delay of 48 samples
    # (the zeros before the signal included).
    np.testing.assert_allclose(y[:, 48:], x[:, :320 - 48], atol=1e-5)
    y1, s1 = inverse_stft(jnp.fft.rfft(frames[:, :7], axis=-1), n_fft, hop, True)
    y2, _ = inverse_stft(jnp.fft.rfft(frames[:, 7:], axis=-1), n_fft, hop, True, s1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, atol=1e-6)
    centred, _ = frame_signal(x, n_fft, hop, causal=False)
    yc, none = inverse_stft(jnp.fft.rfft(centred, axis=-1), n_fft, hop, causal=False)
    assert none is None
    np.testing.assert_allclose(yc[:, 48:-48], x[:, 48:-48], atol=1e-5)
    with pytest.raises(ValueError, match=r"frame length \(30\) must be a multiple of hop \(16\)"):
        overlap_add(jnp.zeros((1, 3, 30)), 16)


def _direct_harmonics(pitch, voiced, n_fft, hop):
    """The excitation frames by the formula of ``harmonic_frames``, in float64, one cosine per harmonic."""
    f, v = pitch[0].astype(np.float64), voiced[0]
    x = np.arange(n_fft) - n_fft / 2
    phi, frames = 0.0, []
    for t in range(f.size):
        if t:
            phi += 2 * np.pi * hop * (f[t - 1] + f[t]) / 2
        s = np.clip(f[t] - f[t - 1], -0.1 * f[t], 0.1 * f[t]) if t and v[t] and v[t - 1] else 0.0
        count = max(int(np.floor(0.5 / (f[t] + 2 * abs(s)))), 1)
        theta = phi + 2 * np.pi * (f[t] * x + s * x * x / (2 * hop))
        frames.append(sum(np.cos(k * theta) for k in range(1, count + 1)))
    return np.stack(frames), count


def test_harmonic_frames_sum_the_harmonics_below_nyquist_with_a_gliding_phase():
    """Against the direct sum of cosines: each frame holds every harmonic below Nyquist of a pitch that glides on
    the slope from the previous frame (none across an unvoiced frame, a jump clipped to 10%), the centre phase run
    on by the trapezoid rule; chunks with the state carried give the whole signal's frames."""
    n_fft, hop = 64, 16
    pitch = np.array([[0.011, 0.0113, 0.0118, 0.05, 0.13, 0.26, 0.25, 0.24]], np.float32)   # 90 down to 1 harmonic
    voiced = np.array([[1, 1, 1, 1, 0, 1, 1, 1]], np.float32)
    frames, state = harmonic_frames(jnp.asarray(pitch), n_fft, hop, voiced=jnp.asarray(voiced))
    direct = _direct_harmonics(pitch, voiced, n_fft, hop)[0]
    for t in range(pitch.shape[1]):
        count = int(np.floor(0.5 / pitch[0, t])) + 1
        np.testing.assert_allclose(frames[0, t], direct[t], atol=3e-3 * count, err_msg=f"frame {t}")
    assert float(state[1][0]) == pytest.approx(0.24) and float(state[2][0]) == 1.0
    first, st = harmonic_frames(jnp.asarray(pitch[:, :3]), n_fft, hop, voiced=jnp.asarray(voiced[:, :3]))
    rest, st = harmonic_frames(jnp.asarray(pitch[:, 3:]), n_fft, hop, state=st, voiced=jnp.asarray(voiced[:, 3:]))
    np.testing.assert_array_equal(np.concatenate([first, rest], 1), frames)
    for a, b in zip(st, state):
        np.testing.assert_array_equal(a, b)


def test_harmonic_frames_of_a_linear_glide_agree_where_they_overlap():
    """A pitch gliding 1% a hop (5 harmonics throughout): from the second frame on (the first has no slope),
    frame t + 1 is frame t shifted by a hop wherever they overlap; so overlap-add keeps the harmonics, which a
    pitch held within each frame lets drift apart."""
    n_fft, hop = 256, 64
    pitch = (0.0835 + 0.0008 * np.arange(12))[None].astype(np.float32)
    frames, _ = harmonic_frames(jnp.asarray(pitch), n_fft, hop)
    frames = np.asarray(frames[0])
    count = 5
    for t in range(1, 11):
        np.testing.assert_allclose(frames[t + 1, :n_fft - hop], frames[t, hop:], atol=2e-3 * count,
                                   err_msg=f"frames {t} and {t + 1}")


def test_bad_input_is_refused(codec):
    enc, dec, pe, pd = codec
    with pytest.raises(ValueError, match=r"time axis \(401\) must be a multiple of 40"):
        enc.apply(pe, _wave(401))
    with pytest.raises(ValueError, match=r"must be \[batch, time, channels\]; got shape \(2, 400\)"):
        enc.apply(pe, _wave(400)[..., 0])
    with pytest.raises(ValueError, match="must cover the stride"):
        StreamingConv1d(4, 2, stride=4).init(jax.random.key(0), jnp.zeros((1, 8, 1)))


def test_codec_streams_codes_and_samples_and_drops_levels():
    from vqjax.models import model_from_spec

    codec = model_from_spec({"name": "audio_codec", "kwargs": dict(
        channels=4, strides=list(STRIDES), latent_dim=6, quantizer="rvq",
        quantizer_kwargs=dict(num_levels=3, codebook_size=16))})
    x = _wave(800, batch=3)
    variables = jax.jit(lambda k, x: codec.init(k, x))(jax.random.key(0), x[:1, :40])
    y, q = jax.jit(codec.apply)(variables, x)
    assert y.shape == x.shape and q.codes.shape == (3, 20, 3)
    encode = jax.jit(lambda v, x, s, n: codec.apply(v, x, s, n, method="encode_stream"), static_argnums=3)
    decode = jax.jit(lambda v, c, s: codec.apply(v, c, s, method="decode_stream"))
    whole = codec.apply(variables, x, method="encode")
    np.testing.assert_array_equal(whole, q.codes)
    parts, state = [], None
    for a, b in ((0, 240), (240, 280), (280, 800)):
        c, state = encode(variables, x[:, a:b], state, None)
        parts.append(c)
    np.testing.assert_array_equal(np.concatenate(parts, 1), whole)             # the same tokens, chunk by chunk
    samples, state = [], None
    for a, b in ((0, 7), (7, 20)):
        s, state = decode(variables, whole[:, a:b], state)
        samples.append(s)
    np.testing.assert_allclose(np.concatenate(samples, 1), codec.apply(variables, whole, method="decode"),
                               rtol=1e-5, atol=1e-6)
    # Fewer levels: the first levels of the full codes (greedy residual search), decoded with the rest absent.
    two = codec.apply(variables, x, 2, method="encode")
    np.testing.assert_array_equal(two, whole[..., :2])
    padded = np.concatenate([two, -np.ones_like(two[..., :1])], -1)
    np.testing.assert_allclose(codec.apply(variables, two, method="decode"),
                               codec.apply(variables, padded, method="decode"), rtol=1e-6)
    with pytest.raises(ValueError, match=r"num_levels must lie in \[1, 3\]; got 4"):
        codec.apply(variables, x, 4, method="encode")


def _assert_codec_streams(codec, variables, x, codes):
    """The codes of x's consecutive chunks (cut at samples 400 and 440 of 1600) equal the whole signal's ``codes``,
    and the samples decoded from chunks of codes (cut at frame 13 of 40) equal the whole decode, to the harmonic
    decoder's tolerance; returns the whole decode."""
    encode = jax.jit(lambda v, x, s: codec.apply(v, x, s, None, method="encode_stream"))
    decode = jax.jit(lambda v, c, s: codec.apply(v, c, s, method="decode_stream"))
    parts, state = [], None
    for a, b in ((0, 400), (400, 440), (440, 1600)):
        c, state = encode(variables, x[:, a:b], state)
        parts.append(c)
    np.testing.assert_array_equal(np.concatenate(parts, 1), codes)
    whole = codec.apply(variables, codes, method="decode")
    samples, state = [], None
    for a, b in ((0, 13), (13, 40)):
        y, state = decode(variables, codes[:, a:b], state)
        samples.append(y)
    np.testing.assert_allclose(np.concatenate(samples, 1), whole, atol=1e-3 * float(np.abs(whole).max()))
    return whole


def test_pitch_codes_lead_the_levels_and_stream():
    """With ``pitch_codes`` the first level is the input's pitch (0 where unvoiced), decoded back to within half a
    code step; the codes of consecutive chunks equal the whole signal's, and so (to the harmonic decoder's
    tolerance) do the samples; fewer levels keep the pitch."""
    from vqjax.models import model_from_spec
    from vqjax.models.audio.losses import pitch_track

    codec = model_from_spec({"name": "audio_codec", "kwargs": dict(
        channels=8, strides=[10, 4], latent_dim=6, quantizer="rvq", architecture="stft", harmonic=True,
        pitch_codes=True, quantizer_kwargs=dict(num_levels=3, codebook_size=64))})
    t = np.arange(1600) / 16000
    voiced = sum(np.cos(2 * np.pi * k * 440.0 * t) / k for k in range(1, 18))
    x = np.stack([voiced, np.zeros_like(voiced)]).astype(np.float32)[..., None] * 0.3
    variables = jax.jit(lambda k, x: codec.init(k, x))(jax.random.key(0), x[:1, :40])
    assert codec.num_levels == 4
    codes = jax.jit(lambda v, x: codec.apply(v, x, method="encode"))(variables, x)
    frames, _ = frame_signal(jnp.asarray(x[..., 0]), 80, 40)
    tracked, _ = pitch_track(frames, codec.pitch.min_pitch, codec.pitch.max_pitch)
    sent, voiced_flag = codec.pitch.decode(codes[..., 0])
    assert (np.asarray(codes[0, 2:, 0]) > 0).all() and (np.asarray(codes[1, :, 0]) == 0).all()
    half_step = 0.5 * np.log(codec.pitch.max_pitch / codec.pitch.min_pitch) / (codec.pitch.vocab - 2)
    np.testing.assert_array_less(np.abs(np.log(sent[0, 2:] / tracked[0, 2:])), half_step + 1e-6)
    np.testing.assert_allclose(np.asarray(sent[0, 2:]) * 16000, 440.0, rtol=0.015)      # two periods a window
    assert float(voiced_flag[1].max()) == 0.0
    _assert_codec_streams(codec, variables, x, codes)
    np.testing.assert_array_equal(codec.apply(variables, x, 2, method="encode"), codes[..., :2])
    with pytest.raises(ValueError, match="needs harmonic=True"):
        model_from_spec({"name": "audio_codec", "kwargs": dict(
            channels=8, strides=[10, 4], latent_dim=6, quantizer="rvq", architecture="stft", pitch_codes=True,
            quantizer_kwargs=dict(num_levels=3, codebook_size=64))})


def _envelope_codec(**overrides):
    from vqjax.models import model_from_spec

    kwargs = dict(channels=8, strides=[10, 4], latent_dim=6, quantizer="rvq", architecture="stft", harmonic=True,
                  pitch_codes=True, envelope_levels=2, envelope_bands=12, quantizer_kwargs=dict(
                      num_levels=3, codebook_size=64, quantizer_dropout=0.5))
    kwargs.update(overrides)
    return model_from_spec({"name": "audio_codec", "kwargs": kwargs})


def test_envelope_features_are_the_log_band_powers_of_each_frame():
    """The envelope of a frame is log(|rfft(hann * frame)|^2 @ mel filters), on the pitch's windows (ending at the
    frame's end); a tone's power lands in the band around its frequency; per_bin holds half the log power at
    the bands' centres and interpolates between them."""
    from vqjax.models.audio import EnvelopeCoder, hann_window
    from vqjax.models.audio.losses import mel_filterbank

    coder = EnvelopeCoder(n_fft=80, hop=40, sample_rate=16000, num_bands=12, num_levels=2, codebook_size=16)
    t = np.arange(800) / 16000
    x = (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)[None, :, None]
    bands, _ = coder.apply({}, jnp.asarray(x), method="features")
    filters = mel_filterbank(16000, 80, 12)
    frame = np.concatenate([np.zeros(40), x[0, :, 0]])[400 - 40:400 + 40]          # frame 9 ends at sample 400
    expected = np.log(np.maximum((np.abs(np.fft.rfft(frame * hann_window(80))) ** 2) @ filters, 1e-10))
    np.testing.assert_allclose(np.asarray(bands[0, 9]), expected, rtol=1e-4, atol=1e-4)
    freqs = np.linspace(0, 8000, 41)
    centres = (freqs[:, None] * filters).sum(0) / filters.sum(0)
    assert abs(centres[int(np.argmax(bands[0, 9]))] - 3000) < 500
    ramp = jnp.asarray(np.linspace(-4.0, 2.0, 12, dtype=np.float32))[None, None]
    per_bin = np.asarray(coder.per_bin(ramp, 640))[0, 0]
    bins = np.linspace(0, 8000, 321)
    np.testing.assert_allclose(np.interp(centres, bins, per_bin), 0.5 * np.asarray(ramp[0, 0]), atol=0.02)
    assert per_bin[0] == pytest.approx(-2.0) and per_bin[-1] == pytest.approx(1.0)      # held beyond the ends


def test_envelopes_per_frame_are_the_envelopes_of_each_step():
    """``per_frame=2``: a frame's envelope is the two envelopes of its half-frame steps (as a coder of half the
    hop gives them), side by side; per_bin gives one row per step."""
    from vqjax.models.audio import EnvelopeCoder

    x = jnp.asarray(_wave(800, batch=2))
    two = EnvelopeCoder(n_fft=80, hop=40, sample_rate=16000, num_bands=12, per_frame=2)
    one = EnvelopeCoder(n_fft=80, hop=20, sample_rate=16000, num_bands=12)
    pair, _ = two.apply({}, x, method="features")
    single, _ = one.apply({}, x, method="features")
    assert pair.shape == (2, 20, 24)
    np.testing.assert_allclose(pair, single.reshape(2, 20, 24), rtol=1e-6)
    assert two.per_bin(pair, 640).shape == (2, 40, 321)
    with pytest.raises(ValueError, match="per_frame .3. must divide hop .40."):
        EnvelopeCoder(n_fft=80, hop=40, sample_rate=16000, per_frame=3).init(jax.random.key(0), x)


@pytest.mark.parametrize("per_frame", [1, 4])
def test_envelope_codes_follow_the_pitch_stream_and_set_the_magnitudes(per_frame):
    """With ``envelope_levels`` the codes are pitch, envelope levels, latent levels; the envelope codes are the
    EnvelopeCoder's and decode to within its quantization; chunks equal the whole signal (codes and samples);
    raising the sent envelope by 2 nepers of power raises the decoded magnitudes (every bin is built on it). With
    one envelope per STFT frame (``envelope_per_frame`` 4 for strides (10, 4)) alike."""
    codec = _envelope_codec(envelope_per_frame=per_frame)
    x = _wave(1600, batch=2)
    variables = jax.jit(lambda k, x: codec.init(k, x))(jax.random.key(0), x[:1, :80])
    assert codec.num_levels == 1 + 2 + 3
    codes = jax.jit(lambda v, x: codec.apply(v, x, method="encode"))(variables, x)
    assert codes.shape == (2, 40, 6)
    env, _ = codec.apply(variables, jnp.asarray(x), method=lambda m, x: m.envelope.encode(x))
    np.testing.assert_array_equal(codes[..., 1:3], env)
    whole = _assert_codec_streams(codec, variables, x, codes)

    def with_envelope(m, codes, shift):
        bands = m.envelope.decode(codes[..., 1:3]) + shift
        return m.decoder(m.quantizer.decode(codes[..., 3:]), pitch=m.pitch.decode(codes[..., 0]),
                         envelope=(bands, m.envelope.per_bin(bands, m.decoder.n_fft)))[0]

    base = codec.apply(variables, codes, 0.0, method=with_envelope)
    np.testing.assert_allclose(base, whole, rtol=1e-5, atol=1e-6)
    louder = codec.apply(variables, codes, 2.0, method=with_envelope)
    ratio = float(jnp.sqrt(jnp.mean(louder ** 2) / jnp.mean(base ** 2)))
    assert 1.5 < ratio < 5.0, ratio                        # e (2 nepers of power), up to the decoder reading it
    lone = codec.apply(variables, codes[..., :1], method="decode")       # no envelope level: a flat one, finite
    assert np.isfinite(np.asarray(lone)).all()


def test_envelope_training_drops_all_latent_levels_of_some_frames():
    """In training, with quantizer_dropout p over E envelope and L latent levels, a frame keeps no latent level
    with probability p E / (E + L) and then the first m ~ U{1..E} envelope levels (the pitch and the envelope's
    first levels alone must decode); outside training, never."""
    codec = _envelope_codec()
    x = jnp.asarray(_wave(16000, batch=4))
    variables = jax.jit(lambda k, x: codec.init(k, x))(jax.random.key(0), x[:1, :80])
    qe = codec.apply(variables, x, method=lambda m, x: m.envelope(x))
    q = codec.apply(variables, x, method=lambda m, x: m.quantizer(m.encoder(x)[0]))
    bands, dropped = codec.apply(variables, qe, q, 0.5, method=lambda m, qe, q, r: m._drop_latents(qe, q, r),
                                 rngs={"vq": jax.random.key(3)})
    off = np.asarray((dropped.codes < 0).all(-1))
    assert abs(off.mean() - 0.5 * 2 / 5) < 0.04, off.mean()
    np.testing.assert_array_equal(np.asarray(dropped.values)[off], 0.0)
    np.testing.assert_array_equal(np.asarray(dropped.values)[~off], np.asarray(q.values)[~off])
    np.testing.assert_allclose(np.asarray(bands)[~off], np.asarray(qe.values)[~off])
    first = np.asarray(codec.apply(variables, qe.codes.at[..., 1].set(-1), method=lambda m, c: m.envelope.decode(c)))
    one = np.all(np.isclose(np.asarray(bands), first, atol=1e-5), -1) & off
    both = np.all(np.isclose(np.asarray(bands), np.asarray(qe.values), atol=1e-5), -1) & off
    assert (one | both)[off].all() and 0.3 < one.sum() / off.sum() < 0.7        # m = 1 or 2, evenly
    (_, q_train), _ = codec.apply(variables, x, train=True, rngs={"vq": jax.random.key(3)}, mutable=["vq_stats"])
    assert (np.asarray(q_train.codes) < 0).all(-1).any() and float(q_train.metrics["envelope_error_db"]) > 0
    _, q_eval = codec.apply(variables, x)
    assert not np.asarray((q_eval.codes < 0).all(-1)).any()


def test_envelope_levels_are_refused_where_no_decoder_reads_them():
    with pytest.raises(ValueError, match="envelope_levels > 0 sends an envelope"):
        _envelope_codec(architecture="seanet", harmonic=False, pitch_codes=False, strides=[2, 4, 5])
    with pytest.raises(ValueError, match="envelope_levels must be an int >= 0"):
        _envelope_codec(envelope_levels=-1)
    with pytest.raises(ValueError, match="envelope_bands must be an int >= 2"):
        _envelope_codec(envelope_bands=1)
    with pytest.raises(ValueError, match=r"envelope_per_frame must be a positive int dividing the hop \(40\)"):
        _envelope_codec(envelope_per_frame=3)
