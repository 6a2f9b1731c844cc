"""One scaffold for the autoencoding tokenizer tasks (image, video, audio, sequence).

What every such task needs in the same way is built here once: the ``'data'`` mesh and its shardings, the
optimizer, the state (:class:`TokenizerState`) with its init, abstract shapes and shardings, the codes' shape and
vocabulary, the jitted train step with its batches, the EMA of the weights, the discriminator's half of a GAN step,
and the tokenizer artifact's spec. A task keeps only its data, its losses, its metrics and its config::

    sc = scaffold.build(config, model=model, sample=zeros, devices=devices, gan=vqgan_half(config, disc))
    train = sc.jit_train(functools.partial(train_step, parts))       # (state, batch) -> (state, metrics)
    make_step = sc.make_step(config, train_source, train, "image")
    spec = sc.spec("image", spec_model, {"shape": [28, 28, 1], "dtype": "float32", "range": [0, 1]}, config)

A train step computes the task's loss with :func:`step_key` randomness and hands it to :func:`tokenizer_step`,
which differentiates it, applies the optimizer, runs the discriminator's update on the real batch and the
(gradient-free) reconstruction, updates the EMA weights and advances the step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vqjax.data import pipeline
from vqjax.models import model_from_spec, quantizer_vocab_size
from vqjax.models.perceptual import perceptual_distance
from vqjax.models.vqgan import GAN_LOSSES, GANConfig, decoder_generator_term, discriminator_step, gan_init
from vqjax.train import sharding
from vqjax.train.config import check_positive
from vqjax.train.core import data_mesh, make_optimizer
from vqjax.train.cost import FedStep

__all__ = ["TokenizerState", "GANHalf", "Scaffold", "build", "step_key", "tokenizer_step", "PixelParts", "pixel_step",
           "training_model",
           "pixel_gan", "vqgan_half",
           "reconstruction_loss", "tokenizer_loss", "LOSSES", "gan_fields", "check_gan", "gan_config",
           "check_channel_mult"]

LOSSES = ("l2", "l1")


class TokenizerState(NamedTuple):
    """Everything a resumed tokenizer run needs.

    Attributes:
      step: int32 steps done.
      params, vq_stats, opt_state: the tokenizer's parameters, quantizer statistics and optimizer state.
      rng: raw uint32 key data; step ``s`` draws from ``fold_in(rng, s)`` (:func:`step_key`).
      ema_params: EMA of the tokenizer parameters (an EMA decay > 0), else None.
      gan: the discriminator's state (its :class:`GANHalf`'s), else None.
    """

    step: jax.Array
    params: Any
    vq_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    gan: Any = None


@dataclasses.dataclass(frozen=True)
class GANHalf:
    """The discriminator's half of a GAN step.

    Attributes:
      init: ``(key, sample batch) -> state`` of the discriminator (parameters, optimizer state, ...).
      step: ``(state, real, fake, step) -> (state, metrics)``: one discriminator update on a real batch and the
        gradient-free reconstruction of it, at train step ``step``.
    """

    init: Callable[[jax.Array, jax.Array], Any]
    step: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, dict]]


@dataclasses.dataclass(frozen=True)
class Scaffold:
    """What :func:`build` made for one run (see the module docstring).

    Attributes:
      model: the tokenizer module.
      tx: its optimizer.
      replicated, batch_sharding: the mesh's replicated and batch-sharded shardings.
      init_state: ``key -> TokenizerState`` (pure, jittable).
      abstract: ``jax.eval_shape`` of ``init_state``.
      codes_shape: the codes of one example of the sample's shape.
      vocab_size: distinct values of one code (the quantizer's own).
      ema_decay: the EMA decay of the weights (0: no EMA).
      sharding_mode: ``config.sharding``; under 'fsdp'/'fsdp+model' the step gathers the parameters first.
      state_sharding: the state's shardings (:func:`vqjax.train.sharding.state_shardings` of ``sharding_mode``).
    """

    model: Any
    tx: optax.GradientTransformation
    replicated: Any
    batch_sharding: Any
    init_state: Callable[[jax.Array], TokenizerState]
    abstract: TokenizerState
    codes_shape: tuple
    vocab_size: int
    ema_decay: float = 0.0
    sharding_mode: str = "replicated"
    state_sharding: Any = None

    def variables(self, state: TokenizerState) -> dict:
        """``{'params', 'vq_stats'}`` the run evaluates and exports: the EMA weights when it keeps them (gathered
        onto every device when the state is sharded)."""
        params = state.ema_params if self.ema_decay > 0 else state.params
        variables = {"params": params, "vq_stats": state.vq_stats}
        return variables if self.sharding_mode == "replicated" else jax.device_put(variables, self.replicated)

    def weights_spec(self) -> dict:
        """The state entries an artifact's weights come from (``spec['weights']``)."""
        return {"params": "ema_params" if self.ema_decay > 0 else "params", "vq_stats": "vq_stats"}

    def global_batch(self, local):
        """A global array of the batch axis sharded over the mesh, from this process's slice."""
        return jax.make_array_from_process_local_data(self.batch_sharding, local)

    def jit_train(self, step: Callable, *replicated_args: int) -> Callable:
        """``step(state, batch, *extra) -> (state, metrics)`` jitted with the state in its shardings and donated,
        the batch sharded and ``len(replicated_args)`` further replicated arguments. Under FSDP the parameters are
        gathered before ``step`` computes (one all-gather), so it computes what the replicated step does."""
        extra = tuple(self.replicated for _ in replicated_args)
        gathered = sharding.gathering_params(step, self.replicated.mesh, self.sharding_mode)
        return jax.jit(gathered, in_shardings=(self.state_sharding, self.batch_sharding, *extra),
                       out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)

    def make_step(self, config: ml_collections.ConfigDict, source, jitted: Callable, key: str, *extra,
                  **pipeline_args) -> Callable[[int], FedStep]:
        """``start -> FedStep``: ``jitted`` fed with ``batch[key]`` of :func:`vqjax.data.pipeline.train_batches` of
        ``source`` from step ``start`` (``pipeline_args``: its ``transform`` or ``random_transform``), and ``extra``
        arguments (``step(state) -> (state, metrics)``; ``step.lower(state)`` for its compiled cost)."""
        def make(start):
            batches = pipeline.train_batches(source, batch_size=config.batch_size, seed=config.seed,
                                             start_step=start, process_index=jax.process_index(),
                                             process_count=jax.process_count(), worker_count=config.worker_count,
                                             **pipeline_args)
            return FedStep(jitted, lambda: (self.global_batch(next(batches)[key]), *extra))
        return make

    def eval_batches(self, config: ml_collections.ConfigDict, source, transform=None):
        """This process's share of one pass over ``source`` (:func:`vqjax.data.pipeline.eval_batches`), at most
        ``config.max_eval_examples`` examples in batches of ``config.eval_batch_size``."""
        return pipeline.eval_batches(source, batch_size=config.eval_batch_size, max_examples=config.max_eval_examples,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     transform=transform)

    def spec(self, modality: str, model_spec: dict, input_spec: dict, config: ml_collections.ConfigDict,
             **extra) -> dict:
        """The tokenizer artifact's spec (:func:`vqjax.tokenizers.write_spec`): ``extra`` adds or overrides fields
        (``codes_shape`` with ``None`` axes, rates, normalisation, ...)."""
        return {"modality": modality, "model": model_spec, "input": input_spec,
                "codes_shape": list(self.codes_shape), "vocab_size": int(self.vocab_size),
                "tokens_per_second": None, "weights": self.weights_spec(), "dataset": config.dataset, **extra}


def build(config: ml_collections.ConfigDict, *, model, sample: jax.Array, devices=None,
          batch_sizes: tuple[str, ...] = ("batch_size", "eval_batch_size"), gan: GANHalf | None = None,
          ema_decay: float = 0.0, start_from: Callable[[Any, Any], tuple[Any, Any]] | None = None) -> Scaffold:
    """The scaffold of a run of ``model`` on batches like ``sample``.

    Args:
      config: the task's config (its optimizer, step count, batch sizes and seed).
      model: the tokenizer module (``init(..., train=False)``, ``encode``, ``quantizer``).
      sample: a zero batch of the training shape (``[config.batch_size, ...]``).
      devices: the mesh's devices (default: all).
      batch_sizes: the config fields of global batch sizes, each divisible by the device count.
      gan: the discriminator's half, or None.
      ema_decay: the EMA decay of the weights (0: none).
      start_from: ``(params, vq_stats) -> (params, vq_stats)`` applied to the fresh init (an inflated start).

    Raises:
      ValueError: a batch size the devices do not divide; bad quantizer fields (from the abstract init).
    """
    replicated, batch_sharding = data_mesh({name: int(config[name]) for name in batch_sizes}, devices)
    tx = make_optimizer(config.optimizer, config.num_train_steps)

    def init_state(key):
        k_params, k_vq, k_run, k_disc = jax.random.split(key, 4)
        variables = model.init({"params": k_params, "vq": k_vq}, sample, train=False)
        params, vq_stats = variables["params"], variables.get("vq_stats", {})
        if start_from is not None:
            params, vq_stats = start_from(params, vq_stats)
        return TokenizerState(step=jnp.int32(0), params=params, vq_stats=vq_stats, opt_state=tx.init(params),
                              rng=jax.random.key_data(k_run), ema_params=params if ema_decay > 0 else None,
                              gan=gan.init(k_disc, sample) if gan is not None else None)

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    codes = jax.eval_shape(functools.partial(model.apply, method=model.encode),
                           {"params": abstract.params, "vq_stats": abstract.vq_stats}, sample[:1])
    state_sharding = sharding.state_shardings(abstract, replicated.mesh, config.sharding)
    return Scaffold(model=model, tx=tx, replicated=replicated, batch_sharding=batch_sharding, init_state=init_state,
                    abstract=abstract,
                    codes_shape=tuple(codes.shape[1:]), vocab_size=quantizer_vocab_size(model.quantizer),
                    ema_decay=float(ema_decay), sharding_mode=config.sharding, state_sharding=state_sharding)


def training_model(spec_model: dict, config: ml_collections.ConfigDict):
    """The model an artifact's ``spec_model`` describes, built to train under ``config``: computing in
    ``config.precision`` and rematerialising its blocks with ``config.remat`` (the spec itself keeps neither: a
    loaded tokenizer computes in float32)."""
    kwargs = {**spec_model.get("kwargs", {}), "dtype": config.precision}
    if config.get("remat", False):
        kwargs["remat"] = True
    return model_from_spec({**spec_model, "kwargs": kwargs})


def step_key(state: TokenizerState) -> jax.Array:
    """The step's random key: ``fold_in(rng, step)`` (a resumed run draws what an uninterrupted one did)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def tokenizer_step(tx: optax.GradientTransformation, state: TokenizerState, loss_of: Callable, batch, *,
                   target_of: Callable | None = None, gan: GANHalf | None = None, ema_decay: float = 0.0,
                   accum_steps: int = 1) -> tuple[TokenizerState, dict]:
    """One train step of an autoencoding tokenizer.

    ``loss_of(params, vq_stats, batch, rng, apply_update) -> (loss, (vq_stats, reconstruction, Quantized,
    metrics))`` is differentiated and ``tx`` applied; then, with ``gan``, the discriminator updates on
    ``target_of(batch)`` (default: the batch) and the gradient-free reconstruction; then the EMA
    ``e <- d e + (1 - d) p`` of the new parameters (``ema_decay = d > 0``). Metrics: ``loss``, ``grad_norm``, the
    loss's own, the quantizer's (``q_``-prefixed) and the discriminator's.

    With ``accum_steps = n > 1`` the batch is cut into ``n`` micro-batches (:func:`vqjax.train.sharding.micro_batches`)
    scanned one after the other: their gradients are averaged, and the codebook statistics of all but the last are
    held pending (``apply_update=False``) and folded in with the last, so the update is the large batch's (the
    loss is a mean over equal micro-batches; an adaptive GAN weight is computed per micro-batch). Micro-batch ``i``
    draws from ``fold_in(rng, i)``; the metrics are the micro-batches' mean.
    """
    rng = step_key(state)
    target_of = target_of or (lambda b: b)
    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    if accum_steps == 1:
        (loss, (vq_stats, recon, q, aux)), grads = grad_fn(state.params, state.vq_stats, batch, rng, True)
        metrics = {"loss": loss, **aux, **{f"q_{k}": v for k, v in q.metrics.items()}}
    else:
        micro = sharding.micro_batches(batch, accum_steps)

        def one(carry, inputs):
            grad_sum, vq_stats = carry
            i, mb = inputs
            (loss, (vq_stats, recon, q, aux)), g = grad_fn(state.params, vq_stats, mb, jax.random.fold_in(rng, i),
                                                           i == accum_steps - 1)
            out = {"loss": loss, **aux, **{f"q_{k}": v for k, v in q.metrics.items()}}
            return (jax.tree.map(jnp.add, grad_sum, g), vq_stats), (out, recon)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grad_sum, vq_stats), (per_micro, recons) = jax.lax.scan(
            one, (zeros, state.vq_stats), (jnp.arange(accum_steps), micro))
        grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
        metrics = jax.tree.map(lambda v: jnp.mean(v, axis=0), per_micro)
        # [n, B / n, ...] back to the batch's order (micro-batch i holds examples i, i + n, ...)
        recon = jax.tree.map(lambda r: jnp.swapaxes(r, 0, 1).reshape((-1,) + r.shape[2:]), recons)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    gan_state = state.gan
    if gan is not None:
        gan_state, d_metrics = gan.step(state.gan, target_of(batch), jax.lax.stop_gradient(recon), state.step)
        metrics.update(d_metrics)
    ema_params = state.ema_params
    if ema_decay > 0:
        ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params)
    return state._replace(step=state.step + 1, params=params, vq_stats=vq_stats, opt_state=opt_state,
                          ema_params=ema_params, gan=gan_state), metrics


# -- the pixel tokenizers' (image and video) losses and VQGAN half ------------------------------------------------

def reconstruction_loss(kind: str, x, y):
    """``mean |x - y|`` (``kind='l1'``) or ``mean (x - y)²`` (``'l2'``): the pixel tokenizers' loss."""
    d = x - y
    return jnp.mean(jnp.abs(d)) if kind == "l1" else jnp.mean(d * d)


def tokenizer_loss(model, recon_kind: str, gan: GANConfig | None, disc, state: TokenizerState, x, rng, nll_of,
                   params, vq_stats, apply_update=True):
    """A pixel tokenizer's loss on ``x`` (images or clips) and ``(vq_stats, reconstruction, Quantized, metrics)``:
    ``nll_of(recon)`` plus the quantizer's loss plus, with ``gan``, the adversarial term with its adaptive weight
    at the decoder's last layer (:func:`vqjax.models.vqgan.decoder_generator_term`)."""
    (recon, q, h), upd = model.apply({"params": params, "vq_stats": vq_stats}, x, train=True, return_features=True,
                                     apply_update=apply_update, mutable=["vq_stats"], rngs={"vq": rng})
    loss = nll_of(recon) + q.loss
    aux = {"recon_loss": reconstruction_loss(recon_kind, recon, x), "quantizer_loss": q.loss}
    if gan is not None:
        term, gan_aux = decoder_generator_term(gan, disc, state.gan, model, params, h, recon, state.step, nll_of)
        loss = loss + term
        aux.update(gan_aux)
    return loss, (upd.get("vq_stats", {}), recon, q, aux)


@dataclasses.dataclass(frozen=True)
class PixelParts:
    """The static pieces of a pixel tokenizer's (image or video) train step: the model, its optimizer and pixel
    loss, an optional perceptual term on a feature network's features, the adversarial pieces (discriminator,
    :class:`~vqjax.models.vqgan.GANConfig`, :class:`GANHalf`), the EMA decay and the micro-batches per step."""

    model: Any
    tx: optax.GradientTransformation
    recon_loss: str
    disc: Any = None
    gan: GANConfig | None = None
    gan_half: GANHalf | None = None
    ema_decay: float = 0.0
    perceptual_weight: float = 0.0
    feature_net: Any = None
    accum_steps: int = 1


def pixel_step(parts: PixelParts, state: TokenizerState, x, feature_params=None):
    """A pixel tokenizer's train step on images or clips ``x``: reconstruction [+ perceptual] [+ adversarial with
    its adaptive weight] + quantizer loss through :func:`tokenizer_step`, the discriminator updating on ``x`` and
    its reconstruction."""
    net = parts.feature_net
    features = (lambda y: net.apply(feature_params, y, method="features")) if net is not None else None

    def loss_of(params, vq_stats, xb, rng, apply_update):
        def nll_of(recon):
            nll = reconstruction_loss(parts.recon_loss, recon, xb)
            return nll + parts.perceptual_weight * perceptual_distance(features, recon, xb) if features else nll

        return tokenizer_loss(parts.model, parts.recon_loss, parts.gan, parts.disc, state, xb, rng, nll_of, params,
                              vq_stats, apply_update)

    return tokenizer_step(parts.tx, state, loss_of, x, gan=parts.gan_half, ema_decay=parts.ema_decay,
                          accum_steps=parts.accum_steps)


def pixel_gan(config: ml_collections.ConfigDict, disc_cls) -> tuple[GANConfig | None, Any, GANHalf | None]:
    """``(GANConfig, discriminator, GANHalf)`` of ``config.gan`` for a pixel tokenizer, the discriminator a
    ``disc_cls(channels, num_layers)`` with its own optimizer; three Nones when the adversarial weight is 0."""
    gan = gan_config(config)
    if gan is None:
        return None, None, None
    disc = disc_cls(config.gan.channels, config.gan.num_layers, dtype=sharding.compute_dtype(config.precision))
    return gan, disc, vqgan_half(config, disc, make_optimizer(config.optimizer, config.num_train_steps))


def vqgan_half(config: ml_collections.ConfigDict, disc, tx: optax.GradientTransformation) -> GANHalf:
    """The discriminator half of the pixel tokenizers' VQGAN: :class:`~vqjax.models.vqgan.GANState` from
    :func:`~vqjax.models.vqgan.gan_init`, updated by :func:`~vqjax.models.vqgan.discriminator_step` with
    ``config.gan``'s loss, start step, LeCAM and R1."""
    cfg = gan_config(config)
    return GANHalf(init=lambda key, sample: gan_init(disc, tx, key, sample),
                   step=lambda s, real, fake, step: discriminator_step(cfg, disc, tx, s, real, fake, step))


def gan_fields() -> ml_collections.ConfigDict:
    """``config.gan`` of the pixel tokenizer tasks (image and video): the adversarial weight (0 disables the
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


def gan_config(config: ml_collections.ConfigDict) -> GANConfig | None:
    """The :class:`~vqjax.models.vqgan.GANConfig` of ``config.gan``, or None where its weight is 0."""
    g = config.gan
    if g.weight <= 0:
        return None
    return GANConfig(float(g.weight), g.loss, int(g.start_step), bool(g.adaptive), float(g.lecam_weight),
                     float(g.lecam_decay), float(g.r1_gamma))


def check_channel_mult(config: ml_collections.ConfigDict) -> None:
    """``config.model.channel_mult`` must be a non-empty tuple of positive ints (the image and video tasks)."""
    mult = config.model.channel_mult
    if not len(mult) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in mult):
        raise ValueError(f"config.model.channel_mult must be a non-empty tuple of positive ints; got {mult}")
