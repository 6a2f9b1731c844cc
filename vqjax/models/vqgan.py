"""VQGAN's adversarial parts (Esser et al. 2021, "Taming Transformers"): a patch discriminator, its losses, the
adaptive generator weight, and the LeCAM (Tseng et al. 2021) and R1 (Mescheder et al. 2018) regularisers.

All losses are pure functions of logits (``[B, h, w, 1]`` patch scores); the train loop combines them.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.autoencoder import group_count

__all__ = ["PatchDiscriminator", "GAN_LOSSES", "discriminator_loss", "generator_loss", "adaptive_weight",
           "lecam_loss", "r1_penalty"]

GAN_LOSSES = ("hinge", "non_saturating")


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): stride-2 4x4 convolutions with GroupNorm and leaky ReLU, one logit per patch.

    Attributes:
      channels: width of the first layer (doubled per layer, at most 8x).
      num_layers: stride-2 layers (the receptive field grows with each).
    """

    channels: int = 32
    num_layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), strides=(2, 2))(x * 2.0 - 1.0), 0.2)
        for i in range(1, self.num_layers):
            width = self.channels * min(2 ** i, 8)
            h = nn.Conv(width, (4, 4), strides=(2, 2), use_bias=False)(h)
            h = nn.leaky_relu(nn.GroupNorm(group_count(width))(h), 0.2)
        width = self.channels * min(2 ** self.num_layers, 8)
        h = nn.leaky_relu(nn.GroupNorm(group_count(width))(nn.Conv(width, (3, 3), use_bias=False)(h)), 0.2)
        return nn.Conv(1, (3, 3))(h)


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
