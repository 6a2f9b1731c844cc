"""The audio artifact: padded batches encode as each signal alone (causal and non-causal), fewer levels, padding
frames, resampling of other rates, export/load, and every refused input named."""

import numpy as np
import pytest

from tiny_tokenizers import AUDIO_ARCH, AUDIO_HOP, audio_tokenizer

from vqjax.data.audio import resample
from vqjax.tokenizer import AudioTokenizer, Tokenizer

HOP = AUDIO_HOP
ARCH = AUDIO_ARCH
_tokenizer = audio_tokenizer


@pytest.fixture(scope="module", params=[(c, a) for a in sorted(ARCH) for c in (True, False)],
                ids=lambda p: f"{p[1]}-{'causal' if p[0] else 'noncausal'}")
def tok(request):
    return _tokenizer(*request.param)


def _signals(lengths, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / 16000
        x[i, :n] = 0.5 * np.sin(2 * np.pi * rng.uniform(100, 900) * t) + 0.05 * rng.normal(size=n)
    return x


def test_padded_batch_equals_each_signal_alone(tok):
    lengths = [400, 263, 121, 400]
    x = _signals(lengths)
    codes = np.asarray(tok.encode(x, sample_rate=16000, lengths=lengths))
    assert codes.shape == (4, -(-(400 + tok.delay) // HOP), 3) and codes.dtype == np.int32
    for i, n in enumerate(lengths):
        alone = np.asarray(tok.encode(x[i:i + 1, :n], sample_rate=16000))
        frames = -(-(n + tok.delay) // HOP)              # the frames that cover the signal and the decoder's delay
        assert alone.shape == (1, frames, 3)
        np.testing.assert_array_equal(codes[i, :frames], alone[0])
        assert (codes[i, frames:] == -1).all()


def test_decode_fewer_levels_and_padding_frames(tok):
    x = _signals([400, 200])
    codes = tok.encode(x, sample_rate=16000, lengths=[400, 200])
    wave = np.asarray(tok.decode(codes))
    frames = -(-(np.array([400, 200]) + tok.delay) // HOP)
    assert wave.shape == (2, frames[0] * HOP - tok.delay) and wave.shape[1] >= 400 and np.abs(wave).max() <= 1.0
    assert not wave[1, frames[1] * HOP - tok.delay:].any()           # -1 frames are silence
    two = tok.encode(x, sample_rate=16000, num_levels=2)
    np.testing.assert_array_equal(two, np.asarray(tok.encode(x, sample_rate=16000))[..., :2])
    assert tok.decode(two).shape == wave.shape
    assert tok.kbps == 9.6 and tok.codes_shape == (None, 3) and tok.hop_length == HOP and tok.num_levels == 3


def test_other_sample_rates_are_resampled(tok):
    x = _signals([800])
    at32 = tok.encode(x, sample_rate=32000)
    np.testing.assert_array_equal(at32, tok.encode(resample(x.T, 32000, 16000).T, sample_rate=16000))
    assert tok.encode((x * 32767).astype(np.int16), sample_rate=32000).shape == at32.shape


def test_export_and_load_round_trip(tmp_path):
    tok = _tokenizer()
    x = _signals([400])
    path = tok.export(str(tmp_path / "codec"))
    back = Tokenizer.load(path)
    assert isinstance(back, AudioTokenizer) and back.sample_rate == 16000
    np.testing.assert_array_equal(back.encode(x, sample_rate=16000), tok.encode(x, sample_rate=16000))


@pytest.mark.parametrize("bad, kwargs, match", [
    (np.zeros((1, 400), np.float32), {}, "sample_rate is required"),
    (np.zeros((1, 400, 2), np.float32), {"sample_rate": 16000}, "mono"),
    (np.zeros((1, 0), np.float32), {"sample_rate": 16000}, "empty"),
    (np.zeros((1, 20), np.float32), {"sample_rate": 16000}, "at least one frame"),
    (np.full((1, 400), np.nan, np.float32), {"sample_rate": 16000}, "NaN"),
    (np.full((1, 400), 1.5, np.float32), {"sample_rate": 16000}, r"\[-1, 1\]"),
    (np.zeros((1, 400), np.int32), {"sample_rate": 16000}, "int16"),
    (np.zeros((1, 400), np.float32), {"sample_rate": 16000, "num_levels": 4}, "num_levels"),
    (np.zeros((2, 400), np.float32), {"sample_rate": 16000, "lengths": [400, 500]}, "lengths"),
    (np.zeros((1, 400), np.float32), {"sample_rate": -1}, "positive"),
])
def test_bad_input_is_refused(bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tokenizer().encode(bad, **kwargs)


def test_bad_codes_are_refused():
    tok = _tokenizer()
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode(np.full((1, 2, 3), 256))
    with pytest.raises(ValueError, match="levels"):
        tok.decode(np.zeros((1, 2, 4), np.int32))
    partial = np.zeros((1, 2, 3), np.int32)
    partial[0, 1, 0] = -1                                            # -1 only as a whole padding frame
    with pytest.raises(ValueError, match="padding"):
        tok.decode(partial)


@pytest.mark.parametrize("architecture", sorted(ARCH))
def test_chunks_stream_exactly_like_the_whole_signal(architecture):
    tok = _tokenizer(causal=True, architecture=architecture)
    x = _signals([800])
    whole = np.asarray(tok.encode(x, sample_rate=16000))
    state, parts = None, []
    for a, b in ((0, 120), (120, 400), (400, 800)):
        codes, state = tok.encode_chunk(x[:, a:b], state, sample_rate=16000)
        parts.append(np.asarray(codes))
    np.testing.assert_array_equal(np.concatenate(parts, 1), whole[:, :20])     # (encode adds the delay's frame)
    state, waves = None, []
    for a, b in ((0, 7), (7, whole.shape[1])):
        wave, state = tok.decode_chunk(whole[:, a:b], state)
        waves.append(np.asarray(wave))
    # decode_chunk gives the decoder's samples as they come; decode drops the first `delay` of them.
    np.testing.assert_allclose(np.concatenate(waves, 1)[:, tok.delay:], tok.decode(whole), rtol=1e-5, atol=1e-6)
    assert tok.delay == (30 if architecture == "stft" else 0)        # window 40 minus hop 10
    with pytest.raises(ValueError, match="whole frames"):
        tok.encode_chunk(x[:, :50], sample_rate=16000)
    with pytest.raises(ValueError, match="model's rate"):
        tok.encode_chunk(x[:, :80], sample_rate=8000)
    with pytest.raises(ValueError, match="causal"):
        _tokenizer(causal=False).encode_chunk(x[:, :80], sample_rate=16000)
