"""The 'audio_codec' task end to end on synthetic recordings laid out like Debian's: it trains, evaluates per
bitrate, scores the held-out clips through the harness and leaves an AudioTokenizer; the harness's alignment and
scores; the classical anchors where their binaries exist; config errors named before any data is read."""

import json
import math
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("soundfile", reason="needs soundfile (the test extra)")
pytest.importorskip("pystoi", reason="needs pystoi (the test extra)")

from speech_data import make_music, make_speech_roots, voiced  # noqa: E402

from vqjax.data import builders  # noqa: E402
from vqjax.evals import speech as speech_eval  # noqa: E402
from vqjax.train import train_and_evaluate  # noqa: E402


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    with pytest.MonkeyPatch.context() as patch:        # the music stand-in, read when the builder prepares
        patch.setattr(builders.VqjaxSpeech, "MUSIC", make_music(root / "music.wav", seconds=4.5))
        yield make_speech_roots(root), str(root / "tfds")


def _config(data_dir, **overrides):
    from experiments_loader import load_experiment

    c = load_experiment("speech_codec", "runlocal")
    c.data_dir = data_dir
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 6, 6, 6
    c.quantizer_kwargs.num_levels = 3
    c.eval_levels = (1, 3)
    for k, v in overrides.items():
        c[k] = v
    return c


def test_codec_run_reports_bitrates_and_leaves_an_audio_tokenizer(speech_dir, tmp_path, monkeypatch, one):
    roots, data_dir = speech_dir
    monkeypatch.setattr(builders.VqjaxSpeech, "ROOTS", roots)
    workdir = str(tmp_path / "run")
    result = train_and_evaluate(_config(data_dir, ood_splits=("test_music",)), workdir, progress=False, devices=one)
    for name in ("vqjax 1q", "vqjax 3q", "test_music/vqjax 1q"):
        for metric in ("stoi", "si_sdr", "mel_distance"):
            assert np.isfinite(result[f"{name}/{metric}"]), (name, metric)
    assert result["test_music/clips"] == 1 and result["clips"] == 2
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals and {"si_sdr@1", "si_sdr@3", "mel_distance@3", "usage", "kbps"} <= set(evals[-1])
    # kbps of the full codes: 16000 / 160 frames per second x (the pitch + 4 envelope + 3 residual levels) x
    # log2(32) bits
    assert evals[-1]["kbps"] == pytest.approx(100 * 8 * 5 / 1000)
    table = json.load(open(os.path.join(workdir, "rate_distortion.json")))
    assert [r["codec"] for r in table["test"]["rows"]] == ["vqjax 1q", "vqjax 3q"]
    assert table["test"]["rows"][0]["kbps"] == pytest.approx(0.5) and len(table["test"]["per_clip"]["vqjax 1q"]) == 2
    assert len(table["test_music"]["per_clip"]["vqjax 3q"]) == 1
    languages = table["test"]["languages"]
    assert len(languages) == 2 and set(table["test"]["by_language"]) == set(languages) and "" not in languages
    for language, rows in table["test"]["by_language"].items():         # each language's mean of its own clips
        mine = [c["stoi"] for c in table["test"]["per_clip"]["vqjax 3q"] if languages[c["clip"]] == language]
        row = next(r for r in rows if r["codec"] == "vqjax 3q")
        assert row["stoi"] == pytest.approx(np.mean(mine))
    for fig in ("rate_distortion.png", "audio_examples.png", "loss_curves.png", "rate_distortion_test_music.png"):
        assert os.path.getsize(os.path.join(workdir, fig)) > 1000

    import vqjax

    tok = vqjax.Tokenizer.load(workdir)
    assert isinstance(tok, vqjax.AudioTokenizer) and tok.modality == "audio"
    assert tok.sample_rate == 16000 and tok.frame_rate == 100.0 and tok.tokens_per_second == 800.0
    assert tok.spec["highpass_hz"] == 60.0 and tok.spec["loudness_db"] == -23.0      # how to prepare its input
    assert tok.model.pitch is not None and tok.model.envelope.num_levels == 4 and tok.num_levels == 8
    wave = voiced(0.3, 16000, 5)[None]
    codes = tok.encode(wave, sample_rate=16000)
    assert tok.delay == (240 if tok.model.decoder.causal else 0)      # the causal inverse STFT: window 320, hop 80
    assert codes.shape == (1, -(-(wave.shape[1] + tok.delay) // 160), 8)
    assert (np.asarray(codes[0, :, 0]) > 0).any()                           # the voiced stand-in has a pitch
    assert tok.decode(codes).shape == (1, codes.shape[1] * 160 - tok.delay)


def test_harmonic_codec_trains_its_pitch_and_phase(speech_dir, tmp_path, monkeypatch, one):
    """The harmonic decoder predicting its own pitch, with the pitch and phase losses on: both are logged, finite
    and positive, and its tokenizer decodes."""
    roots, data_dir = speech_dir
    monkeypatch.setattr(builders.VqjaxSpeech, "ROOTS", roots)
    c = _config(data_dir, ood_splits=(), eval_levels=(3,))
    c.model.harmonic, c.model.pitch_codes, c.losses.pitch, c.losses.phase = True, False, 1.0, 0.5
    workdir = str(tmp_path / "run")
    train_and_evaluate(c, workdir, progress=False, devices=one)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [r for r in rows if r["split"] == "train"][-1]
    assert np.isfinite(train["pitch_loss"]) and train["pitch_loss"] > 0
    assert np.isfinite(train["phase_loss"]) and train["phase_loss"] > 0

    import vqjax

    tok = vqjax.Tokenizer.load(workdir)
    assert tok.model.decoder.harmonic
    wave = voiced(0.3, 16000, 5)[None]
    assert np.isfinite(tok.decode(tok.encode(wave, sample_rate=16000))).all()


def test_align_and_scores():
    ref = voiced(1.0, 16000, 1)
    late = np.concatenate([np.zeros(123, np.float32), ref])[:ref.size]
    aligned, lag = speech_eval.align(ref, late, 16000)
    assert lag == 123
    np.testing.assert_array_equal(aligned[:ref.size - 123], ref[:ref.size - 123])
    # A codec that keeps the envelope but synthesises its own phase (here: random STFT phases) is aligned by the
    # envelope; the waveform's cross-correlation alone peaks at a spurious lag.
    from scipy.signal import istft, stft

    syllables = np.concatenate([voiced(0.1 + 0.03 * k, 16000, k, silence=0.04) for k in range(6)])
    _, _, spec = stft(np.concatenate([np.zeros(300), syllables]), nperseg=512)
    phases = np.exp(2j * np.pi * np.random.default_rng(1).uniform(size=spec.shape))
    scrambled = istft(np.abs(spec) * phases, nperseg=512)[1][:syllables.size].astype(np.float32)
    _, lag = speech_eval.align(syllables, scrambled, 16000)
    assert abs(lag - 300) <= 64, lag
    # Its magnitudes are right and its phases are not: the swap puts the loss on the phase.
    swap = speech_eval.magnitude_or_phase(syllables, scrambled, 16000)
    assert swap["decoded_magnitude"]["si_sdr"] > 5 and swap["decoded_phase"]["si_sdr"] < 0
    # A zero-phase low-pass keeps the phases and loses the spectrum: the swap puts the loss on the magnitude.
    from scipy.signal import butter, filtfilt

    muffled = filtfilt(*butter(4, 800 / 8000), syllables).astype(np.float32)
    swap = speech_eval.magnitude_or_phase(syllables, muffled, 16000)
    assert swap["decoded_phase"]["si_sdr"] > 25 > 15 > swap["decoded_magnitude"]["si_sdr"]
    same = speech_eval.score_clip(ref, ref, 16000)
    assert same["stoi"] > 0.99 and same["si_sdr"] > 60 and same["mel_distance"] < 1e-6 and same["delay"] == 0
    noisy = speech_eval.score_clip(ref, ref + 0.05 * np.random.default_rng(0).normal(size=ref.size), 16000)
    assert noisy["stoi"] < same["stoi"] and noisy["si_sdr"] < 30 and noisy["mel_distance"] > 0.01
    if np.isfinite(same["pesq_wb"]):                          # the pesq package is in the audio extra
        assert same["pesq_wb"] > 4.0 and noisy["pesq_wb"] < same["pesq_wb"]
    with pytest.raises(ValueError, match="codec2:BITRATE"):
        speech_eval.anchor_codecs(["mp3:128"])
    with pytest.raises(ValueError, match="Codec2 bitrates"):
        speech_eval.anchor_codecs(["codec2:5000"])


def test_group_rows_average_each_group_of_clips():
    result = speech_eval.CodecResult("c", 3.0, [
        {"clip": i, **{k: float(v) for k in speech_eval.METRICS}} for i, v in enumerate([1, 2, 4, math.nan])],
        {})
    rows = speech_eval.group_rows([result], ["en", "es", "en", "es"])
    assert list(rows) == ["en", "es"]
    assert rows["en"][0]["pesq_wb"] == 2.5 and rows["es"][0]["stoi"] == 2.0        # NaN left out, as in the mean
    with pytest.raises(ValueError, match="has 4 clips; groups has 3"):
        speech_eval.group_rows([result], ["en", "es", "en"])


@pytest.mark.skipif(shutil.which("c2enc") is None or shutil.which("opusenc") is None,
                    reason="needs Debian's codec2 and opus-tools (apt-get install -y codec2 opus-tools)")
def test_classical_anchors_round_trip_in_the_harness():
    clip = voiced(1.5, 16000, 2)
    found, skipped = speech_eval.anchor_codecs(["codec2:3200", "opus:12"])
    assert not skipped and set(found) == {"codec2 3200 bps", "opus 12 kbps"}
    results = {name: speech_eval.evaluate_codec(name, kbps, fn, [clip], 16000) for name, (kbps, fn) in found.items()}
    assert results["opus 12 kbps"].mean["stoi"] > results["codec2 3200 bps"].mean["stoi"] > 0.3
    assert results["opus 12 kbps"].kbps == 12.0 and results["codec2 3200 bps"].kbps == 3.2


def test_codec_config_errors_name_the_field(tmp_path):
    for override, match in ((dict(eval_levels=(9,)), r"eval_levels must hold ints in \[1, 8\]"),
                            (dict(crop_seconds=0.001), "config.crop_seconds"),
                            (dict(speed=(1.2, 0.9)), r"config.speed must be \(low, high\).*got \(1.2, 0.9\)"),
                            (dict(equalize_db=-3.0), r"config.equalize_db must be >= 0 dB"),
                            (dict(highpass_hz=9000.0), r"config.highpass_hz must lie in \(0, sample_rate / 2"),
                            (dict(anchors=("mp3:128",)), "anchor"),
                            (dict(dataset="speech"), "dataset must be one of"),
                            (dict(losses=dict(mel=0.0, stft=0.0, l1=0.0)), "needs a positive weight"),
                            (dict(gan=dict(weight=1.0, loss="hinge", start_step=0, feature_weight=1.0, periods=(),
                                           fft_sizes=(), channels=4)), "both empty")):
        c = _config(str(tmp_path / "tfds"), **override)
        with pytest.raises(ValueError, match=match):
            train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    for fields, match in (({"model.architecture": "seanet", "model.harmonic": True}, "harmonic .*needs "
                           "config.model.architecture='stft'; got 'seanet'"),
                          ({"model.architecture": "seanet", "model.harmonic": False, "model.pitch_codes": False},
                           "envelope_levels .*needs config.model.architecture='stft'; got 'seanet'"),
                          ({"model.architecture": "seanet", "model.harmonic": False, "model.pitch_codes": False,
                            "model.envelope_levels": 0, "losses.phase": 1.0},
                           "losses.phase .*needs config.model.architecture='stft'"),
                          ({"model.harmonic": False}, "pitch_codes .*needs config.model.harmonic=True"),
                          ({"losses.pitch": 1.0}, "losses.pitch .*needs config.model.harmonic=True")):
        c = _config(str(tmp_path / "tfds"))
        for key, value in fields.items():
            group, name = key.split(".")
            c[group][name] = value
        with pytest.raises(ValueError, match=match):
            train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    c = _config(str(tmp_path / "tfds"))
    c.losses.mell = 1.0
    with pytest.raises(ValueError, match="did you mean config.losses.mel"):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    c = _config(str(tmp_path / "tfds"), quantizer="vq")
    c.quantizer_kwargs = dict(codebook_size=16)
    with pytest.raises(ValueError, match="pitch_codes=True puts the pitch in front of a residual quantizer"):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    c.model.pitch_codes = False
    with pytest.raises(ValueError, match="envelope_levels > 0 sends an envelope .* in front of a residual quantizer"):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    c.model.envelope_levels = 0
    with pytest.raises(ValueError, match="one bitrate"):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
