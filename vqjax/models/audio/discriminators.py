"""Waveform discriminators and their losses: the multi-period discriminator (HiFi-GAN, Kong et al. 2020), the
multi-resolution complex-STFT discriminator (EnCodec, Défossez et al. 2022) and feature matching.

Each discriminator maps a waveform ``[B, T, 1]`` to a list of ``(logits, features)``, one per sub-discriminator
(a period or an FFT size); the adversarial losses of :mod:`vqjax.models.vqgan` (``hinge``, ``non_saturating``) are
averaged over the sub-discriminators, and feature matching compares every intermediate feature map.

    disc = AudioDiscriminators(periods=(2, 3, 5, 7, 11), fft_sizes=(512, 1024, 2048), channels=16)
    params = disc.init(key, wave)
    d_loss = discriminator_losses(disc.apply(params, real), disc.apply(params, fake), "hinge")
    g_loss = generator_losses(disc.apply(params, fake), "hinge")
    fm = feature_matching(disc.apply(params, real), disc.apply(params, fake))
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.audio.losses import stft
from vqjax.models.vqgan import discriminator_loss, generator_loss

__all__ = ["PeriodDiscriminator", "STFTDiscriminator", "AudioDiscriminators", "discriminator_losses",
           "generator_losses", "feature_matching"]

Outputs = list[tuple[jax.Array, list[jax.Array]]]


def _lrelu(x):
    return nn.leaky_relu(x, 0.1)


class PeriodDiscriminator(nn.Module):
    """The waveform folded into ``[T / period, period]`` (reflect-padded to a multiple of the period) and read by
    2D convolutions of kernel ``(5, 1)``, stride ``(3, 1)``: every column is one phase of the period. Widths grow
    4x per layer from ``channels`` up to ``max_channels``."""

    period: int
    channels: int = 16
    max_channels: int = 256
    num_layers: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array):
        b, t, _ = x.shape
        pad = (-t) % self.period
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)), mode="reflect")
        h = x.reshape(b, -1, self.period, 1).astype(self.dtype)
        features = []
        width = self.channels
        for _ in range(self.num_layers):
            h = _lrelu(nn.Conv(width, (5, 1), strides=(3, 1), padding=((2, 2), (0, 0)), dtype=self.dtype, param_dtype=self.param_dtype)(h))
            features.append(h)
            width = min(width * 4, self.max_channels)
        h = _lrelu(nn.Conv(width, (5, 1), padding=((2, 2), (0, 0)), dtype=self.dtype, param_dtype=self.param_dtype)(h))
        features.append(h)
        return nn.Conv(1, (3, 1), padding=((1, 1), (0, 0)), dtype=jnp.float32, param_dtype=self.param_dtype)(h), features


class STFTDiscriminator(nn.Module):
    """The complex STFT (``n_fft``, hop ``n_fft / 4``) as two channels (real, imaginary) ``[B, frames, bins, 2]``,
    read by 2D convolutions: a ``(3, 9)`` layer, then ``(3, 9)`` layers striding 2 over frequency with time
    dilations 1, 2, 4, a ``(3, 3)`` layer and a ``(3, 3)`` output."""

    n_fft: int
    channels: int = 16
    dilations: Sequence[int] = (1, 2, 4)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array):
        s = stft(x, self.n_fft)
        h = jnp.stack([jnp.real(s), jnp.imag(s)], axis=-1).astype(self.dtype)
        features = []
        h = _lrelu(nn.Conv(self.channels, (3, 9), padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype)(h))
        features.append(h)
        for d in self.dilations:
            h = _lrelu(nn.Conv(self.channels, (3, 9), strides=(1, 2), kernel_dilation=(d, 1), padding="SAME",
                               dtype=self.dtype, param_dtype=self.param_dtype)(h))
            features.append(h)
        h = _lrelu(nn.Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype)(h))
        features.append(h)
        return nn.Conv(1, (3, 3), padding="SAME", dtype=jnp.float32, param_dtype=self.param_dtype)(h), features


class AudioDiscriminators(nn.Module):
    """A :class:`PeriodDiscriminator` per period and an :class:`STFTDiscriminator` per FFT size, in that order.

    Attributes:
      periods: the periods (HiFi-GAN uses 2, 3, 5, 7, 11; empty for none).
      fft_sizes: the STFT sizes (EnCodec uses 5 from 128 to 2048; empty for none).
      channels: base width of every sub-discriminator.
      dtype, param_dtype: compute and storage dtypes (logits in float32; the STFT is taken in float32).
    """

    periods: Sequence[int] = (2, 3, 5, 7, 11)
    fft_sizes: Sequence[int] = (512, 1024, 2048)
    channels: int = 16
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> Outputs:
        if x.ndim != 3 or x.shape[-1] != 1:
            raise ValueError(f"AudioDiscriminators: x must be a mono waveform [B, T, 1]; got shape {x.shape}")
        if not self.periods and not self.fft_sizes:
            raise ValueError("AudioDiscriminators: periods and fft_sizes are both empty")
        x = x.astype(jnp.float32)
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        outs = [PeriodDiscriminator(int(p), self.channels, **dt)(x) for p in self.periods]
        outs += [STFTDiscriminator(int(n), self.channels, **dt)(x) for n in self.fft_sizes]
        return outs


def discriminator_losses(real: Outputs, fake: Outputs, kind: str = "hinge") -> jax.Array:
    """The mean over sub-discriminators of :func:`vqjax.models.vqgan.discriminator_loss` on their logits."""
    return sum(discriminator_loss(r, f, kind) for (r, _), (f, _) in zip(real, fake)) / len(real)


def generator_losses(fake: Outputs, kind: str = "hinge") -> jax.Array:
    """The mean over sub-discriminators of :func:`vqjax.models.vqgan.generator_loss` on their logits."""
    return sum(generator_loss(f, kind) for f, _ in fake) / len(fake)


def feature_matching(real: Outputs, fake: Outputs) -> jax.Array:
    """Mean over every feature map of every sub-discriminator of ``mean |f_real - f_fake| / mean |f_real|`` (the
    relative L1 of EnCodec); the real features carry no gradient."""
    total, count = 0.0, 0
    for (_, fr), (_, ff) in zip(real, fake):
        for a, b in zip(fr, ff):
            a = jax.lax.stop_gradient(a)
            total = total + jnp.mean(jnp.abs(a - b)) / (jnp.mean(jnp.abs(a)) + 1e-6)
            count += 1
    return total / count
