"""The 'video_tokenizer' task end to end on a small Moving MNIST: it trains, evaluates PSNR/SSIM per frame,
flicker, tokens per second and bits per pixel, draws its figures and leaves a video Tokenizer with its frame rate;
the per-frame metrics against hand-made cases; config errors named before any data is read."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.data import builders
from vqjax.models import model_from_spec
from vqjax.train import reports, train_and_evaluate
from vqjax.evals import video as video_eval
from vqjax.train.tasks import video_tokenizer


def _config(data_dir):
    from experiments_loader import load_experiment

    c = load_experiment("moving_mnist_video", "runlocal")
    c.data_dir = data_dir
    return c


def test_video_run_reports_and_leaves_a_tokenizer(tmp_path, monkeypatch, one):
    from experiments_loader import load_experiment

    monkeypatch.setattr(builders.VqjaxMovingMnist, "NUM_CLIPS", {"train": 8, "test": 4})
    frames_dir = str(tmp_path / "frames")                 # the frame-by-frame baseline, on the same clips' frames
    frames = load_experiment("moving_mnist_frames", "runlocal")
    frames.data_dir = str(tmp_path / "tfds")
    frames.num_train_steps, frames.batch_size, frames.max_eval_examples = 4, 17, 34
    frames_result = train_and_evaluate(frames, frames_dir, progress=False, devices=one)
    assert np.isfinite(frames_result["psnr"])
    workdir = str(tmp_path / "run")
    c = _config(str(tmp_path / "tfds"))
    copy_dir = str(tmp_path / "frames_copy")              # a second baseline at the same rate gets its run's name
    shutil.copytree(frames_dir, copy_dir)
    c.frame_baselines = (frames_dir, copy_dir)
    c.anchors = ("mpeg4", "vp9")
    c.gan.weight, c.gan.start_step, c.gan.channels = 0.1, 3, 4      # the frame + temporal discriminator from step 3
    result = train_and_evaluate(c, workdir, progress=False, devices=one)
    assert np.isfinite(result["psnr"]) and 0 <= result["ssim"] <= 1 and result["flicker"] >= 0
    rows = [r for r in reports.read_metrics(workdir) if r["split"] == "train"]
    assert all(np.isfinite(r[k]) for r in rows for k in ("disc_loss", "gen_loss", "adaptive_weight"))
    assert rows[0]["disc_loss"] == 0.0 and rows[-1]["disc_loss"] > 0 and rows[-1]["adaptive_weight"] > 0
    # 5 x 8 x 8 FSQ tokens (1000 codes) for 17 frames of 64x64 at 10 frames per second
    assert result["tokens_per_second"] == pytest.approx(5 * 8 * 8 / 1.7)
    assert result["bits_per_pixel"] == pytest.approx(5 * 8 * 8 * np.log2(1000) / (17 * 64 * 64))
    # the final test: the tokenizer, the per-frame image tokenizer (4 x 4 tokens a frame) and both anchors
    assert result["test_clips"] == 2 and result["anchors_skipped"] == 0
    assert result["video tokenizer/bits_per_pixel"] == pytest.approx(result["bits_per_pixel"])
    assert result["per-frame 16 tokens/tokens_per_second"] == pytest.approx(16 * 10)
    assert result["per-frame 16 tokens/bits_per_pixel"] == pytest.approx(16 * np.log2(1000) / (64 * 64))
    for name in ("mpeg4", "vp9"):
        assert np.isfinite(result[f"{name}/psnr"]) and result[f"{name}/bits_per_pixel"] > 0
        assert f"{name}/tokens_per_second" not in result                 # no tokens: no NaN in TensorBoard
    table = json.load(open(os.path.join(workdir, "rate_distortion.json")))
    assert [r["codec"] for r in table["rows"]] == ["video tokenizer", "per-frame 16 tokens",
                                                   "per-frame 16 tokens (frames_copy)", "mpeg4", "vp9"]
    assert result["per-frame 16 tokens (frames_copy)/psnr"] == pytest.approx(result["per-frame 16 tokens/psnr"])
    assert len(table["per_clip"]["vp9"]["psnr"]) == 2 and len(table["psnr_per_frame"]["mpeg4"]) == 17
    for fig in ("rate_distortion.png", "codec_frames.png"):
        assert os.path.getsize(os.path.join(workdir, fig)) > 1000
    assert "per-frame 16 tokens" in video_tokenizer.report(result, workdir)
    # a baseline that is missing, or not an image tokenizer of these frames, is refused before any training
    for baselines, error, match in (((str(tmp_path / "missing"),), FileNotFoundError, "config.frame_baselines: .*"
                                     "holds no spec.json"),
                                    ((workdir,), ValueError, r"holds a video tokenizer .* frames are images")):
        c.frame_baselines = baselines
        with pytest.raises(error, match=match):
            train_and_evaluate(c, str(tmp_path / "refused"), progress=False, devices=one)
        assert not os.path.exists(os.path.join(tmp_path, "refused", "checkpoints"))
    per_frame = json.load(open(os.path.join(workdir, "psnr_per_frame.json")))
    assert len(per_frame["psnr"]) == 17 and np.mean(per_frame["psnr"]) == pytest.approx(result["psnr"])
    for fig in ("reconstructions.png", "psnr_per_frame.png", "loss_curves.png"):
        assert os.path.getsize(os.path.join(workdir, fig)) > 1000

    import vqjax

    tok = vqjax.Tokenizer.load(workdir)
    assert isinstance(tok, vqjax.VideoTokenizer) and tok.modality == "video" and tok.frame_rate == 10.0
    assert tok.temporal_stride == 4 and tok.spatial_stride == 8          # a 2x2 patch stem and two halvings
    clip = (np.random.default_rng(0).uniform(size=(1, 17, 64, 64, 1)) * 255).astype(np.uint8)
    codes = np.asarray(tok.encode(clip))
    assert codes.shape == (1, 5, 8, 8)
    np.testing.assert_array_equal(codes, tok.encode(clip.astype(np.float32) / 255.0))
    assert tok.decode(codes).shape == (1, 17, 64, 64, 1)
    # any causal length and size: an image, 9 frames of 32x48
    assert tok.encode(clip[:, :1]).shape == (1, 1, 8, 8)
    assert tok.encode(clip[:, :9, :32, :48]).shape == (1, 3, 4, 6)
    # chunked encoding and decoding give the whole clip's codes and frames
    state, parts = None, []
    for a, b in ((0, 5), (5, 13), (13, 17)):
        c, state = tok.encode_chunk(clip[:, a:b], state)
        parts.append(np.asarray(c))
    np.testing.assert_array_equal(np.concatenate(parts, 1), codes)
    state, frames = None, []
    for a, b in ((0, 2), (2, 5)):
        f, state = tok.decode_chunk(codes[:, a:b], state)
        frames.append(np.asarray(f))
    np.testing.assert_allclose(np.concatenate(frames, 1), tok.decode(codes), rtol=1e-5, atol=1e-5)
    for bad, match in ((clip[:, :16], r"1 \+ 4 \* n frames .* got 16"), (clip[:, :, :28], "multiples of 8"),
                       (clip[..., 0], r"clips must be \[B, frames, height, width, 1\]"),
                       (np.full((1, 5, 8, 8, 1), np.nan, np.float32), "NaN"),
                       (clip.astype(np.float32), r"values must lie in \[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            tok.encode(bad)
    with pytest.raises(ValueError, match="a later chunk must hold a multiple of 4 frames"):
        tok.encode_chunk(clip[:, 5:8], tok.encode_chunk(clip[:, :5])[1])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 1000\)"):
        tok.decode(codes + 1000)

    # config.inflate_from: the per-frame image tokenizer inflated into a video tokenizer of its layout (patch 1,
    # time halved at the last two of its four halvings) is that image tokenizer on each group's last frame
    image = vqjax.Tokenizer.load(frames_dir)
    c = _config(str(tmp_path / "tfds"))
    layout = image.spec["model"]["kwargs"]
    c.model.update(patch_size=1, channels=layout["channels"], channel_mult=tuple(layout["channel_mult"]),
                   latent_dim=layout["latent_dim"], temporal_down=(False, False, True, True))
    c.inflate_from = frames_dir
    run = video_tokenizer.setup(c, str(tmp_path / "inflated"), devices=one)
    state = jax.jit(run.init_state)(jax.random.key(0))
    model = model_from_spec(run.spec["model"])
    x = clip.astype(np.float32) / 255.0
    recon, _ = jax.jit(model.apply)({"params": state.params, "vq_stats": state.vq_stats}, x)
    held = [0] + [4 * ((t + 3) // 4) for t in range(1, 17)]
    image_recon = image.model.apply(image.variables, x[0, held])[0]
    np.testing.assert_allclose(recon[0], image_recon, rtol=1e-4, atol=1e-4)
    assert run.info["inflated_from"] == frames_dir
    for field, value, match in (("model.latent_dim", 2, "image tokenizer has latent_dim=.* config.model.latent_dim"),
                                ("model.patch_size", 2, "inflate_from needs config.model.patch_size=1")):
        bad = c.copy_and_resolve_references()
        bad.update_from_flattened_dict({field: value})
        with pytest.raises(ValueError, match=match):
            train_and_evaluate(bad, str(tmp_path / "refused_inflation"), progress=False, devices=one)


def test_frame_metrics_by_hand():
    clips = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 3, 16, 16, 1)).astype(np.float32))
    same = video_eval.frame_metrics(clips, clips)
    assert float(same["psnr"].min()) > 90 and np.allclose(same["ssim"], 1.0, atol=1e-4)
    assert np.allclose(same["flicker"], 0.0)
    shifted = video_eval.frame_metrics(clips, clips + 0.1)          # a constant offset: no flicker
    np.testing.assert_allclose(shifted["psnr"], 20.0, atol=1e-3)
    np.testing.assert_allclose(shifted["flicker"], 0.0, atol=1e-10)
    noisy = clips.at[:, 1].add(0.1)                                       # one frame off: two differences wrong
    np.testing.assert_allclose(video_eval.frame_metrics(clips, noisy)["flicker"], 0.01, rtol=1e-4)


@pytest.mark.parametrize("field, value, match", [
    ("frame_rate", 0.0, "config.frame_rate must be a positive number"),
    ("recon_loss", "l3", "config.recon_loss must be one of"),
    ("model.temporal_down", (True,), "temporal_down must hold one bool per spatial halving"),
    ("gan.loss", "wasserstein", "config.gan.loss must be one of"),
    ("gan.weight", -0.1, r"config.gan.weight must be >= 0; got -0.1"),
])
def test_bad_config_is_refused(field, value, match):
    from vqjax.train.tasks import get_task

    c = _config("/nonexistent")
    parent, _, name = field.rpartition(".")
    (c[parent] if parent else c)[name] = value
    with pytest.raises(ValueError, match=match):
        get_task("video_tokenizer").check(c)
