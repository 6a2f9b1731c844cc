"""The video and time-series evaluators on untrained artifacts: the tokenizer's row is the harness's score of its
own round trip, the anchors run at its rate, and a tokenizer of another modality is refused."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizers import timeseries_tokenizer, video_tokenizer

from vqjax.evals import timeseries as ts_eval
from vqjax.evals import video as video_eval


def test_video_rows_score_the_round_trip_and_the_anchors_at_its_bits():
    pytest.importorskip("av", reason="needs PyAV (the test extra)")
    tok = video_tokenizer()
    clips = [np.random.default_rng(s).uniform(size=(5, 16, 16, 1)).astype(np.float32) for s in range(2)]
    rows = video_eval.evaluate(tok, clips, anchors=("mpeg4",))
    ours = rows[0]
    assert ours["codec"] == "vqjax"
    assert ours["bits_per_pixel"] == pytest.approx(3 * 8 * 8 * math.log2(625) / (5 * 16 * 16))
    assert ours["tokens_per_second"] == pytest.approx(3 * 8 * 8 * 10.0 / 5)
    recon = np.asarray(tok.decode(tok.encode(np.stack(clips))))
    want = np.mean([float(np.mean(video_eval.frame_metrics(jnp.asarray(c[None]), jnp.asarray(r[None]))["psnr"]))
                    for c, r in zip(clips, recon)])
    assert ours["psnr"] == pytest.approx(want, rel=1e-5)
    mpeg4 = next(r for r in rows if r["codec"].startswith("mpeg4"))
    if not mpeg4.get("skipped"):                                   # scored by the same harness on the same clips
        assert math.isfinite(mpeg4["psnr"]) and mpeg4["bits_per_pixel"] > 0 and "tokens_per_second" not in mpeg4
    with pytest.raises(ValueError, match="tok must be a video tokenizer"):
        video_eval.evaluate(type("T", (), {"modality": "image"})(), clips)


def test_timeseries_rows_score_the_round_trip_beside_fast():
    tok = timeseries_tokenizer()
    rng = np.random.default_rng(0)
    signals = np.cumsum(rng.normal(size=(6, 32, 2)), axis=1).astype(np.float32)
    rows = ts_eval.evaluate(tok, signals, fast_train=signals, fast_scales=(4.0,), fast_vocab_size=256)
    assert [r["codec"] for r in rows] == ["vqjax", "FAST 4"]
    recon = np.asarray(tok.decode(tok.encode(signals)))
    want = ts_eval.signal_metrics(signals, recon)["nmse"].mean()
    assert rows[0]["nmse"] == pytest.approx(want, rel=1e-5)
    assert rows[0]["tokens_per_chunk"] == 8 and rows[0]["tokens_per_second"] == pytest.approx(8 * 64.0 / 32)
    with pytest.raises(ValueError, match="tok must be a time-series tokenizer"):
        ts_eval.evaluate(type("T", (), {"modality": "audio"})(), signals)
