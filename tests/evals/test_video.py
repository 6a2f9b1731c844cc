"""The video harness: scores follow the metrics' definitions, the classical anchors keep to their bit budget and
gain quality with it, and a non-image tokenizer is refused as a frame-by-frame baseline."""

import numpy as np
import pytest

from vqjax.evals import video as video_eval


def _clip(channels=1, frames=9, seed=0):
    """A bright square moving over a smooth background (codecs keep it well)."""
    y, x = np.mgrid[:32, :32] / 32.0
    out = np.empty((frames, 32, 32, channels), np.float32)
    for t in range(frames):
        frame = 0.2 + 0.3 * x
        frame[8:16, 2 + 2 * t:10 + 2 * t] = 0.9
        out[t] = frame[..., None]
    return out + np.random.default_rng(seed).uniform(0, 0.01, out.shape).astype(np.float32)


def test_evaluate_codec_scores_each_clip_and_frame():
    clips = [_clip(seed=0), _clip(seed=1)]
    identity = video_eval.evaluate_codec("copy", lambda c: (c, 1000.0), clips, frame_rate=10.0, tokens_per_clip=90)
    assert identity.mean["psnr"] > 90 and identity.mean["flicker"] == 0.0
    assert identity.mean["bits_per_pixel"] == pytest.approx(1000 / (9 * 32 * 32))
    assert identity.mean["tokens_per_second"] == pytest.approx(100.0)
    offset = video_eval.evaluate_codec("offset", lambda c: (c + 0.05, 0.0), clips, frame_rate=10.0)
    np.testing.assert_allclose(offset.psnr_per_frame, 20 * np.log10(1 / 0.05), atol=0.2)     # clipped at 1 a bit
    assert "tokens_per_second" not in offset.mean and len(offset.per_clip["psnr"]) == 2
    np.testing.assert_allclose(offset.first_decoded, np.clip(clips[0] + 0.05, 0, 1))
    # a codec exact on the first frame only: PSNR past the first frame is that of the others alone
    first_only = video_eval.evaluate_codec("first", lambda c: (np.concatenate([c[:1], c[1:] + 0.1]), 0.0), clips,
                                           frame_rate=10.0)
    np.testing.assert_allclose(first_only.per_clip["psnr_past_first"],
                               [np.mean(first_only.psnr_per_frame[1:])] * 2, atol=0.05)
    assert first_only.mean["psnr"] > first_only.mean["psnr_past_first"] + 5
    with pytest.raises(ValueError, match="returned shape"):
        video_eval.evaluate_codec("bad", lambda c: (c[:-1], 0.0), clips, frame_rate=10.0)


@pytest.mark.parametrize("anchor", ["mpeg4", "vp9"])
def test_anchors_keep_to_the_budget_and_improve_with_it(anchor):
    pytest.importorskip("av")
    clip = _clip(channels=3)
    coarse, coarse_bits = video_eval.pyav_roundtrip(clip, anchor, max_bits=0.0, frame_rate=10.0)   # nothing fits
    assert coarse.shape == clip.shape and coarse_bits > 0                    # the coarsest setting, its real size
    budget = 4 * coarse_bits
    fine, fine_bits = video_eval.pyav_roundtrip(clip, anchor, max_bits=budget, frame_rate=10.0)
    assert coarse_bits < fine_bits <= budget
    err = lambda d: float(np.mean((d - clip) ** 2))
    assert err(fine) < err(coarse)
    grey, _ = video_eval.pyav_roundtrip(clip[..., :1], anchor, max_bits=budget, frame_rate=10.0)
    assert grey.shape == clip[..., :1].shape and float(np.mean((grey - clip[..., :1]) ** 2)) < 0.01


def test_bad_anchor_and_non_image_tokenizer_are_refused():
    with pytest.raises(ValueError, match="video anchors must be among"):
        video_eval.anchor_codecs(("h265",))
    with pytest.raises(ValueError, match="anchor must be one of"):
        video_eval.pyav_roundtrip(_clip(), "h265", 1e4, 10.0)

    class Audio:
        modality = "audio"

    with pytest.raises(ValueError, match="needs an image tokenizer; got modality 'audio'"):
        video_eval.frame_by_frame(Audio())
