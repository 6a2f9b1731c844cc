"""The speech evaluator on an audio tokenizer artifact: the tokenizer's row is the harness's score of its own
round trip; bare anchor names pick the anchors' rates from the tokenizer's bitrate; missing binaries are named."""

import shutil

import numpy as np
import pytest

pytest.importorskip("pystoi", reason="needs pystoi (the test extra)")

from speech_data import voiced  # noqa: E402
from tiny_tokenizers import audio_tokenizer  # noqa: E402

from vqjax.evals import speech  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return audio_tokenizer()


def test_bare_anchor_names_take_the_tokenizers_rate():
    assert speech._anchor_specs(["codec2", "opus"], 2.9) == ["codec2:3200", "opus:6"]
    assert speech._anchor_specs(["codec2", "opus", "codec2:700"], 9.6) == ["codec2:3200", "opus:9.6", "codec2:700"]
    with pytest.raises(ValueError, match="must be 'codec2:BITRATE' or 'opus:KBPS'"):
        speech.anchor_codecs(speech._anchor_specs(["mp3"], 3.0))


def test_the_tokenizer_row_is_the_harness_score_of_its_round_trip(tok):
    clips = [voiced(0.5, 16000, seed) for seed in (0, 1)]
    rows = speech.evaluate(tok, clips, anchors=("codec2", "opus"))
    ours = rows[0] if rows[0]["codec"] == "vqjax" else next(r for r in rows if r.get("codec") == "vqjax")
    assert ours["kbps"] == 9.6
    decoded = [np.asarray(tok.decode(tok.encode(c[None], sample_rate=16000)))[0][:c.size] for c in clips]
    want = speech.evaluate_codec("x", 9.6, lambda w, sr, it=iter(decoded): next(it), clips, 16000).mean
    for key in ("stoi", "si_sdr", "mel_distance"):
        assert ours[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6)
    names = {r["codec"] for r in rows}
    have = shutil.which("c2enc") is not None
    assert ("codec2 3200 bps" in names) == have
    assert any("codec2:3200 (missing" in n for n in names) != have
    one = speech.evaluate(tok, clips[:1], anchors=(), num_levels=1)
    assert one[0]["kbps"] == pytest.approx(400 * 8 / 1000) and len(one) == 1


def test_refusals(tok):
    with pytest.raises(ValueError, match="clips is empty"):
        speech.evaluate(tok, [])
    with pytest.raises(ValueError, match="tok must be an audio tokenizer; got modality 'image'"):
        speech.evaluate(type("T", (), {"modality": "image"})(), [np.zeros(1600)])
