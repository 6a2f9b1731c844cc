"""Task ``'video_tokenizer'``: causal 3D video tokenizers (MAGVIT-v2 layout) on tfds + grain input.

One train step updates the tokenizer on clips ``[B, T, H, W, C]`` in ``[0, 1]`` with the reconstruction loss
(``config.recon_loss``) plus the quantizer's loss and, with ``config.gan.weight > 0``, the image task's adversarial
machinery on whole clips: a frame + temporal discriminator (:class:`vqjax.models.video.VideoDiscriminator`), the
adaptive weight at the decoder's last layer, a start step, LeCAM and R1 (:mod:`vqjax.models.vqgan`).

Evaluation reports, on ``config.eval_split``, PSNR and SSIM per frame (averaged over frames and clips), the
temporal flicker (mean squared error of consecutive-frame differences), codebook usage, tokens per second (at
``config.frame_rate``) and bits per pixel, writes ``psnr_per_frame.json`` and draws ``reconstructions.png`` (a
clip's frames above their reconstructions) and ``psnr_per_frame.png``. The run's artifact is a :class:`vqjax.Tokenizer` (``modality='video'``, with its frame rate).

The final test (:func:`vqjax.evals.video.evaluate_codec`, on up to ``config.test_max_clips`` clips of the
eval split) scores, by one harness on the same clips, the tokenizer, each image tokenizer of
``config.frame_baselines`` applied frame by frame (runs of the image task with ``config.video_frames``), and the
classical codecs of ``config.anchors`` (MPEG-4, VP9 through PyAV) at the tokenizer's bits per clip; it writes
``rate_distortion.json`` (means, per clip and PSNR per frame), ``rate_distortion.png`` and ``codec_frames.png``.

With ``config.inflate_from`` the tokenizer starts from an image tokenizer's weights inflated into the causal 3D
layout (:func:`vqjax.models.video.inflate_image_params`): at step 0 it is that image tokenizer on the last frame of
each group of frames.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vqjax.evals import figures
from vqjax.evals import video as video_eval
from vqjax.metrics import CodeCounter
from vqjax.models import model_from_spec
from vqjax.models.video import VideoDiscriminator, inflate_image_params, latent_frames
from vqjax.tokenizers import Tokenizer, read_spec
from vqjax.train import reports, scaffold
from vqjax.train.config import (
    add_example_data,
    add_step_options,
    check_example_data,
    check_positive,
    core_config,
    plain,
    read_example_splits,
)
from vqjax.train.core import to_host
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["default_config", "check", "runlocal", "setup", "report", "model_spec", "reconstruct",
           "TASK"]

def default_config() -> ml_collections.ConfigDict:
    """Every field of a video-tokenizer experiment. The defaults: Moving MNIST (17 frames of 64x64), 4x in time and
    in space (5 x 16 x 16 latents), FSQ with levels (8, 5, 5, 5) (1000 implicit codes), at a nominal 10 frames per
    second."""
    c = add_step_options(add_example_data(core_config("video_tokenizer"), "vqjax_moving_mnist", batch_size=8,
                                          eval_batch_size=8))
    c.frame_rate = 10.0
    c.model = ml_collections.ConfigDict(dict(channels=16, channel_mult=(1, 2, 2), temporal_down=(True, True),
                                             num_res_blocks=1, latent_dim=8, patch_size=1))
    c.quantizer = "fsq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(levels=(8, 5, 5, 5)))
    c.recon_loss = "l2"
    # Start from an image tokenizer (the workdir or export of an image-task run on the clips' frames, of the same
    # channels, channel_mult, num_res_blocks, latent_dim and quantizer; patch_size 1): its weights inflated into the
    # causal 3D layout (vqjax.models.video.inflate_image_params). '' starts from a random init.
    c.inflate_from = ""
    # Adversarial training (weight 0 disables): the frame + temporal discriminator on whole clips, with the image
    # task's fields (loss, start_step, channels and num_layers of its per-frame layers, adaptive, LeCAM, R1).
    c.gan = scaffold.gan_fields()
    # The final test (on config.eval_split): the video tokenizer, each image tokenizer of frame_baselines (workdirs
    # of image-tokenizer runs on the same clips' frames, config.video_frames) applied frame by frame, and the
    # classical anchors at the video tokenizer's bits per clip, all by vqjax.evals.video on the same clips.
    c.frame_baselines = ()
    c.anchors = ("mpeg4", "vp9")
    c.test_max_clips = ml_collections.FieldReference(64, field_type=int)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny model, 6 steps, 4 eval clips; the final test on 2 clips without baselines or anchors."""
    c.model.channels = 4
    c.model.latent_dim = 4
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 32
    c.batch_size = 2
    c.eval_batch_size = 2
    c.max_eval_examples = 4
    c.num_train_steps = 6
    c.log_every_steps = 3
    c.eval_every_steps = 6
    c.checkpoint_every_steps = 3
    c.optimizer.warmup_steps = 2
    c.anchors = ()
    c.frame_baselines = ()
    c.test_max_clips = 2
    return c


def model_spec(config: ml_collections.ConfigDict, video_channels: int) -> dict:
    """The model's explicit constructor arguments (:func:`vqjax.models.video_tokenizer`)."""
    m = config.model
    return {"name": "video_tokenizer",
            "kwargs": {"channels": int(m.channels), "channel_mult": [int(v) for v in m.channel_mult],
                       "temporal_down": [bool(v) for v in m.temporal_down], "num_res_blocks": int(m.num_res_blocks),
                       "patch_size": int(m.patch_size), "latent_dim": int(m.latent_dim),
                       "video_channels": int(video_channels),
                       "quantizer": config.quantizer, "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}}


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad video-tokenizer config with a message naming the field, before any data is read."""
    check_example_data(config)
    check_positive(config, "model.channels", "model.num_res_blocks", "model.latent_dim", "model.patch_size")
    if isinstance(config.frame_rate, bool) or not config.frame_rate > 0:
        raise ValueError(f"config.frame_rate must be a positive number of frames per second; got {config.frame_rate!r}")
    if config.recon_loss not in scaffold.LOSSES:
        raise ValueError(f"config.recon_loss must be one of {scaffold.LOSSES}; got {config.recon_loss!r}")
    scaffold.check_channel_mult(config)
    scaffold.check_gan(config)
    m = config.model
    if len(m.temporal_down) != len(m.channel_mult) - 1 or any(not isinstance(v, bool) for v in m.temporal_down):
        raise ValueError(f"config.model.temporal_down must hold one bool per spatial halving "
                         f"({len(m.channel_mult) - 1}); got {tuple(m.temporal_down)}")
    model_from_spec(model_spec(config, 1))                 # refuses an unknown quantizer or quantizer field
    video_eval.anchor_codecs(tuple(config.anchors))        # refuses an unknown anchor
    if config.test_max_clips is not None:
        check_positive(config, "test_max_clips")
    if not isinstance(config.inflate_from, str):
        raise ValueError(f"config.inflate_from must be an image tokenizer's folder or ''; got {config.inflate_from!r}")
    if config.inflate_from and config.model.patch_size != 1:
        raise ValueError(f"config.inflate_from needs config.model.patch_size=1 (the image tokenizer has no patch "
                         f"stem); got {config.model.patch_size}")
    if isinstance(config.frame_baselines, str) or any(not isinstance(p, str) or not p for p in config.frame_baselines):
        raise ValueError(f"config.frame_baselines must be a tuple of image-tokenizer workdirs; got "
                         f"{config.frame_baselines!r}")


def check_clip_shape(config: ml_collections.ConfigDict, shape: tuple[int, ...], temporal: int, spatial: int) -> None:
    """Clips must hold ``1 + temporal * n`` frames and sides divisible by the spatial downsampling."""
    try:
        latent_frames(shape[0], temporal)
    except ValueError as err:
        raise ValueError(f"dataset {config.dataset!r}: {err} (config.model.temporal_down="
                         f"{tuple(config.model.temporal_down)})") from None
    if shape[1] % spatial or shape[2] % spatial:
        raise ValueError(f"frame size {shape[1]}x{shape[2]} of dataset {config.dataset!r} is not divisible by the "
                         f"downsampling factor {spatial} of config.model.channel_mult="
                         f"{tuple(config.model.channel_mult)}")


def check_frame_baselines(config: ml_collections.ConfigDict, shape: tuple[int, ...]) -> None:
    """Each of ``config.frame_baselines`` must hold an image tokenizer for the clips' frames (checked from its
    ``spec.json`` before training, so that a missing baseline does not surface after the run)."""

    for path in config.frame_baselines:
        try:
            spec = read_spec(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"config.frame_baselines: {err} (train it first: the image task with "
                                    f"config.video_frames=True on {config.dataset!r})") from None
        frame = tuple(spec.get("input", {}).get("shape", ()))
        if spec.get("modality") != "image" or frame != tuple(shape[1:]):
            raise ValueError(f"config.frame_baselines: {path!r} holds a {spec.get('modality')} tokenizer for inputs "
                             f"{frame}; the clips' frames are images {tuple(shape[1:])}")


INFLATED_FIELDS = ("channels", "channel_mult", "num_res_blocks", "latent_dim")


def inflation_source(config: ml_collections.ConfigDict, shape: tuple[int, ...]):
    """The image tokenizer of ``config.inflate_from`` (None when empty), refused before training unless it
    tokenizes the clips' frames with this config's layout and quantizer."""

    if not config.inflate_from:
        return None
    try:
        spec = read_spec(config.inflate_from)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"config.inflate_from: {err}") from None
    frame = tuple(spec.get("input", {}).get("shape", ()))
    if spec.get("modality") != "image" or frame != tuple(shape[1:]):
        raise ValueError(f"config.inflate_from: {config.inflate_from!r} holds a {spec.get('modality')} tokenizer for "
                         f"inputs {frame}; the clips' frames are images {tuple(shape[1:])}")
    got = spec["model"]["kwargs"]
    want = model_spec(config, shape[-1])["kwargs"]
    for field in INFLATED_FIELDS + ("quantizer", "quantizer_kwargs"):
        if got[field] != want[field]:
            where = f"config.model.{field}" if field in INFLATED_FIELDS else f"config.{field}"
            raise ValueError(f"config.inflate_from: the image tokenizer has {field}={got[field]!r}; {where} is "
                             f"{want[field]!r} (inflation needs the same layout)")
    return Tokenizer.load(config.inflate_from)


def eval_step(model, variables, clips, mask):
    """Masked sums over clips of the per-frame PSNR and SSIM ``[T]`` and the flicker, the codes and the
    reconstructions."""
    recon, q = model.apply(variables, clips, train=False)
    recon = jnp.clip(recon, 0.0, 1.0)
    m = video_eval.frame_metrics(clips, recon)
    sums = {"psnr": jnp.sum(m["psnr"] * mask[:, None], axis=0), "ssim": jnp.sum(m["ssim"] * mask[:, None], axis=0),
            "flicker": jnp.sum(m["flicker"] * mask)}
    return sums, q.codes, recon


def reconstruct(model, variables, clips):
    """The clips through the tokenizer's codes: ``decode(encode(clips))``, clipped to ``[0, 1]``."""
    codes = model.apply(variables, clips, method=model.encode)
    return jnp.clip(model.apply(variables, codes, method=model.decode), 0.0, 1.0)


def _test(config, model, variables, eval_source, workdir, *, shape, bits_per_clip, tokens_per_clip) -> dict:
    """The tokenizer, the frame-by-frame baselines of ``config.frame_baselines`` and the anchors of
    ``config.anchors`` on the same test clips through :func:`vqjax.evals.video.evaluate_codec`; writes
    ``rate_distortion.json``, ``rate_distortion.png`` and ``codec_frames.png``."""

    total = len(eval_source) if config.test_max_clips is None else min(len(eval_source), config.test_max_clips)
    clips = [_to_float(eval_source[i])["video"] for i in range(total)]
    recon_fn = jax.jit(functools.partial(reconstruct, model))
    codecs = [("video tokenizer", lambda c: (np.asarray(recon_fn(variables, jnp.asarray(c[None])))[0], bits_per_clip),
               tokens_per_clip)]
    for path in config.frame_baselines:
        tok = Tokenizer.load(path)
        codec, per_frame = video_eval.frame_by_frame(tok)
        name = f"per-frame {per_frame} tokens"
        if any(name == c[0] for c in codecs):           # two baselines at one rate: told apart by their runs
            name = f"{name} ({os.path.basename(os.path.normpath(path))})"
        codecs.append((name, codec, per_frame * shape[0]))
    anchors, skipped = video_eval.anchor_codecs(tuple(config.anchors))
    for reason in skipped:
        logging.getLogger("vqjax.train").warning("anchor skipped: %s", reason)
    for name in anchors:
        codecs.append((name, functools.partial(video_eval.pyav_roundtrip, anchor=name, max_bits=bits_per_clip,
                                               frame_rate=float(config.frame_rate)), None))
    results = [video_eval.evaluate_codec(name, fn, clips, frame_rate=float(config.frame_rate), tokens_per_clip=tokens)
               for name, fn, tokens in codecs]
    out = {"test_clips": len(clips), "anchors_skipped": len(skipped)}
    for r in results:
        out.update({f"{r.name}/{k}": v for k, v in r.mean.items()})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "rate_distortion.json"), "w") as fh:
            json.dump({"rows": video_eval.summary_rows(results), "per_clip": {r.name: r.per_clip for r in results},
                       "psnr_per_frame": {r.name: r.psnr_per_frame for r in results}, "skipped": skipped,
                       "frame_baselines": list(config.frame_baselines)}, fh, indent=1)
        video_eval.plot_rate_distortion(os.path.join(workdir, "rate_distortion.png"), results,
                                        f"{len(clips)} test clips, {config.dataset}:{config.eval_split}")
        rows = [clips[0]] + [r.first_decoded for r in results]
        figures.save_image_rows(os.path.join(workdir, "codec_frames.png"), rows,
                                ["original"] + [f"{r.name}\n{r.per_clip['psnr'][0]:.1f} dB, "
                                                f"{r.per_clip['bits_per_pixel'][0]:.3f} bpp" for r in results],
                                "a test clip's frames through each codec")
    return out


def _to_float(example):
    video = np.asarray(example["video"])
    scale = 1.0 / 255.0 if video.dtype == np.uint8 else 1.0
    return {"video": video.astype(np.float32) * scale}


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the data, builds the model and the steps; refuses an empty split or a bad clip shape first."""
    train_source, eval_source = read_example_splits(config)
    shape = tuple(np.asarray(train_source[0]["video"]).shape)
    spec_model = model_spec(config, shape[-1])
    model = model_from_spec(spec_model)
    check_clip_shape(config, shape, model.temporal_stride, model.spatial_stride)
    check_frame_baselines(config, shape)
    image_tokenizer = inflation_source(config, shape)
    if tuple(np.asarray(eval_source[0]["video"]).shape) != shape:
        raise ValueError(f"split {config.eval_split!r} has clips of shape {np.asarray(eval_source[0]['video']).shape}"
                         f"; split {config.train_split!r} has {shape}")
    gan, disc, half = scaffold.pixel_gan(config, VideoDiscriminator)

    def inflated(params, vq_stats):
        return (inflate_image_params(image_tokenizer.variables["params"], params),
                jax.tree.map(jnp.asarray, image_tokenizer.variables.get("vq_stats", vq_stats)))

    sc = scaffold.build(config, model=model, sample=jnp.zeros((config.batch_size,) + shape, jnp.float32),
                        devices=devices, gan=half, start_from=inflated if image_tokenizer is not None else None)
    codes_shape, vocab = sc.codes_shape, sc.vocab_size
    per_position = codes_shape[3] if len(codes_shape) == 4 else 1
    tokens_per_clip = math.prod(codes_shape)
    seconds = shape[0] / float(config.frame_rate)
    tokens_per_second = tokens_per_clip / seconds
    bits_per_pixel = tokens_per_clip * math.log2(vocab) / (shape[0] * shape[1] * shape[2])
    parts = scaffold.PixelParts(scaffold.training_model(spec_model, config), sc.tx, config.recon_loss, disc, gan, half,
                                accum_steps=int(config.grad_accum_steps))
    train = sc.jit_train(functools.partial(scaffold.pixel_step, parts))
    jit_eval = jax.jit(functools.partial(eval_step, model),
                       in_shardings=(sc.replicated, sc.batch_sharding, sc.batch_sharding),
                       out_shardings=(sc.replicated, sc.batch_sharding, sc.batch_sharding))
    bits_per_clip = tokens_per_clip * math.log2(vocab)

    def run_test(state, step):
        return _test(config, model, sc.variables(state), eval_source, workdir, shape=shape, bits_per_clip=bits_per_clip,
                     tokens_per_clip=tokens_per_clip)

    def run_eval(state, step):
        counter = CodeCounter(vocab, per_position)
        psnr = np.zeros(shape[0])
        ssim = np.zeros(shape[0])
        flicker, count, first = 0.0, 0.0, None
        for batch in sc.eval_batches(config, eval_source, _to_float):
            mask = sc.global_batch(batch["mask"])
            sums, codes, recon = jit_eval(sc.variables(state), sc.global_batch(batch["video"]), mask)
            psnr += np.asarray(sums["psnr"])
            ssim += np.asarray(sums["ssim"])
            flicker += float(sums["flicker"])
            mask_all = to_host(mask)
            count += float(mask_all.sum())
            codes = to_host(codes)
            counter.update(codes.reshape(codes.shape[0], -1, per_position), mask_all)
            if first is None:
                first = (to_host(sc.global_batch(batch["video"]))[0], to_host(recon)[0])
        per_frame = psnr / count
        result = {"psnr": float(per_frame.mean()), "ssim": float((ssim / count).mean()), "flicker": flicker / count,
                  "psnr_first_frame": float(per_frame[0]), "psnr_last_frame": float(per_frame[-1])}
        result.update(counter.result())
        result.update(tokens_per_second=tokens_per_second, bits_per_pixel=bits_per_pixel)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "psnr_per_frame.json"), "w") as fh:
                json.dump({"step": int(step), "psnr": per_frame.tolist(), "ssim": (ssim / count).tolist()}, fh)
            figures.save_reconstructions(os.path.join(workdir, "reconstructions.png"), first[0], first[1],
                                         f"step {step}: a clip's frames, PSNR {result['psnr']:.2f} dB")
            figures.save_curve(os.path.join(workdir, "psnr_per_frame.png"), per_frame, "frame index", "PSNR (dB)",
                               f"step {step}: PSNR by frame, {int(count)} clips")
        return result

    spec = sc.spec("video", spec_model, {"shape": list(shape), "dtype": "float32", "range": [0.0, 1.0]}, config,
                   frame_rate=float(config.frame_rate), tokens_per_second=tokens_per_second,
                   bits_per_pixel=bits_per_pixel)
    info = {"clip_shape": list(shape), "vocab_size": int(vocab), "codes_shape": list(codes_shape),
            "tokens_per_second": tokens_per_second, "bits_per_pixel": bits_per_pixel, "dataset": config.dataset,
            "quantizer": config.quantizer, "inflated_from": config.inflate_from or None}
    make_step = sc.make_step(config, train_source, train, "video", transform=_to_float)
    return Run(init_state=sc.init_state, make_step=make_step, evaluate=run_eval, replicated=sc.replicated, info=info,
               test=run_test, spec=spec, abstract=sc.abstract,
               state_sharding=sc.state_sharding)


def report(result: dict, workdir: str) -> str:
    """The final evaluation as a table, and where the figures and the tokenizer are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("PSNR (mean over frames)", f"{result['psnr']:.2f} dB"),
            ("PSNR first / last frame", f"{result['psnr_first_frame']:.2f} / {result['psnr_last_frame']:.2f} dB"),
            ("SSIM", f"{result['ssim']:.4f}"), ("flicker (MSE of frame differences)", f"{result['flicker']:.5f}"),
            ("codebook usage", f"{100 * result['usage']:.1f}%"),
            ("tokens per second", f"{result['tokens_per_second']:.0f}"),
            ("bits per pixel", f"{result['bits_per_pixel']:.4f}")]
    names = [k[:-len("/psnr")] for k in result if k.endswith("/psnr")]
    for name in names:                                   # the final test's codecs on the same clips
        get = lambda k: result.get(f"{name}/{k}", math.nan)
        rate = f"  {get('tokens_per_second'):.0f} tokens/s" if f"{name}/tokens_per_second" in result else ""
        rows.append((f"test: {name}", f"PSNR {get('psnr'):.2f} dB ({get('psnr_past_first'):.2f} past frame 0)  "
                                      f"SSIM {get('ssim'):.4f}  flicker "
                                      f"{get('flicker'):.5f}  {get('bits_per_pixel'):.4f} bpp{rate}"))
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"PSNR per frame: {os.path.join(workdir, 'psnr_per_frame.json')}",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    figures = ("reconstructions.png", "psnr_per_frame.png", "loss_curves.png")
    if names:
        extra.insert(1, f"test, per clip: {os.path.join(workdir, 'rate_distortion.json')}")
        figures += ("rate_distortion.png", "codec_frames.png")
    return reports.result_table("eval metric", rows, figures, workdir, extra, result)


TASK = register_task(Task("video_tokenizer", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
