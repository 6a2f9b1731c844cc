"""Task ``'image_tokenizer'``: VQ-VAE / VQGAN image tokenizers on tfds + grain input.

One train step updates the tokenizer (reconstruction + quantizer loss + optional perceptual term + optional
adversarial term with the adaptive weight, :func:`vqjax.models.vqgan.generator_term`), then the discriminator
(:func:`vqjax.models.vqgan.discriminator_step`) and the EMA of the generator weights. Evaluation reports PSNR,
SSIM, MSE, codebook usage, perplexity, dead codes and bits per image on ``config.eval_split`` and draws
``reconstructions.png`` and ``codebook_usage.png``. The run's artifact is a :class:`vqjax.Tokenizer`
(``modality='image'``) whose spec rebuilds the model through :func:`vqjax.models.model_from_spec`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vqjax.data import pipeline
from vqjax.models import model_from_spec, quantizer_vocab_size
from vqjax.models.perceptual import perceptual_distance
from vqjax.models.vqgan import (GAN_LOSSES, GANConfig, GANState, PatchDiscriminator, decoder_generator_term,
                                discriminator_step, gan_init)
from vqjax.train import evaluate as metrics_lib, reports
from vqjax.train.config import (add_example_data, check_example_data, check_positive, core_config, optimizer_config,
                                plain, read_example_splits)
from vqjax.train.core import data_mesh, make_optimizer, to_host
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["ImageTrainState", "default_config", "check", "runlocal", "setup", "report", "build_model",
           "model_spec", "check_channel_mult", "check_image_shape", "LOSSES", "reconstruction_loss", "tokenizer_loss", "gan_fields",
           "check_gan", "gan_config", "TASK"]

LOSSES = ("l2", "l1")


class ImageTrainState(NamedTuple):
    """Everything a resumed image-tokenizer run needs.

    Attributes:
      step: int32 steps done.
      params, vq_stats, opt_state: the tokenizer's parameters, quantizer statistics and optimizer state.
      rng: raw uint32 key data; step ``s`` draws from ``fold_in(rng, s)``.
      ema_params: EMA of the tokenizer parameters (``config.ema_decay > 0``), else None.
      gan: the discriminator's :class:`~vqjax.models.vqgan.GANState` (``config.gan.weight > 0``), else None.
    """

    step: jax.Array
    params: Any
    vq_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    gan: GANState | None = None


def default_config() -> ml_collections.ConfigDict:
    """Every field of an image-tokenizer experiment, with defaults; experiment files override what they need.

    The defaults are a small VQ-VAE for the bundled 28x28 MNIST digits: 16 base channels, two downsamplings
    (7x7 tokens), 32-d latents (XLA's CPU convolutions are slow, so the model is sized for a CPU demo).
    """
    c = add_example_data(core_config("image_tokenizer"), "vqjax_mnist", batch_size=32, eval_batch_size=250)

    # True: the dataset holds clips ('video' [T, H, W, C]) and the tokenizer trains on and is scored on their frames
    # (pipeline.VideoFrames): the frame-by-frame baseline of a video tokenizer, on the same clips.
    c.video_frames = False
    c.model = ml_collections.ConfigDict(dict(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, latent_dim=32))
    c.quantizer = "vq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(codebook_size=1024))

    c.optimizer = optimizer_config()
    c.recon_loss = "l2"
    # Perceptual loss on the features of a classifier trained in-repo on the run's labels (0 disables).
    c.perceptual_weight = 0.0
    c.feature_net_classes = 10
    c.feature_net_steps = 300
    # VQGAN: patch discriminator (weight 0 disables), adaptive weight, start step, LeCAM and R1.
    c.gan = gan_fields()
    c.ema_decay = 0.0          # EMA of the generator weights, used for evaluation and the tokenizer (0 disables)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny model, 20 steps, 100 eval images, a 64-code codebook where the quantizer has one."""
    c.model.channels = 8
    c.model.latent_dim = 8
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 64
    c.batch_size = 16
    c.eval_batch_size = 40
    c.max_eval_examples = 100
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.optimizer.warmup_steps = 5
    return c


def model_spec(config: ml_collections.ConfigDict, image_channels: int) -> dict:
    """The model's explicit constructor arguments (:func:`vqjax.models.image_tokenizer`)."""
    m = config.model
    return {"name": "image_tokenizer",
            "kwargs": {"channels": int(m.channels), "channel_mult": [int(v) for v in m.channel_mult],
                       "num_res_blocks": int(m.num_res_blocks), "latent_dim": int(m.latent_dim),
                       "image_channels": int(image_channels), "quantizer": config.quantizer,
                       "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}}


def build_model(config: ml_collections.ConfigDict, image_channels: int):
    """The :class:`vqjax.models.ImageTokenizer` a config describes, for images with ``image_channels`` channels."""
    return model_from_spec(model_spec(config, image_channels))


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad image-tokenizer config with a message naming the field, before any data is read."""
    check_example_data(config)
    check_positive(config, "model.channels", "model.num_res_blocks", "model.latent_dim")
    if not isinstance(config.video_frames, bool):
        raise ValueError(f"config.video_frames must be True or False; got {config.video_frames!r}")
    if config.recon_loss not in LOSSES:
        raise ValueError(f"config.recon_loss must be one of {LOSSES}; got {config.recon_loss!r}")
    check_channel_mult(config)
    build_model(config, 1)                   # refuses an unknown quantizer or quantizer field
    if config.perceptual_weight < 0:
        raise ValueError(f"config.perceptual_weight must be >= 0; got {config.perceptual_weight}")
    check_gan(config)
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"config.ema_decay must be in [0, 1); got {config.ema_decay}")
    if config.perceptual_weight > 0:
        check_positive(config, "feature_net_classes", "feature_net_steps")


def check_channel_mult(config: ml_collections.ConfigDict) -> None:
    """``config.model.channel_mult`` must be a non-empty tuple of positive ints (the image and video tasks)."""
    mult = config.model.channel_mult
    if not len(mult) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in mult):
        raise ValueError(f"config.model.channel_mult must be a non-empty tuple of positive ints; got {mult}")


def check_image_shape(config: ml_collections.ConfigDict, shape: tuple[int, int, int]) -> None:
    """The image side must be divisible by the encoder's total downsampling ``2^(len(channel_mult) - 1)``."""
    factor = 2 ** (len(config.model.channel_mult) - 1)
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"image size {shape[0]}x{shape[1]} of dataset {config.dataset!r} is not divisible by the "
                         f"downsampling factor {factor} of config.model.channel_mult={tuple(config.model.channel_mult)}")


@dataclasses.dataclass(frozen=True)
class StepParts:
    """The static pieces of a train step (hashable: modules, optimizers and plain numbers)."""

    model: Any
    tx: optax.GradientTransformation
    recon_loss: str
    perceptual_weight: float = 0.0
    feature_net: Any = None
    disc: Any = None
    disc_tx: Any = None
    gan: GANConfig | None = None
    ema_decay: float = 0.0


def reconstruction_loss(kind: str, x, y):
    """``mean |x - y|`` (``kind='l1'``) or ``mean (x - y)²`` (``'l2'``): the tokenizer tasks' pixel loss."""
    d = x - y
    return jnp.mean(jnp.abs(d)) if kind == "l1" else jnp.mean(d * d)


def tokenizer_loss(parts, state, x, rng, nll_of, params):
    """The tokenizer's loss on ``x`` (images or clips) and ``(vq_stats, reconstruction, Quantized, metrics)``:
    ``nll_of(recon)`` plus the quantizer's loss plus, when ``parts.gan``, the adversarial term with its adaptive
    weight at the decoder's last layer. Shared by the image and the video tasks (``parts`` with ``model``,
    ``recon_loss``, ``gan``, ``disc``; ``state`` with ``vq_stats``, ``gan``, ``step``)."""
    model = parts.model
    (recon, q, h), upd = model.apply({"params": params, "vq_stats": state.vq_stats}, x, train=True,
                                     return_features=True, mutable=["vq_stats"], rngs={"vq": rng})
    loss = nll_of(recon) + q.loss
    aux = {"recon_loss": reconstruction_loss(parts.recon_loss, recon, x), "quantizer_loss": q.loss}
    if parts.gan is not None:
        term, gan_aux = decoder_generator_term(parts.gan, parts.disc, state.gan, model, params, h, recon, state.step,
                                               nll_of)
        loss = loss + term
        aux.update(gan_aux)
    return loss, (upd.get("vq_stats", {}), recon, q, aux)


def train_step(parts: StepParts, state: ImageTrainState, images, feature_params):
    """One step: the tokenizer update (reconstruction + quantizer + perceptual + adversarial terms), then the
    discriminator update with its LeCAM EMAs, then the EMA of the tokenizer weights."""
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    features = (lambda x: parts.feature_net.apply(feature_params, x, method="features")) if parts.feature_net else None

    def nll_of(recon):
        nll = reconstruction_loss(parts.recon_loss, recon, images)
        if features is not None:
            nll = nll + parts.perceptual_weight * perceptual_distance(features, recon, images)
        return nll

    loss_fn = functools.partial(tokenizer_loss, parts, state, images, rng, nll_of)
    (loss, (vq_stats, recon, q, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = parts.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux,
               **{f"q_{k}": v for k, v in q.metrics.items()}}
    gan = state.gan
    if parts.gan is not None:
        gan, d_metrics = discriminator_step(parts.gan, parts.disc, parts.disc_tx, state.gan, images, recon,
                                            state.step)
        metrics.update(d_metrics)
    ema_params = state.ema_params
    if parts.ema_decay > 0:
        ema_params = jax.tree.map(lambda e, p: parts.ema_decay * e + (1.0 - parts.ema_decay) * p, ema_params, params)
    return state._replace(step=state.step + 1, params=params, vq_stats=vq_stats, opt_state=opt_state,
                          ema_params=ema_params, gan=gan), metrics


def eval_step(model, params, vq_stats, images, mask):
    """Masked sums of per-image PSNR, SSIM and MSE, the codes, and the reconstructions."""
    recon, q = model.apply({"params": params, "vq_stats": vq_stats}, images, train=False)
    recon = jnp.clip(recon, 0.0, 1.0)
    per_image = {"psnr": metrics_lib.psnr(images, recon), "ssim": metrics_lib.ssim(images, recon),
                 "mse": jnp.mean((images - recon) ** 2, axis=(1, 2, 3))}
    return {k: jnp.sum(v * mask) for k, v in per_image.items()}, q.codes, recon


def gan_fields() -> ml_collections.ConfigDict:
    """``config.gan`` of the tokenizer tasks (image and video): the adversarial weight (0 disables the
    discriminator), its loss, the step it starts at, the discriminator's width and stride-2 layers, the adaptive
    weight, LeCAM and R1."""
    return ml_collections.ConfigDict(dict(weight=0.0, loss="hinge", start_step=0, channels=32, num_layers=2,
                                          adaptive=True, lecam_weight=0.0, lecam_decay=0.99, r1_gamma=0.0))


def check_gan(config: ml_collections.ConfigDict) -> None:
    """Refuses bad ``config.gan`` fields with a message naming the field."""
    g = config.gan
    if g.weight < 0:
        raise ValueError(f"config.gan.weight must be >= 0; got {g.weight}")
    if g.loss not in GAN_LOSSES:
        raise ValueError(f"config.gan.loss must be one of {GAN_LOSSES}; got {g.loss!r}")
    if g.start_step < 0 or g.lecam_weight < 0 or g.r1_gamma < 0 or not 0 <= g.lecam_decay < 1:
        raise ValueError(f"config.gan: start_step, lecam_weight and r1_gamma must be >= 0 and lecam_decay in [0, 1); "
                         f"got {g.start_step}, {g.lecam_weight}, {g.r1_gamma}, {g.lecam_decay}")
    check_positive(config, "gan.channels", "gan.num_layers")


def gan_config(config) -> GANConfig | None:
    """The :class:`~vqjax.models.vqgan.GANConfig` of ``config.gan``, or None where its weight is 0."""
    g = config.gan
    if g.weight <= 0:
        return None
    return GANConfig(float(g.weight), g.loss, int(g.start_step), bool(g.adaptive), float(g.lecam_weight),
                     float(g.lecam_decay), float(g.r1_gamma))


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the data, builds the model and the steps; refuses an empty split or a bad image size first."""
    train_source, eval_source = read_example_splits(config, pipeline.VideoFrames if config.video_frames else None)
    shape = pipeline.image_shape(train_source)
    check_image_shape(config, shape)
    if pipeline.image_shape(eval_source) != shape:
        raise ValueError(f"split {config.eval_split!r} has images of shape {pipeline.image_shape(eval_source)}; "
                         f"split {config.train_split!r} has {shape}")
    spec_model = model_spec(config, shape[-1])
    model = model_from_spec(spec_model)
    replicated, batch_sharding = data_mesh({"batch_size": config.batch_size,
                                            "eval_batch_size": config.eval_batch_size}, devices)

    tx = make_optimizer(config.optimizer, config.num_train_steps)
    sample = jnp.zeros((config.batch_size,) + shape, jnp.float32)
    gan_cfg = gan_config(config)
    disc = PatchDiscriminator(config.gan.channels, config.gan.num_layers) if gan_cfg is not None else None
    disc_tx = make_optimizer(config.optimizer, config.num_train_steps) if disc is not None else None
    use_ema = config.ema_decay > 0

    def init_state(key):
        k_params, k_vq, k_run, k_disc = jax.random.split(key, 4)
        variables = model.init({"params": k_params, "vq": k_vq}, sample, train=False)
        params = variables["params"]
        return ImageTrainState(step=jnp.int32(0), params=params, vq_stats=variables.get("vq_stats", {}),
                               opt_state=tx.init(params), rng=jax.random.key_data(k_run),
                               ema_params=params if use_ema else None,
                               gan=gan_init(disc, disc_tx, k_disc, sample) if disc is not None else None)

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))   # refuses bad quantizer fields, no compute
    codes_shape = tuple(jax.eval_shape(functools.partial(model.apply, method=model.encode),
                                       {"params": abstract.params, "vq_stats": abstract.vq_stats},
                                       sample[:1]).shape[1:])
    vocab = quantizer_vocab_size(model.quantizer)
    levels = codes_shape[-1] if len(codes_shape) == 3 else 1
    state_sharding = jax.tree.map(lambda _: replicated, abstract)

    feature_net, feature_params, extra_info = None, jnp.zeros(()), {}
    if config.perceptual_weight > 0:
        from vqjax.train.perceptual import feature_net_accuracy, load_or_train_feature_net

        feature_net, feature_params = load_or_train_feature_net(
            workdir, train_source, num_classes=config.feature_net_classes, steps=config.feature_net_steps,
            seed=config.seed, stop=stop)
        extra_info["feature_net_accuracy"] = feature_net_accuracy(feature_net, feature_params, eval_source)
    feature_params = jax.device_put(feature_params, replicated)
    parts = StepParts(model=model, tx=tx, recon_loss=config.recon_loss,
                      perceptual_weight=float(config.perceptual_weight), feature_net=feature_net, disc=disc,
                      disc_tx=disc_tx, gan=gan_cfg, ema_decay=float(config.ema_decay))
    jit_train = jax.jit(functools.partial(train_step, parts),
                        in_shardings=(state_sharding, batch_sharding, replicated),
                        out_shardings=(state_sharding, replicated), donate_argnums=0)
    jit_eval = jax.jit(functools.partial(eval_step, model),
                       in_shardings=(replicated, replicated, batch_sharding, batch_sharding),
                       out_shardings=(replicated, batch_sharding, batch_sharding))

    def global_batch(local):
        return jax.make_array_from_process_local_data(batch_sharding, local)

    def make_step(start):
        batches = pipeline.train_batches(train_source, batch_size=config.batch_size, seed=config.seed,
                                         start_step=start, process_index=jax.process_index(),
                                         process_count=jax.process_count(), worker_count=config.worker_count)
        return lambda state: jit_train(state, global_batch(next(batches)["image"]), feature_params)

    def run_eval(state, step):
        counter = metrics_lib.CodeCounter(vocab, levels)
        totals = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0}
        count = 0.0
        first = None
        params = state.ema_params if use_ema else state.params
        for batch in pipeline.eval_batches(eval_source, batch_size=config.eval_batch_size,
                                           max_examples=config.max_eval_examples,
                                           process_index=jax.process_index(), process_count=jax.process_count()):
            mask = global_batch(batch["mask"])
            sums, codes, recon = jit_eval(params, state.vq_stats, global_batch(batch["image"]), mask)
            mask_all = to_host(mask)
            for k in totals:
                totals[k] += float(sums[k])
            count += float(mask_all.sum())
            counter.update(to_host(codes), mask_all)
            if first is None:
                first = (to_host(global_batch(batch["image"])), to_host(recon))
        result = {k: v / count for k, v in totals.items()}
        result.update(counter.result())
        result["bits_per_image"] = math.prod(codes_shape) * math.log2(vocab)
        if jax.process_index() == 0:
            reports.save_reconstructions(os.path.join(workdir, "reconstructions.png"), first[0], first[1],
                                         f"step {step}: PSNR {result['psnr']:.2f} dB, usage {100 * result['usage']:.1f}%")
        return result

    spec = {"modality": "image", "model": spec_model,
            "input": {"shape": list(shape), "dtype": "float32", "range": [0.0, 1.0]},
            "codes_shape": list(codes_shape), "vocab_size": int(vocab), "tokens_per_second": None,
            "weights": {"params": "ema_params" if use_ema else "params", "vq_stats": "vq_stats"},
            "dataset": config.dataset}
    info = {"image_shape": list(shape), "vocab_size": int(vocab), "codes_shape": list(codes_shape),
            "dataset": config.dataset, "video_frames": bool(config.video_frames), "quantizer": config.quantizer,
            **extra_info}
    return Run(init_state=init_state, make_step=make_step, evaluate=run_eval, replicated=replicated, info=info,
               hint="Lower config.optimizer.learning_rate or check the data.", spec=spec, abstract=abstract)


def report(result: dict, workdir: str) -> str:
    """The final evaluation as a table, and where the figures and the tokenizer are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("PSNR", f"{result['psnr']:.2f} dB"), ("SSIM", f"{result['ssim']:.4f}"),
            ("codebook usage", f"{100 * result['usage']:.1f}%"), ("perplexity", f"{result['perplexity']:.1f}"),
            ("dead codes", f"{int(result['dead_codes'])}"), ("bits per image", f"{result['bits_per_image']:.0f}")]
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    return reports.result_table("eval metric", rows, ("reconstructions.png", "codebook_usage.png", "loss_curves.png"),
                                workdir, extra, result)


TASK = register_task(Task("image_tokenizer", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
