"""VQGAN's adversarial parts (Esser et al. 2021, "Taming Transformers"): a patch discriminator, its losses, the
adaptive generator weight, and the LeCAM (Tseng et al. 2021) and R1 (Mescheder et al. 2018) regularisers.

All losses are pure functions of logits (``[B, h, w, 1]`` patch scores); the train loop combines them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vqjax.models.autoencoder import group_count

__all__ = ["PatchDiscriminator", "GAN_LOSSES", "discriminator_loss", "generator_loss", "adaptive_weight",
           "lecam_loss", "r1_penalty", "GANConfig", "GANState", "gan_init", "last_layer_grads", "generator_term",
           "decoder_generator_term", "discriminator_step"]

GAN_LOSSES = ("hinge", "non_saturating")


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): stride-2 4x4 convolutions with GroupNorm and leaky ReLU, one logit per patch.

    Attributes:
      channels: width of the first layer (doubled per layer, at most 8x).
      num_layers: stride-2 layers (the receptive field grows with each).
      dtype, param_dtype: compute and storage dtypes (the logits come back in float32).
    """

    channels: int = 32
    num_layers: int = 2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), strides=(2, 2), **kw)(x.astype(self.dtype) * 2.0 - 1.0), 0.2)
        for i in range(1, self.num_layers):
            width = self.channels * min(2 ** i, 8)
            h = nn.Conv(width, (4, 4), strides=(2, 2), use_bias=False, **kw)(h)
            h = nn.leaky_relu(nn.GroupNorm(group_count(width), **kw)(h), 0.2)
        width = self.channels * min(2 ** self.num_layers, 8)
        h = nn.leaky_relu(nn.GroupNorm(group_count(width), **kw)(nn.Conv(width, (3, 3), use_bias=False, **kw)(h)), 0.2)
        return nn.Conv(1, (3, 3), dtype=jnp.float32, param_dtype=self.param_dtype)(h)


def discriminator_loss(real: jax.Array, fake: jax.Array, kind: str = "hinge") -> jax.Array:
    """``hinge``: ``mean(relu(1 - real)) + mean(relu(1 + fake))``; ``non_saturating``:
    ``mean(softplus(-real)) + mean(softplus(fake))`` (both halved, as in taming-transformers)."""
    if kind == "hinge":
        return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))
    if kind == "non_saturating":
        return 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))
    raise ValueError(f"discriminator_loss: kind must be one of {GAN_LOSSES}; got {kind!r}")


def generator_loss(fake: jax.Array, kind: str = "hinge") -> jax.Array:
    """``hinge``: ``-mean(fake)``; ``non_saturating``: ``mean(softplus(-fake))``."""
    if kind == "hinge":
        return -jnp.mean(fake)
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake))
    raise ValueError(f"generator_loss: kind must be one of {GAN_LOSSES}; got {kind!r}")


def adaptive_weight(nll_grad: jax.Array, gan_grad: jax.Array, max_weight: float = 1e4) -> jax.Array:
    """``|∇_W nll| / (|∇_W gan| + 1e-4)`` at the decoder's last layer ``W``, clipped to ``[0, max_weight]`` and
    without gradient: balances the adversarial term against reconstruction (taming-transformers' ``λ``)."""
    w = jnp.linalg.norm(nll_grad) / (jnp.linalg.norm(gan_grad) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


def lecam_loss(real: jax.Array, fake: jax.Array, ema_real: jax.Array, ema_fake: jax.Array) -> jax.Array:
    """LeCAM regulariser: ``mean(relu(real - ema_fake)²) + mean(relu(ema_real - fake)²)``, where the EMAs track
    the mean discriminator outputs on real and generated images."""
    return jnp.mean(jax.nn.relu(real - ema_fake) ** 2) + jnp.mean(jax.nn.relu(ema_real - fake) ** 2)


def r1_penalty(disc: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """R1 gradient penalty ``mean_b |∇_x sum D(x_b)|²`` on real images (multiply by ``γ / 2``)."""
    grads = jax.grad(lambda x: jnp.sum(disc(x)))(real)
    return jnp.mean(jnp.sum(grads.astype(jnp.float32) ** 2, axis=tuple(range(1, grads.ndim))))


# ----------------------------------------------------------------------------------------------------------------
# The adversarial half of a VQGAN train step, as pure functions of explicit fields.

class GANConfig(NamedTuple):
    """Hyperparameters of the adversarial terms.

    Attributes:
      weight: weight of the generator's adversarial term (> 0).
      loss: 'hinge' or 'non_saturating'.
      start_step: steps before the discriminator and the adversarial term switch on.
      adaptive: scale the term by :func:`adaptive_weight` at the decoder's last layer.
      lecam_weight, lecam_decay: LeCAM regulariser weight and the decay of its EMAs.
      r1_gamma: R1 penalty weight (``γ``; the penalty enters as ``γ / 2 * R1``).
    """

    weight: float
    loss: str = "hinge"
    start_step: int = 0
    adaptive: bool = True
    lecam_weight: float = 0.0
    lecam_decay: float = 0.99
    r1_gamma: float = 0.0


class GANState(NamedTuple):
    """The discriminator's parameters and optimizer state, and the LeCAM EMAs ``[2]`` (real, fake)."""

    params: Any
    opt_state: Any
    lecam: jax.Array


def gan_init(disc: nn.Module, tx: optax.GradientTransformation, key: jax.Array, sample: jax.Array) -> GANState:
    """A fresh :class:`GANState` for discriminator ``disc`` on images like ``sample``."""
    params = disc.init(key, sample)
    return GANState(params, tx.init(params), jnp.zeros((2,), jnp.float32))


def last_layer_grads(out_fn: Callable[[jax.Array], jax.Array], last: jax.Array, recon: jax.Array,
                     *losses: Callable[[jax.Array], jax.Array]) -> list[jax.Array]:
    """Gradients of each of ``losses`` (functions of the reconstruction) with respect to the last layer's weight
    ``last``, where ``out_fn(last) == recon``: one VJP through that layer, reused for every loss."""
    _, vjp = jax.vjp(out_fn, last)
    return [vjp(jax.grad(loss)(recon))[0] for loss in losses]


def generator_term(cfg: GANConfig, disc: nn.Module, state: GANState, recon: jax.Array, step: jax.Array, *,
                   nll_of: Callable[[jax.Array], jax.Array] | None = None,
                   out_fn: Callable[[jax.Array], jax.Array] | None = None, last: jax.Array | None = None
                   ) -> tuple[jax.Array, dict]:
    """The weighted adversarial term the generator adds to its loss, and its metrics.

    ``weight * [step >= start_step] * λ * generator_loss(D(recon))`` where ``λ`` is :func:`adaptive_weight` of the
    gradients of ``nll_of`` and of the adversarial loss at the last layer (``cfg.adaptive``; needs ``nll_of``,
    ``out_fn`` and ``last`` as for :func:`last_layer_grads`), else 1.
    """
    on = (step >= cfg.start_step).astype(jnp.float32)
    gen_of = lambda r: generator_loss(disc.apply(state.params, r), cfg.loss)
    g = gen_of(recon)
    weight = jnp.float32(1.0)
    if cfg.adaptive:
        fixed = jax.lax.stop_gradient(recon)
        g_nll, g_gan = last_layer_grads(out_fn, jax.lax.stop_gradient(last), fixed, nll_of, gen_of)
        weight = adaptive_weight(g_nll, g_gan)
    return cfg.weight * on * weight * g, {"gen_loss": g, "adaptive_weight": weight}


def decoder_generator_term(cfg: GANConfig, disc: nn.Module, state: GANState, model: nn.Module, params,
                           features: jax.Array, recon: jax.Array, step: jax.Array,
                           nll_of: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, dict]:
    """:func:`generator_term` with the adaptive weight taken at the last layer of ``model``'s decoder: ``model``
    gives ``last_layer_params(params)`` and ``decoder.apply_last_layer(last_params, features)``, ``features``
    being what that layer read (the image and the video tokenizers)."""
    h = jax.lax.stop_gradient(features)
    last = model.last_layer_params(params)
    out_fn = lambda kernel: model.decoder.apply_last_layer({**last, "kernel": kernel}, h)
    return generator_term(cfg, disc, state, recon, step, nll_of=nll_of, out_fn=out_fn, last=last["kernel"])


def discriminator_step(cfg: GANConfig, disc: nn.Module, tx: optax.GradientTransformation, state: GANState,
                       real: jax.Array, fake: jax.Array, step: jax.Array) -> tuple[GANState, dict]:
    """One discriminator update on ``real`` and (gradient-free) ``fake`` images, with LeCAM and R1 when their
    weights are positive; before ``cfg.start_step`` the loss is zero (the parameters stay, the optimizer's count
    moves) and the LeCAM EMAs stay. The update is masked rather than skipped by a ``lax.cond``, which XLA's CPU
    backend runs several times slower."""
    on = (step >= cfg.start_step).astype(jnp.float32)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params):
        d_real, d_fake = disc.apply(params, real), disc.apply(params, fake)
        d = discriminator_loss(d_real, d_fake, cfg.loss)
        if cfg.lecam_weight > 0:
            d = d + cfg.lecam_weight * lecam_loss(d_real, d_fake, state.lecam[0], state.lecam[1])
        if cfg.r1_gamma > 0:
            d = d + 0.5 * cfg.r1_gamma * r1_penalty(lambda x: disc.apply(params, x), real)
        return on * d, jnp.stack([jnp.mean(d_real), jnp.mean(d_fake)])

    (loss, means), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    mixed = cfg.lecam_decay * state.lecam + (1.0 - cfg.lecam_decay) * means
    lecam = jnp.where(on > 0, mixed, state.lecam)
    return GANState(params, opt_state, lecam), {"disc_loss": loss, "logits_real": means[0], "logits_fake": means[1]}
