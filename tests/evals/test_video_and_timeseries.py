"""The video and time-series evaluators on untrained artifacts: the tokenizer's row is the harness's score of its
own round trip, the anchors run at its rate, and a tokenizer of another modality is refused."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.evals import timeseries as ts_eval, video as video_eval
from vqjax.models import model_from_spec
from vqjax.tokenizers import TimeSeriesTokenizer, VideoTokenizer


def _video_tok():
    spec_model = {"name": "video_tokenizer", "kwargs": {
        "channels": 4, "channel_mult": [1, 2], "temporal_down": [True], "num_res_blocks": 1, "latent_dim": 4,
        "video_channels": 1, "quantizer": "fsq", "quantizer_kwargs": {"levels": [5, 5, 5, 5]}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, jnp.zeros((1, 5, 16, 16, 1)))
    spec = {"modality": "video", "model": spec_model, "input": {"shape": [5, 16, 16, 1], "range": [0.0, 1.0]},
            "codes_shape": [3, 8, 8], "vocab_size": 625, "frame_rate": 10.0}
    return VideoTokenizer(spec, model, dict(variables))


def test_video_rows_score_the_round_trip_and_the_anchors_at_its_bits():
    pytest.importorskip("av", reason="needs PyAV (the test extra)")
    tok = _video_tok()
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
    spec_model = {"name": "sequence_tokenizer", "kwargs": {
        "channels": 4, "strides": [2, 2], "latent_dim": 4, "signal_channels": 2, "mean": [0.0, 0.0],
        "scale": [1.0, 1.0], "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 16}}}
    model = model_from_spec(spec_model)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "vq": jax.random.key(1)}, jnp.zeros((1, 32, 2)))
    spec = {"modality": "timeseries", "model": spec_model, "input": {"shape": [32, 2], "range": None},
            "codes_shape": [8], "vocab_size": 16, "sample_rate": 64.0,
            "normalization": {"mean": [0.0, 0.0], "scale": [1.0, 1.0]}}
    tok = TimeSeriesTokenizer(spec, model, dict(variables))
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
