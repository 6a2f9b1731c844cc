"""Task ``'image_tokenizer'``: VQ-VAE / VQGAN image tokenizers on tfds + grain input, on a 2D grid of tokens
(``config.architecture='grid'``, :class:`vqjax.models.ImageTokenizer`) or as a 1D sequence of ordered tokens whose
every prefix decodes (``'1d'``, :class:`vqjax.models.Image1DTokenizer`, trained with nested dropout).

One train step (:func:`vqjax.train.scaffold.pixel_step`) updates the tokenizer (reconstruction + quantizer loss
+ optional perceptual term + optional adversarial term with the adaptive weight), then the discriminator and the EMA
of the generator weights. Evaluation reports PSNR, SSIM, MSE, codebook usage, perplexity, dead codes and bits per
image on ``config.eval_split`` and draws ``reconstructions.png``; a 1D tokenizer also reports PSNR and SSIM decoded
from its first ``k`` tokens, ``k = min_tokens, 2 min_tokens, 4 min_tokens, ... K`` (``psnr_k<k>``, ``ssim_k<k>``). The run's artifact is an image tokenizer
(:class:`vqjax.tokenizers.ImageTokenizer`) whose spec rebuilds the model through :func:`vqjax.models.model_from_spec`.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections

from vqjax.data import pipeline
from vqjax.evals import figures
from vqjax.evals import image as image_eval
from vqjax.metrics import CodeCounter
from vqjax.models import model_from_spec
from vqjax.models.vqgan import PatchDiscriminator
from vqjax.train import reports, scaffold
from vqjax.train.config import (
    add_example_data,
    add_step_options,
    check_example_data,
    check_positive,
    core_config,
    optimizer_config,
    plain,
    read_example_splits,
)
from vqjax.train.core import to_host
from vqjax.train.perceptual import feature_net_accuracy, load_or_train_feature_net
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["default_config", "check", "runlocal", "setup", "report", "build_model", "model_spec",
           "check_image_shape", "grid_for_tokens", "ARCHITECTURES", "GRID_MULT", "TASK"]


def default_config() -> ml_collections.ConfigDict:
    """Every field of an image-tokenizer experiment, with defaults: a small VQ-VAE for the bundled 28x28 MNIST
    digits (16 base channels, two downsamplings to 7x7 tokens, 32-d latents), sized for a CPU demo."""
    c = add_step_options(add_example_data(core_config("image_tokenizer"), "vqjax_mnist", batch_size=32,
                                          eval_batch_size=250))
    c.video_frames = False     # the dataset holds clips: train and score on their frames (pipeline.VideoFrames)
    c.architecture = "grid"    # 'grid': convolutional 2D grid of tokens; '1d': ordered 1D tokens (config.model_1d)
    c.model = ml_collections.ConfigDict(dict(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, latent_dim=32))
    c.pad_images = False       # grid: zero-pad images whose side the downsampling does not divide (crop the output)
    c.model_1d = ml_collections.ConfigDict(dict(image_size=(28, 28), patch_size=4, num_tokens=32, min_tokens=1,
                                                width=128,
                                                encoder_layers=4, decoder_layers=4, num_heads=4, latent_dim=16,
                                                linear_path=False, length_sampling="log_uniform"))
    c.quantizer = "vq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(codebook_size=1024))
    c.optimizer = optimizer_config()
    c.recon_loss = "l2"
    c.perceptual_weight = 0.0  # on the features of a classifier trained in-repo on the run's labels (0 disables)
    c.feature_net_classes = 10
    c.feature_net_steps = 300
    c.gan = scaffold.gan_fields()
    c.ema_decay = 0.0          # EMA of the generator weights, used for evaluation and the tokenizer (0 disables)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny model, 20 steps, 100 eval images, a 64-code codebook where the quantizer has one."""
    c.model.channels = 8
    c.model.latent_dim = 8
    c.model_1d.width, c.model_1d.encoder_layers, c.model_1d.decoder_layers = 32, 1, 1
    c.model_1d.num_tokens = min(c.model_1d.num_tokens, 8)
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 64
    c.batch_size, c.eval_batch_size, c.max_eval_examples = 16, 40, 100
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 5, 10, 10
    c.optimizer.warmup_steps = 5
    return c


ARCHITECTURES = ("grid", "1d")
GRID_MULT = (1, 2, 2, 4, 4, 4, 4, 4)     # channel multipliers of grid_for_tokens, finest level first


def grid_for_tokens(config: ml_collections.ConfigDict, tokens: int,
                    image_size: tuple[int, int]) -> ml_collections.ConfigDict:
    """``config`` as the grid tokenizer of ``tokens`` codes (a ``side x side`` grid, ``side`` a power of two) on
    ``image_size`` images: as many stride-2 levels as bring the side, padded to a power of two, down to ``side``
    (widths :data:`GRID_MULT`), ``pad_images`` where the side is not already a power of two; everything else
    (data, quantizer, loss, optimizer, steps) kept, so a 1D tokenizer is judged against it on equal terms.

    Raises:
      ValueError: ``tokens`` not the square of a power of two no larger than the image.
    """
    side = int(round(tokens ** 0.5)) if isinstance(tokens, int) and tokens > 0 else 0
    padded = 1 << (max(image_size) - 1).bit_length()
    if side * side != tokens or side & (side - 1) or side > padded:
        raise ValueError(f"grid_for_tokens: tokens must be one of {[4 ** i for i in range(padded.bit_length())]} "
                         f"(square grids of a {image_size[0]}x{image_size[1]} image); got {tokens!r}")
    levels = (padded // side).bit_length()
    if levels > len(GRID_MULT):
        raise ValueError(f"grid_for_tokens: {levels} levels for {tokens} tokens of a {image_size[0]}x{image_size[1]} "
                         f"image; GRID_MULT has {len(GRID_MULT)}")
    c = ml_collections.ConfigDict(config.to_dict())
    c.architecture = "grid"
    c.pad_images = tuple(image_size) != (padded, padded)
    c.model.channel_mult = GRID_MULT[:levels]
    return c


def model_spec(config: ml_collections.ConfigDict, image_channels: int,
               image_size: tuple[int, int] | None = None) -> dict:
    """The model's explicit constructor arguments (:func:`vqjax.models.image_tokenizer` or, for
    ``config.architecture='1d'``, :func:`vqjax.models.image_1d_tokenizer`, of ``config.model_1d.image_size``) for
    ``image_size = (H, W)`` images (a grid model records it only where it pads)."""
    quantizer = {"quantizer": config.quantizer, "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}
    if config.architecture == "1d":
        m = config.model_1d
        return {"name": "image_1d_tokenizer",
                "kwargs": {"image_size": [int(v) for v in m.image_size], "image_channels": int(image_channels),
                           **{k: int(m[k]) for k in ("patch_size", "num_tokens", "min_tokens", "width",
                                                     "encoder_layers", "decoder_layers", "num_heads", "latent_dim")},
                           "linear_path": bool(m.linear_path), "length_sampling": str(m.length_sampling),
                           **quantizer}}
    m = config.model
    kwargs = {"channels": int(m.channels), "channel_mult": [int(v) for v in m.channel_mult],
              "num_res_blocks": int(m.num_res_blocks), "latent_dim": int(m.latent_dim),
              "image_channels": int(image_channels), **quantizer}
    factor = 2 ** (len(m.channel_mult) - 1)
    if image_size is not None and (image_size[0] % factor or image_size[1] % factor):
        kwargs["image_size"] = [int(v) for v in image_size]
    return {"name": "image_tokenizer", "kwargs": kwargs}


def build_model(config: ml_collections.ConfigDict, image_channels: int, image_size: tuple[int, int] | None = None):
    """The tokenizer module a config describes, for ``image_size`` images with ``image_channels`` channels."""
    return model_from_spec(model_spec(config, image_channels, image_size))


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad image-tokenizer config with a message naming the field, before any data is read."""
    check_example_data(config)
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"config.architecture must be one of {ARCHITECTURES}; got {config.architecture!r}")
    if config.architecture == "1d":
        check_positive(config, *(f"model_1d.{k}" for k in ("patch_size", "num_tokens", "min_tokens", "width",
                                                           "encoder_layers", "decoder_layers", "num_heads",
                                                           "latent_dim")))
        size = config.model_1d.image_size
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % config.model_1d.patch_size
                                 for v in size):
            raise ValueError(f"config.model_1d.image_size must be (H, W), each a multiple of config.model_1d.patch_size "
                             f"({config.model_1d.patch_size}); got {tuple(size)}")
        if config.model_1d.min_tokens > config.model_1d.num_tokens:
            raise ValueError(f"config.model_1d.min_tokens must be <= config.model_1d.num_tokens "
                             f"({config.model_1d.num_tokens}); got {config.model_1d.min_tokens}")
        if not isinstance(config.model_1d.linear_path, bool):
            raise ValueError(f"config.model_1d.linear_path must be True or False; got {config.model_1d.linear_path!r}")
        if config.model_1d.width % config.model_1d.num_heads:
            raise ValueError(f"config.model_1d.width ({config.model_1d.width}) must be a multiple of "
                             f"config.model_1d.num_heads ({config.model_1d.num_heads})")
    check_positive(config, "model.channels", "model.num_res_blocks", "model.latent_dim")
    if not isinstance(config.pad_images, bool):
        raise ValueError(f"config.pad_images must be True or False; got {config.pad_images!r}")
    if not isinstance(config.video_frames, bool):
        raise ValueError(f"config.video_frames must be True or False; got {config.video_frames!r}")
    if config.recon_loss not in scaffold.LOSSES:
        raise ValueError(f"config.recon_loss must be one of {scaffold.LOSSES}; got {config.recon_loss!r}")
    scaffold.check_channel_mult(config)
    build_model(config, 1)                   # refuses an unknown quantizer or quantizer field
    if config.perceptual_weight < 0:
        raise ValueError(f"config.perceptual_weight must be >= 0; got {config.perceptual_weight}")
    scaffold.check_gan(config)
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"config.ema_decay must be in [0, 1); got {config.ema_decay}")
    if config.perceptual_weight > 0:
        check_positive(config, "feature_net_classes", "feature_net_steps")


def check_image_shape(config: ml_collections.ConfigDict, shape: tuple[int, int, int]) -> None:
    """The image side must be divisible by the encoder's total downsampling ``2^(len(channel_mult) - 1)`` (unless
    ``config.pad_images``); a 1D tokenizer's images must have ``config.model_1d.image_size``."""
    if config.architecture == "1d":
        if tuple(shape[:2]) != tuple(config.model_1d.image_size):
            raise ValueError(f"images of dataset {config.dataset!r} are {shape[0]}x{shape[1]}; "
                             f"config.model_1d.image_size is {tuple(config.model_1d.image_size)}")
        return
    factor = 2 ** (len(config.model.channel_mult) - 1)
    if (shape[0] % factor or shape[1] % factor) and not config.pad_images:
        raise ValueError(f"image size {shape[0]}x{shape[1]} of dataset {config.dataset!r} is not divisible by the "
                         f"downsampling factor {factor} of config.model.channel_mult={tuple(config.model.channel_mult)}"
                         f" (config.pad_images=True pads it)")


def eval_step(model, variables, images, mask, prefixes=()):
    """Masked sums of per-image PSNR, SSIM and MSE (and, per prefix length ``k`` of a 1D tokenizer, PSNR and SSIM
    decoded from the first ``k`` tokens), the codes, and the reconstructions."""
    recon, q = model.apply(variables, images, train=False)
    recon = jnp.clip(recon, 0.0, 1.0)
    per_image = {"psnr": image_eval.psnr(images, recon), "ssim": image_eval.ssim(images, recon),
                 "mse": jnp.mean((images - recon) ** 2, axis=(1, 2, 3))}
    for k in prefixes:
        part = jnp.clip(model.apply(variables, q.codes, jnp.full((images.shape[0],), k), method=model.decode), 0, 1)
        per_image[f"psnr_k{k}"] = image_eval.psnr(images, part)
        per_image[f"ssim_k{k}"] = image_eval.ssim(images, part)
    return {k: jnp.sum(v * mask) for k, v in per_image.items()}, q.codes, recon


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the data, builds the model and the steps; refuses an empty split or a bad image size first."""
    train_source, eval_source = read_example_splits(config, pipeline.VideoFrames if config.video_frames else None)
    shape = pipeline.image_shape(train_source)
    check_image_shape(config, shape)
    if pipeline.image_shape(eval_source) != shape:
        raise ValueError(f"split {config.eval_split!r} has images of shape {pipeline.image_shape(eval_source)}; "
                         f"split {config.train_split!r} has {shape}")
    spec_model = model_spec(config, shape[-1], shape[:2])
    model = model_from_spec(spec_model)
    gan, disc, half = scaffold.pixel_gan(config, PatchDiscriminator)
    sc = scaffold.build(config, model=model, sample=jnp.zeros((config.batch_size,) + shape, jnp.float32),
                        devices=devices, gan=half, ema_decay=float(config.ema_decay))
    one_d = config.architecture == "1d"
    levels = sc.codes_shape[-1] if len(sc.codes_shape) == (2 if one_d else 3) else 1
    feature_net, feature_params, extra_info = None, jnp.zeros(()), {}
    if config.perceptual_weight > 0:
        feature_net, feature_params = load_or_train_feature_net(
            workdir, train_source, num_classes=config.feature_net_classes, steps=config.feature_net_steps,
            seed=config.seed, stop=stop)
        extra_info["feature_net_accuracy"] = feature_net_accuracy(feature_net, feature_params, eval_source)
    feature_params = jax.device_put(feature_params, sc.replicated)
    parts = scaffold.PixelParts(scaffold.training_model(spec_model, config), sc.tx, config.recon_loss, disc, gan, half,
                                float(config.ema_decay), float(config.perceptual_weight), feature_net,
                                accum_steps=int(config.grad_accum_steps))
    train = sc.jit_train(functools.partial(scaffold.pixel_step, parts), 1)
    token_range = (int(config.model_1d.min_tokens), int(config.model_1d.num_tokens))
    prefixes = tuple(image_eval.prefix_lengths(token_range)) if one_d else ()
    jit_eval = jax.jit(functools.partial(eval_step, model, prefixes=prefixes),
                       in_shardings=(sc.replicated, sc.batch_sharding, sc.batch_sharding),
                       out_shardings=(sc.replicated, sc.batch_sharding, sc.batch_sharding))

    def run_eval(state, step):
        totals = dict(psnr=0.0, ssim=0.0, mse=0.0, **{f"{m}_k{k}": 0.0 for k in prefixes for m in ("psnr", "ssim")})
        counter, count, first = CodeCounter(sc.vocab_size, levels), 0.0, None
        for batch in sc.eval_batches(config, eval_source):
            mask, images = sc.global_batch(batch["mask"]), sc.global_batch(batch["image"])
            sums, codes, recon = jit_eval(sc.variables(state), images, mask)
            mask_all = to_host(mask)
            for k in totals:
                totals[k] += float(sums[k])
            count += float(mask_all.sum())
            counter.update(to_host(codes), mask_all)
            first = first or (to_host(images), to_host(recon))
        result = {**{k: v / count for k, v in totals.items()}, **counter.result(),
                  "bits_per_image": math.prod(sc.codes_shape) * math.log2(sc.vocab_size)}
        if jax.process_index() == 0:
            figures.save_reconstructions(os.path.join(workdir, "reconstructions.png"), first[0], first[1],
                                         f"step {step}: PSNR {result['psnr']:.2f} dB, usage {100 * result['usage']:.1f}%")
        return result

    extra_spec = {}
    if one_d:   # ordered 1D codes: any prefix of min_tokens..K tokens is a code sequence
        extra_spec = {"codes_shape": [None, *sc.codes_shape[1:]],
                      "token_range": list(token_range)}
    spec = sc.spec("image", spec_model, {"shape": list(shape), "dtype": "float32", "range": [0.0, 1.0]}, config,
                   **extra_spec)
    info = {"image_shape": list(shape), "vocab_size": int(sc.vocab_size), "codes_shape": list(sc.codes_shape),
            "dataset": config.dataset, "video_frames": bool(config.video_frames), "quantizer": config.quantizer,
            **extra_info}
    return Run(init_state=sc.init_state, make_step=sc.make_step(config, train_source, train, "image", feature_params),
               evaluate=run_eval, replicated=sc.replicated, info=info, spec=spec, abstract=sc.abstract,
               state_sharding=sc.state_sharding)


def report(result: dict, workdir: str) -> str:
    """The final evaluation as a table, and where the figures and the tokenizer are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("PSNR", f"{result['psnr']:.2f} dB"), ("SSIM", f"{result['ssim']:.4f}"),
            ("codebook usage", f"{100 * result['usage']:.1f}%"), ("perplexity", f"{result['perplexity']:.1f}"),
            ("dead codes", f"{int(result['dead_codes'])}"), ("bits per image", f"{result['bits_per_image']:.0f}")]
    prefixes = sorted(int(k[6:]) for k in result if k.startswith("psnr_k"))
    rows += [(f"first {k} tokens", f"{result[f'psnr_k{k}']:.2f} dB, SSIM {result[f'ssim_k{k}']:.4f}")
             for k in prefixes]
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    return reports.result_table("eval metric", rows, ("reconstructions.png", "codebook_usage.png", "loss_curves.png"),
                                workdir, extra, result)


TASK = register_task(Task("image_tokenizer", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
