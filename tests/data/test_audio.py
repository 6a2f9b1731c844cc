"""Recorded-speech data: discovery, resampling, loudness, trimming, clips, crops; the tfds builder on synthetic
recordings laid out like Debian's (held-out languages, clips of consecutive recordings); random crops in the
grain pipeline that are the same on resume and whatever the process count."""

import math

import numpy as np
import pytest

pytest.importorskip("soundfile", reason="needs soundfile (the test extra)")

from speech_data import make_music, make_speech_roots, voiced  # noqa: E402

from vqjax.data import audio, builders, pipeline  # noqa: E402


def _sine(freq, seconds, rate, amp=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resample_keeps_a_tone_and_its_level():
    x = _sine(1000, 1.0, 44100, 0.5)
    y = audio.resample(x, 44100, 16000)
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(14000)))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 1000) < 2
    np.testing.assert_allclose(np.sqrt(np.mean(y[1000:-1000] ** 2)), 0.5 / math.sqrt(2), rtol=0.01)
    np.testing.assert_array_equal(audio.resample(x, 44100, 44100), x)
    with pytest.raises(ValueError, match="sample rates"):
        audio.resample(x, 0, 16000)


def test_loudness_of_a_full_scale_sine_and_normalisation():
    x = _sine(440, 2.0, 16000)
    assert audio.loudness_db(x, 16000) == pytest.approx(-3.01, abs=0.02)
    # gating: of the 400 ms blocks (hop 100 ms) of 2 s of tone then 1 s of silence, the 7 silent ones are gated
    # out; 17 hold only tone (power 1/2) and 3 straddle the edge (3/4, 2/4, 1/4 of it)
    gated = np.concatenate([x, np.zeros(16000, np.float32)])
    expected = 10 * np.log10((17 * 0.5 + 0.5 * (0.75 + 0.5 + 0.25)) / 20)
    assert audio.loudness_db(gated, 16000) == pytest.approx(expected, abs=0.01)
    quiet = np.concatenate([x, 0.01 * x])          # 40 dB down: under the relative gate, so it does not count
    assert audio.loudness_db(quiet, 16000) == pytest.approx(expected, abs=0.01)
    y = audio.normalize_loudness(0.01 * x, 16000, target_db=-23.0)
    assert audio.loudness_db(y, 16000) == pytest.approx(-23.0, abs=0.01)
    loud = audio.normalize_loudness(0.01 * x, 16000, target_db=0.0)      # would clip: held under the peak
    assert np.max(np.abs(loud)) == pytest.approx(0.99, abs=1e-6)
    assert audio.loudness_db(np.zeros(100), 16000) == -math.inf
    np.testing.assert_array_equal(audio.normalize_loudness(np.zeros(100), 16000), np.zeros(100))


def test_trim_silence_clips_and_crops():
    wave = voiced(0.5, 16000, 0, silence=0.3)
    trimmed = audio.trim_silence(wave, 16000)
    assert 0.45 * 16000 < trimmed.size < 0.6 * 16000
    assert np.max(np.abs(trimmed[:320])) > 1e-3
    clips = audio.make_clips([np.ones(10), 2 * np.ones(10), 3 * np.ones(10)], 2, 100, gap_seconds=0.05)
    assert len(clips) == 1 and clips[0].tolist() == [1.0] * 10 + [0.0] * 5 + [2.0] * 10
    x = np.arange(100, dtype=np.float32)
    a = audio.random_crop(x, 30, np.random.default_rng(3))
    b = audio.random_crop(x, 30, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.size == 30 and np.all(np.diff(a) == 1)
    assert audio.random_crop(x[:10], 30, np.random.default_rng(0)).tolist() == list(range(10)) + [0] * 20
    assert audio.to_pcm16(np.array([0.5, -1.0, 2.0])).tolist() == [16384, -32767, 32767]     # clipped
    np.testing.assert_allclose(audio.from_pcm16(np.array([16384, -32767], np.int16)), [16384 / 32767, -1.0],
                               rtol=1e-7)


def test_prepare_example_resamples_normalises_and_crops():
    example = {"audio": audio.to_pcm16(0.1 * _sine(300, 1.0, 22050)), "sample_rate": 22050}
    out = audio.prepare_example(example, sample_rate=16000, target_db=-20.0)
    assert out["audio"].shape == (16000, 1) and out["length"] == 16000
    assert audio.loudness_db(out["audio"][:, 0], 16000) == pytest.approx(-20.0, abs=0.05)
    cut = audio.prepare_example(example, sample_rate=16000, crop_length=20000)
    assert cut["audio"].shape == (20000, 1) and cut["length"] == 16000 and not cut["audio"][16000:].any()


def _tone_db(x, freq, rate):
    """The level in dB of ``x``'s component at ``freq`` (0: DC), by projection on a whole number of cycles."""
    t = np.arange(x.size) / rate
    if freq == 0:
        return 20 * np.log10(abs(x.mean()) + 1e-12)
    return 20 * np.log10(np.hypot(np.mean(x * np.cos(2 * np.pi * freq * t)),
                                  np.mean(x * np.sin(2 * np.pi * freq * t))) * 2 + 1e-12)


def test_highpass_removes_dc_and_hum_and_keeps_the_voice_in_place():
    """DC gone, 50 Hz hum down by more than 13 dB, a 200 Hz voice within 0.05 dB and not moved in time (zero
    phase); ``[T, C]`` filtered per channel; short signals pass; a cutoff outside (0, Nyquist) is refused."""
    rate = 16000
    voice = _sine(200, 1.0, rate, 0.3)
    x = 0.2 + _sine(50, 1.0, rate, 0.1) + voice
    y = audio.highpass(x, rate, 60.0)
    inner = slice(2000, 14000)                                     # away from the edges' transients
    assert abs(y[inner].mean()) < 1e-4
    assert _tone_db(y[inner], 50, rate) < _tone_db(x[inner], 50, rate) - 13
    assert _tone_db(y[inner], 200, rate) == pytest.approx(_tone_db(voice[inner], 200, rate), abs=0.05)
    np.testing.assert_allclose(audio.highpass(voice, rate, 60.0)[inner], voice[inner], atol=0.002)   # no delay
    both = audio.highpass(np.stack([x, voice], axis=1), rate, 60.0)
    np.testing.assert_allclose(both[:, 0], y, atol=1e-6)
    assert audio.highpass(x[:5], rate, 60.0).shape == (5,)
    for bad in (0.0, -5.0, 8000.0):
        with pytest.raises(ValueError, match=r"highpass: cutoff_hz must lie in \(0, 8000\)"):
            audio.highpass(x, rate, bad)


def test_prepare_example_highpass_takes_the_offset_out_before_the_loudness():
    """A recording with a DC offset as large as its speech: high-passed first, its speech reaches the target
    loudness; without the high-pass the offset counts as loudness and the speech ends up quieter."""
    speech = 0.1 * _sine(300, 1.0, 16000)
    example = {"audio": audio.to_pcm16(speech + 0.1), "sample_rate": 16000}
    clean = audio.prepare_example(example, sample_rate=16000, target_db=-20.0, highpass_hz=60.0)["audio"][:, 0]
    dirty = audio.prepare_example(example, sample_rate=16000, target_db=-20.0)["audio"][:, 0]
    inner = slice(2000, 14000)
    assert abs(clean[inner].mean()) < 1e-3
    assert _tone_db(clean[inner], 300, 16000) == pytest.approx(-20.0 + 20 * np.log10(np.sqrt(2)), abs=0.2)
    assert _tone_db(dirty[inner], 300, 16000) < _tone_db(clean[inner], 300, 16000) - 3


def test_random_equalizer_applies_its_drawn_curve_with_zero_phase():
    """Each tone comes out scaled by the curve the seed draws (tilt about 1 kHz, a Gaussian bump on octaves), in
    place; the curve's own formula; 0 dB is the identity; a negative range and a missing rng are refused."""
    freqs = np.array([100.0, 500.0, 1000.0, 2000.0, 8000.0, 12000.0])
    gains = audio.equalizer_gains(freqs, 2.0, 0.0, 1000.0, 1.0)
    np.testing.assert_allclose(gains, [2 * np.log2(0.1), -2.0, 0.0, 2.0, 6.0, 6.0], atol=1e-9)
    bump = audio.equalizer_gains(freqs, 0.0, 4.0, 1000.0, 0.5)
    np.testing.assert_allclose(bump[1:4], [4 * np.exp(-2), 4.0, 4 * np.exp(-2)], atol=1e-9)
    rate = 16000
    tones = (250, 700, 1500, 3000)
    x = sum(_sine(f, 1.0, rate, 0.1) for f in tones)
    for seed in range(3):
        y = audio.random_equalize(x, rate, 6.0, np.random.default_rng(seed))
        draw = np.random.default_rng(seed)
        tilt, bump = draw.uniform(-0.5, 0.5) * 6.0, draw.uniform(-1.0, 1.0) * 6.0
        centre, width = float(np.exp(draw.uniform(np.log(200.0), np.log(4000.0)))), draw.uniform(0.3, 1.0)
        expected = audio.equalizer_gains(np.array(tones, float), tilt, bump, centre, width)
        inner = slice(2000, 14000)
        got = [_tone_db(y[inner], f, rate) - _tone_db(x[inner], f, rate) for f in tones]
        np.testing.assert_allclose(got, expected, atol=0.05)
        one = audio.random_equalize(_sine(700, 1.0, rate, 0.1), rate, 6.0, np.random.default_rng(seed))
        np.testing.assert_allclose(one[inner], 10 ** (expected[1] / 20) * _sine(700, 1.0, rate, 0.1)[inner],
                                   atol=2e-3)                                                  # not moved in time
    np.testing.assert_array_equal(audio.random_equalize(x, rate, 0.0, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="max_db must be >= 0"):
        audio.random_equalize(x, rate, -1.0, np.random.default_rng(0))
    example = {"audio": audio.to_pcm16(x), "sample_rate": rate}
    with pytest.raises(ValueError, match="needs rng"):
        audio.prepare_example(example, sample_rate=rate, equalize_db=6.0)


def test_speed_perturbation_scales_pitch_and_duration():
    """A 200 Hz tone played f times faster: f * 200 Hz for 1 / f of the time, f log-uniform in the range, the
    source rate on a 100 Hz grid; the identity range leaves the example alone; bad ranges and a missing rng are
    refused."""
    rng = np.random.default_rng(0)
    rates = np.array([audio.perturbed_rate(22050, (0.8, 1.25), rng) for _ in range(2000)])
    assert (rates % 100 == 0).all() and rates.min() >= 0.8 * 22050 - 50 and rates.max() <= 1.25 * 22050 + 50
    factors = np.log(rates / 22050)
    assert abs(factors.mean()) < 0.01 and (factors < 0).mean() == pytest.approx(0.5, abs=0.05)   # log-uniform
    example = {"audio": audio.to_pcm16(0.3 * _sine(200, 1.0, 16000)), "sample_rate": 16000}
    for seed in range(3):
        expected = audio.perturbed_rate(16000, (0.7, 1.4), np.random.default_rng(seed)) / 16000
        out = audio.prepare_example(example, sample_rate=16000, target_db=None, rng=np.random.default_rng(seed),
                                    speed=(0.7, 1.4))["audio"][:, 0]
        assert out.size == pytest.approx(16000 / expected, abs=2)
        spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size), 1 << 16))
        assert np.argmax(spectrum) * 16000 / (1 << 16) == pytest.approx(200 * expected, rel=0.005)
    plain = audio.prepare_example(example, sample_rate=16000, target_db=None, rng=np.random.default_rng(0),
                                  speed=(1.0, 1.0))["audio"][:, 0]
    np.testing.assert_array_equal(plain, audio.from_pcm16(example["audio"]))
    with pytest.raises(ValueError, match="speed"):
        audio.perturbed_rate(16000, (1.2, 0.9), rng)
    with pytest.raises(ValueError, match="rng"):
        audio.prepare_example(example, sample_rate=16000, speed=(0.9, 1.1))


def test_find_recordings_names_the_missing_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="klettres-data"):
        audio.find_recordings({"klettres": str(tmp_path / "none")})


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Recordings laid out like Debian's and a music clip, and the ``vqjax_speech`` builder prepared on them once
    (every test of the module reads the same prepared folder, whichever runs first)."""
    root = tmp_path_factory.mktemp("speech")
    roots = make_speech_roots(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builders.VqjaxSpeech, "ROOTS", roots)
        patch.setattr(builders.VqjaxSpeech, "MUSIC", make_music(root / "music.wav", seconds=8.5))
        pipeline.get_source("vqjax_speech", "train", str(root / "tfds"))
    return roots, str(root / "tfds")


def test_speech_builder_holds_out_whole_languages(speech, monkeypatch):
    roots, data_dir = speech
    monkeypatch.setattr(builders.VqjaxSpeech, "ROOTS", roots)
    train = pipeline.get_source("vqjax_speech", "train", data_dir)
    test = pipeline.get_source("vqjax_speech", "test", data_dir)
    test_kt = pipeline.get_source("vqjax_speech", "test_ktuberling", data_dir)
    languages = {train[i]["language"].decode() for i in range(len(train))}
    assert languages == {"nl", "sv", "pl"} and len(train) == 30
    # 10 recordings per held-out language -> one clip of 8 each (the rest dropped)
    assert len(test) == 2 and {test[i]["language"].decode() for i in range(2)} == {"en", "fr"}
    assert len(test_kt) == 1 and test_kt[0]["language"].decode() == "de"
    for source in (train, test):
        ex = source[0]
        assert ex["audio"].dtype == np.int16 and int(ex["sample_rate"]) == 16000
    assert len(test[0]["word"].decode().split()) == 8
    # trimmed recordings: a clip is 8 voiced stretches and 7 pauses of 0.15 s, not the files' silences
    assert test[0]["audio"].size < 8 * 0.65 * 16000 + 7 * 0.15 * 16000
    # eSpeak NG says each training word once, in the word's language (held-out languages never)
    synthetic = pipeline.get_source("vqjax_speech", "train_synthetic", data_dir)
    assert len(synthetic) == 30
    assert {synthetic[i]["language"].decode() for i in range(30)} == {"nl", "sv", "pl"}
    assert {synthetic[i]["corpus"].decode() for i in range(30)} == {"espeak-ng"}
    assert all(synthetic[i]["audio"].size > 1600 for i in range(30))
    assert len(pipeline.get_source("vqjax_speech", "train+train_synthetic", data_dir)) == 60   # a split expression
    with pytest.raises(ValueError, match=r"has splits .* got split='train\+spoken'"):
        pipeline.get_source("vqjax_speech", "train+spoken", data_dir)
    # the music clip in 4 s pieces at 16 kHz, mono; the last half second is dropped
    music = pipeline.get_source("vqjax_speech", "test_music", data_dir)
    assert len(music) == 2 and all(music[i]["audio"].size == 64000 for i in range(2))
    assert music[0]["language"].decode() == "music"


def test_random_crops_resume_and_ignore_the_process_count(speech, monkeypatch):
    roots, data_dir = speech
    monkeypatch.setattr(builders.VqjaxSpeech, "ROOTS", roots)
    source = pipeline.get_source("vqjax_speech", "train", data_dir)

    def crop(example, rng):
        return audio.prepare_example(example, sample_rate=16000, crop_length=4000, rng=rng)

    def take(n, **kw):
        it = pipeline.train_batches(source, batch_size=4, seed=1, random_transform=crop, **kw)
        return [next(it)["audio"] for _ in range(n)]

    full = take(5)
    resumed = take(2, start_step=3)
    np.testing.assert_array_equal(full[3], resumed[0])
    np.testing.assert_array_equal(full[4], resumed[1])
    halves = [take(5, process_index=p, process_count=2) for p in range(2)]
    for step in range(5):
        np.testing.assert_array_equal(np.concatenate([halves[0][step], halves[1][step]]), full[step])
    other_seed = next(pipeline.train_batches(source, batch_size=4, seed=2, random_transform=crop))["audio"]
    assert not np.array_equal(other_seed, full[0])
    with pytest.raises(ValueError, match="not both"):
        pipeline.train_batches(source, batch_size=4, seed=1, transform=lambda e: e, random_transform=crop)


def test_synthesize_speaks_in_several_voices():
    pytest.importorskip("espeakng_loader", reason="needs espeakng-loader (the test extra)")
    a = audio.synthesize("three seven nine", "en-us")
    b = audio.synthesize("three seven nine", "en-us", words_per_minute=300)
    c = audio.synthesize("three seven nine", "de+f2")
    assert a.dtype == np.float32 and 0.8 * audio.SYNTH_RATE < a.size < 2.5 * audio.SYNTH_RATE
    assert b.size < 0.8 * a.size                       # twice as fast
    assert 0.05 < np.max(np.abs(a)) <= 1.0 and audio.loudness_db(a, audio.SYNTH_RATE) > -40
    assert c.size != a.size or not np.allclose(c, a)
    with pytest.raises(ValueError, match="empty"):
        audio.synthesize("  ")
    with pytest.raises(ValueError, match="no voice"):
        audio.synthesize("hello", "zzz+f3")
    with pytest.raises(ValueError, match="words_per_minute"):
        audio.synthesize("hello", words_per_minute=20)
