"""Training and evaluation of image tokenizers: ``train_and_evaluate(config, workdir)``.

The train state is one pytree (:class:`TrainState`); the train and eval steps are jitted over a
``jax.sharding.Mesh`` of all devices with the batch split along the ``'data'`` axis and the state replicated, so
the same code runs on one CPU or many devices. Checkpoints are orbax (async, ``max_to_keep``, every
``checkpoint_every_steps`` steps, and on SIGTERM); a rerun on the same workdir resumes from the latest one and,
because the data order and every random draw are functions of (seed, step), ends with exactly the metrics of an
uninterrupted run. A non-finite loss stops the run with a ``FloatingPointError`` before anything after it is
saved, so the last checkpoint stays intact.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vqjax.data import pipeline
from vqjax.models import quantizer_vocab_size
from vqjax.models.perceptual import perceptual_distance
from vqjax.models.vqgan import (PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss, lecam_loss,
                                r1_penalty)
from vqjax.train import evaluate, reports
from vqjax.train.perceptual import load_or_train_feature_net
from vqjax.train.config import build_model, check_config, check_image_shape, default_data_dir

__all__ = ["TrainState", "train_and_evaluate", "make_optimizer", "prepare_workdir", "load_run_info", "run_steps",
           "open_checkpoints", "write_run_files", "data_mesh"]


class TrainState(NamedTuple):
    """Everything a resumed run needs.

    Attributes:
      step: int32 steps done.
      params, vq_stats, opt_state: the tokenizer's parameters, quantizer statistics and optimizer state.
      rng: raw uint32 key data; step ``s`` draws from ``fold_in(rng, s)``.
      ema_params: EMA of the generator parameters (``config.ema_decay > 0``; else ``params`` is not copied: 0).
      disc_params, disc_opt_state: the VQGAN discriminator and its optimizer (``config.gan.weight > 0``; else 0).
      lecam: float32 ``[2]`` EMAs of the mean discriminator output on real and generated images.
    """

    step: jax.Array
    params: Any
    vq_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any
    disc_params: Any
    disc_opt_state: Any
    lecam: jax.Array


class _Parts(NamedTuple):
    """The static pieces of a train step (hashable: modules, optimizers and plain numbers)."""

    model: Any
    tx: Any
    recon_loss: str
    perceptual_weight: float
    feature_net: Any
    disc: Any
    disc_tx: Any
    gan_weight: float
    gan_loss: str
    gan_start: int
    adaptive: bool
    lecam_weight: float
    lecam_decay: float
    r1_gamma: float
    ema_decay: float


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """AdamW on a linear-warmup cosine schedule, after clipping the global gradient norm."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(num_steps - 1, 1)), max(num_steps, 2),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def prepare_workdir(workdir: str) -> str:
    """Creates ``workdir`` and checks that it is writable (a clear ``ValueError`` otherwise)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"workdir {workdir!r} is not writable: {err}") from err
    return workdir


def load_run_info(workdir: str) -> dict:
    """``workdir/run.json``: the image shape, vocabulary size and token shape of a trained tokenizer."""
    with open(os.path.join(workdir, "run.json")) as fh:
        return json.load(fh)


def _recon_loss(kind, x, y):
    d = x - y
    return jnp.mean(jnp.abs(d)) if kind == "l1" else jnp.mean(d * d)


def _conv_out(h, kernel, bias):
    """The decoder's last layer as a function of its kernel (an ``nn.Conv`` with SAME padding) -> images."""
    y = lax.conv_general_dilated(h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y + bias + 1.0) * 0.5


def _train_step(parts: _Parts, state: TrainState, images, feature_params):
    """One step: the tokenizer update (reconstruction + quantizer + perceptual + adaptive adversarial terms), then
    the discriminator update, the LeCAM EMAs and the generator EMA."""
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    model, disc = parts.model, parts.disc
    features = (lambda x: parts.feature_net.apply(feature_params, x, method="features")) if parts.feature_net else None
    gan_on = (state.step >= parts.gan_start).astype(jnp.float32)

    def nll_of(recon):
        nll = _recon_loss(parts.recon_loss, recon, images)
        if features is not None:
            nll = nll + parts.perceptual_weight * perceptual_distance(features, recon, images)
        return nll

    def loss_fn(params):
        (recon, q), upd = model.apply({"params": params, "vq_stats": state.vq_stats}, images, train=True,
                                      mutable=["vq_stats", "intermediates"], rngs={"vq": rng})
        nll = nll_of(recon)
        loss = nll + q.loss
        aux = {"recon_loss": _recon_loss(parts.recon_loss, recon, images), "quantizer_loss": q.loss}
        if parts.gan_weight > 0:
            gen_of = lambda r: generator_loss(disc.apply(state.disc_params, r), parts.gan_loss)
            g = gen_of(recon)
            weight = jnp.float32(1.0)
            if parts.adaptive:
                # |∇_W nll| / |∇_W gan| at the last decoder layer W, from the gradients with respect to the output.
                fixed = lax.stop_gradient(recon)
                h = lax.stop_gradient(upd["intermediates"]["decoder"]["pre_out"][0])
                last = lax.stop_gradient(params["decoder"]["conv_out"])
                _, vjp = jax.vjp(lambda k: _conv_out(h, k, last["bias"]), last["kernel"])
                weight = adaptive_weight(vjp(jax.grad(nll_of)(fixed))[0], vjp(jax.grad(gen_of)(fixed))[0])
            loss = loss + parts.gan_weight * gan_on * weight * g
            aux.update(gen_loss=g, adaptive_weight=weight)
        return loss, (upd.get("vq_stats", {}), recon, q, aux)

    (loss, (vq_stats, recon, q, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = parts.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux,
               **{f"q_{k}": v for k, v in q.metrics.items()}}

    disc_params, disc_opt_state, lecam = state.disc_params, state.disc_opt_state, state.lecam
    if parts.gan_weight > 0:
        fake_images = lax.stop_gradient(recon)

        def d_loss_fn(dp):
            real, fake = disc.apply(dp, images), disc.apply(dp, fake_images)
            d = discriminator_loss(real, fake, parts.gan_loss)
            if parts.lecam_weight > 0:
                d = d + parts.lecam_weight * lecam_loss(real, fake, state.lecam[0], state.lecam[1])
            if parts.r1_gamma > 0:
                d = d + 0.5 * parts.r1_gamma * r1_penalty(lambda x: disc.apply(dp, x), images)
            return gan_on * d, jnp.stack([jnp.mean(real), jnp.mean(fake)])

        (d_loss, means), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.disc_params)
        d_updates, disc_opt_state = parts.disc_tx.update(d_grads, state.disc_opt_state, state.disc_params)
        disc_params = optax.apply_updates(state.disc_params, d_updates)
        mixed = parts.lecam_decay * state.lecam + (1.0 - parts.lecam_decay) * means
        lecam = jnp.where(gan_on > 0, mixed, state.lecam)
        metrics.update(disc_loss=d_loss, logits_real=means[0], logits_fake=means[1])
    ema_params = state.ema_params
    if parts.ema_decay > 0:
        ema_params = jax.tree.map(lambda e, p: parts.ema_decay * e + (1.0 - parts.ema_decay) * p, ema_params, params)
    return TrainState(state.step + 1, params, vq_stats, opt_state, state.rng, ema_params, disc_params,
                      disc_opt_state, lecam), metrics


def _eval_step(model, params, vq_stats, images, mask):
    """Masked sums of per-image PSNR, SSIM and MSE, the codes, and the reconstructions."""
    recon, q = model.apply({"params": params, "vq_stats": vq_stats}, images, train=False)
    recon = jnp.clip(recon, 0.0, 1.0)
    per_image = {"psnr": evaluate.psnr(images, recon), "ssim": evaluate.ssim(images, recon),
                 "mse": jnp.mean((images - recon) ** 2, axis=(1, 2, 3))}
    return {k: jnp.sum(v * mask) for k, v in per_image.items()}, q.codes, recon


def _to_host(x) -> np.ndarray:
    """A global array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class _Stop:
    """SIGTERM handler: asks the loop to save and stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:      # not the main thread: no handler
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def data_mesh(config: ml_collections.ConfigDict, devices=None) -> tuple[NamedSharding, NamedSharding]:
    """The ``'data'`` mesh over ``devices`` (default: all) as ``(replicated, batch-sharded)`` shardings, after
    checking that ``config.batch_size`` and ``config.eval_batch_size`` split evenly over the devices."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if config.batch_size % devices.size or config.eval_batch_size % devices.size:
        raise ValueError(f"config.batch_size ({config.batch_size}) and config.eval_batch_size "
                         f"({config.eval_batch_size}) must be divisible by the {devices.size} devices")
    mesh = Mesh(devices, ("data",))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def write_run_files(workdir: str, config: ml_collections.ConfigDict, info: dict) -> None:
    """``workdir/config.json`` (the resolved config) and ``workdir/run.json`` (what loaders need to know)."""
    with open(os.path.join(workdir, "config.json"), "w") as fh:
        fh.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, "run.json"), "w") as fh:
        json.dump(info, fh, indent=2)


def open_checkpoints(workdir: str, config: ml_collections.ConfigDict, init_state, abstract, state_sharding):
    """An orbax ``CheckpointManager`` on ``workdir/checkpoints`` (async, ``config.max_to_keep``) and the state to
    start from: the latest checkpoint restored with ``state_sharding``, or ``init_state(key(config.seed))``."""
    import orbax.checkpoint as ocp

    mgr = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.max_to_keep, enable_async_checkpointing=True))
    latest = mgr.latest_step()
    if latest is None:
        return mgr, jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(config.seed))
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
    return mgr, mgr.restore(latest, args=ocp.args.StandardRestore(target))


def run_steps(advance, current, mgr, *, start: int, config: ml_collections.ConfigDict, writer, progress: bool,
              evaluate, hint: str) -> int:
    """The step loop both trainers share: steps ``start + 1 .. config.num_train_steps``, then returns the last step.

    ``advance()`` runs one train step (updating the caller's state) and returns its metrics (with ``'loss'``);
    ``current()`` is the state to checkpoint. Logs train metrics with steps/s every ``config.log_every_steps``
    (``writer`` and a tqdm bar), saves every ``config.checkpoint_every_steps`` and on SIGTERM (then stops),
    calls ``evaluate(step)`` every ``config.eval_every_steps`` and at the end, keeps at most two steps in flight
    (XLA's CPU collectives stall behind deep queues), and raises ``FloatingPointError`` (mentioning ``hint``) before
    saving anything after a non-finite loss. Finishes pending saves and closes ``mgr``.
    """
    import orbax.checkpoint as ocp

    pending: list[tuple[int, jax.Array]] = []

    def check_finite():
        for step, ok in pending:
            if not bool(ok):
                raise FloatingPointError(
                    f"the loss became non-finite at step {step}; stopped without saving, so the last checkpoint "
                    f"(step {mgr.latest_step()}) is intact. {hint}")
        pending.clear()

    def save(step, force=False):
        check_finite()
        mgr.save(step, args=ocp.args.StandardSave(current()), force=force)

    total = config.num_train_steps
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t_last, s_last = time.perf_counter(), start
    with _Stop() as stop:
        for step in range(start + 1, total + 1):
            metrics = advance()
            if pending:
                pending[-1][1].block_until_ready()
            pending.append((step, jnp.isfinite(metrics["loss"])))
            if bar is not None:
                bar.update(1)
            if step % config.log_every_steps == 0 or step == total:
                check_finite()
                now = time.perf_counter()
                scalars = {k: float(v) for k, v in metrics.items()}
                scalars["steps_per_s"] = (step - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, step
                if writer is not None:
                    writer.write(step, "train", scalars)
                if bar is not None:
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", steps_s=f"{scalars['steps_per_s']:.1f}")
            if step % config.checkpoint_every_steps == 0:
                save(step)
            if step % config.eval_every_steps == 0 or step == total:
                evaluate(step)
            if stop.requested:
                save(step, force=True)
                break
    if bar is not None:
        bar.close()
    end = int(current().step)
    if end == total and mgr.latest_step() != end:
        save(end, force=True)
    mgr.wait_until_finished()
    mgr.close()
    return end


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None, progress: bool = True
                       ) -> dict:
    """Trains the image tokenizer ``config`` describes in ``workdir`` (resuming from its latest checkpoint) and
    returns the final evaluation metrics.

    Writes into ``workdir``: ``config.json``, ``run.json`` (image shape, vocab size, token shape),
    ``checkpoints/`` (orbax), ``metrics.jsonl``, ``tensorboard/``, and the figures ``reconstructions.png``,
    ``codebook_usage.png`` and ``loss_curves.png``.

    Args:
      config: an experiment config (:func:`vqjax.train.base_config` fields).
      workdir: the run directory.
      devices: devices of the data mesh (default: all of ``jax.devices()``).
      progress: show a tqdm bar.

    Raises:
      ValueError: a bad config, dataset or workdir (before anything is compiled).
      FloatingPointError: the loss became NaN or Inf (the last checkpoint is kept as it was).
    """
    check_config(config)
    workdir = prepare_workdir(workdir)
    data_dir = config.data_dir or default_data_dir()
    train_source = pipeline.get_source(config.dataset, config.train_split, data_dir)
    eval_source = pipeline.get_source(config.dataset, config.eval_split, data_dir)
    shape = pipeline.image_shape(train_source)
    check_image_shape(config, shape)
    model = build_model(config, shape[-1])

    replicated, batch_sharding = data_mesh(config, devices)

    tx = make_optimizer(config.optimizer, config.num_train_steps)
    sample = jnp.zeros((config.batch_size,) + shape, jnp.float32)
    gan = config.gan
    disc = PatchDiscriminator(gan.channels, gan.num_layers) if gan.weight > 0 else None
    disc_tx = make_optimizer(config.optimizer, config.num_train_steps) if disc is not None else None

    def init_state(key):
        k_params, k_vq, k_run, k_disc = jax.random.split(key, 4)
        variables = model.init({"params": k_params, "vq": k_vq}, sample, train=False)
        params = variables["params"]
        disc_params = disc.init(k_disc, sample) if disc is not None else jnp.zeros(())
        return TrainState(jnp.int32(0), params, variables.get("vq_stats", {}), tx.init(params),
                          jax.random.key_data(k_run), params if config.ema_decay > 0 else jnp.zeros(()), disc_params,
                          disc_tx.init(disc_params) if disc is not None else jnp.zeros(()), jnp.zeros((2,)))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))   # refuses bad quantizer fields, no compute
    codes_shape = jax.eval_shape(functools.partial(model.apply, method=model.encode),
                                 {"params": abstract.params, "vq_stats": abstract.vq_stats}, sample[:1]).shape[1:]

    vocab = quantizer_vocab_size(model.quantizer)
    levels = codes_shape[-1] if len(codes_shape) == 3 else 1
    write_run_files(workdir, config, {"image_shape": list(shape), "vocab_size": vocab, "codes_shape": list(codes_shape),
                                      "dataset": config.dataset, "quantizer": config.quantizer})

    state_sharding = jax.tree.map(lambda _: replicated, abstract)
    mgr, state = open_checkpoints(workdir, config, init_state, abstract, state_sharding)
    start = int(state.step)

    feature_net, feature_params = None, jnp.zeros(())
    if config.perceptual_weight > 0:
        feature_net, feature_params = load_or_train_feature_net(
            workdir, train_source, num_classes=config.feature_net_classes, steps=config.feature_net_steps,
            seed=config.seed)
    parts = _Parts(model, tx, config.recon_loss, float(config.perceptual_weight), feature_net, disc, disc_tx,
                   float(gan.weight), gan.loss, int(gan.start_step), bool(gan.adaptive), float(gan.lecam_weight),
                   float(gan.lecam_decay), float(gan.r1_gamma), float(config.ema_decay))
    train_step = jax.jit(functools.partial(_train_step, parts),
                         in_shardings=(state_sharding, batch_sharding, replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=0)
    feature_params = jax.device_put(feature_params, replicated)
    eval_step = jax.jit(functools.partial(_eval_step, model),
                        in_shardings=(replicated, replicated, batch_sharding, batch_sharding),
                        out_shardings=(replicated, batch_sharding, batch_sharding))

    def global_batch(local):
        return jax.make_array_from_process_local_data(batch_sharding, local)

    def run_eval(step):
        counter = evaluate.CodeCounter(vocab, levels)
        totals = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0}
        count = 0.0
        first = None
        for batch in pipeline.eval_batches(eval_source, batch_size=config.eval_batch_size,
                                           max_examples=config.max_eval_examples,
                                           process_index=jax.process_index(), process_count=jax.process_count()):
            mask = global_batch(batch["mask"])
            params = state.ema_params if config.ema_decay > 0 else state.params
            sums, codes, recon = eval_step(params, state.vq_stats, global_batch(batch["image"]), mask)
            mask_all = _to_host(mask)
            for k in totals:
                totals[k] += float(sums[k])
            count += float(mask_all.sum())
            counter.update(_to_host(codes), mask_all)
            if first is None:
                first = (_to_host(global_batch(batch["image"])), _to_host(recon))
        result = {k: v / count for k, v in totals.items()}
        result.update(counter.result())
        tokens = math.prod(codes_shape)
        result["bits_per_image"] = tokens * math.log2(vocab)
        if jax.process_index() == 0:
            writer.write(step, "eval", result)
            reports.save_reconstructions(os.path.join(workdir, "reconstructions.png"), first[0], first[1],
                                         f"step {step}: PSNR {result['psnr']:.2f} dB, usage {100 * result['usage']:.1f}%")
            reports.save_curves(workdir)
        return result

    writer = reports.MetricWriter(workdir, resume_step=start) if jax.process_index() == 0 else None
    batches = pipeline.train_batches(train_source, batch_size=config.batch_size, seed=config.seed, start_step=start,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     worker_count=config.worker_count)
    results = []

    def advance():
        nonlocal state
        state, metrics = train_step(state, global_batch(next(batches)["image"]), feature_params)
        return metrics

    end = run_steps(advance, lambda: state, mgr, start=start, config=config, writer=writer, progress=progress,
                    evaluate=lambda step: results.append(run_eval(step)),
                    hint="Lower config.optimizer.learning_rate or check the data.")
    result = results[-1] if results else None
    if result is None:
        result = run_eval(end)
    if writer is not None:
        writer.close()
    return {"step": end, **result}
