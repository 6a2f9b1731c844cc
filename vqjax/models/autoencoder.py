"""Convolutional image tokenizers: encoder, quantizer, decoder (VQ-VAE, van den Oord et al. 2017; the VQGAN
autoencoder of Esser et al. 2021 with its GroupNorm/swish residual blocks).

The encoder maps ``[B, H, W, C]`` images in ``[0, 1]`` to ``[B, H / 2^s, W / 2^s, latent_dim]`` with ``s =
len(channel_mult) - 1`` stride-2 downsamplings; any :mod:`vqjax.nn` quantizer turns each latent vector into tokens;
the decoder mirrors the encoder (nearest-neighbour upsampling then a convolution). Images whose side the
downsampling does not divide are padded with zeros at the bottom and right to the next multiple (28x28 digits to
32x32 for a 1x1 grid), and the decoder, given the ``out_size``, crops its output back.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models import remat as remat_lib

__all__ = ["ResBlock", "Encoder", "Decoder", "ImageTokenizer", "group_count"]


def group_count(channels: int, max_groups: int = 32, positions: int | None = None, min_values: int = 16) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups`` (GroupNorm groups) and, given the spatial
    ``positions`` a group's statistics are taken over, leaves each group at least ``min_values`` values (or one
    group): on a 1x1 or 2x2 map, 32 groups of 2 channels would normalise pairs of numbers to +-1 and erase what
    they carry. Maps of 7x7 and more keep ``min(channels, 32)``-style groups."""
    if positions is not None:
        max_groups = max(1, min(max_groups, channels * positions // min_values))
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


def _norm(x: jax.Array, dtype, param_dtype) -> nn.GroupNorm:
    """GroupNorm for the ``[B, H, W, C]`` map ``x`` (:func:`group_count` of its channels and positions)."""
    return nn.GroupNorm(group_count(x.shape[-1], positions=x.shape[1] * x.shape[2]), dtype=dtype,
                        param_dtype=param_dtype)


class ResBlock(nn.Module):
    """GroupNorm, swish, 3x3 conv, twice, plus a (1x1-projected when the width changes) skip connection."""

    channels: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.swish(_norm(x, self.dtype, self.param_dtype)(x))
        h = nn.Conv(self.channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.swish(_norm(h, self.dtype, self.param_dtype)(h))
        h = nn.Conv(self.channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x + h


class Encoder(nn.Module):
    """Images ``[B, H, W, C]`` -> latents ``[B, ceil(H / 2^s), ceil(W / 2^s), latent_dim]``, ``s =
    len(channel_mult) - 1`` (a side the factor does not divide is zero-padded at the bottom or right).

    Attributes:
      channels: base width; level ``i`` has ``channels * channel_mult[i]``.
      channel_mult: width multipliers per resolution level.
      num_res_blocks: residual blocks per level.
      latent_dim: output channels (the quantizer's ``dim``).
      dtype: compute dtype of the layers (the last projection computes in float32).
      param_dtype: storage dtype of the parameters.
      remat: recompute each residual block's activations in the backward pass.
    """

    channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    latent_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def _block(self, channels: int) -> nn.Module:
        return remat_lib.block(ResBlock, self.remat)(channels, dtype=self.dtype, param_dtype=self.param_dtype)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        factor = 2 ** (len(self.channel_mult) - 1)
        pad = [(0, 0), (0, -x.shape[1] % factor), (0, -x.shape[2] % factor), (0, 0)]
        x = jnp.pad(x, pad) if pad[1][1] or pad[2][1] else x
        h = nn.Conv(self.channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(x.astype(self.dtype) * 2.0 - 1.0)
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = self._block(self.channels * mult)(h)
            if level < len(self.channel_mult) - 1:
                h = nn.Conv(self.channels * mult, (4, 4), strides=(2, 2), dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.swish(_norm(h, self.dtype, self.param_dtype)(h))
        return nn.Conv(self.latent_dim, (1, 1), dtype=jnp.float32, param_dtype=self.param_dtype)(h)


class Decoder(nn.Module):
    """Latents ``[B, h, w, D]`` -> images ``[B, h 2^s, w 2^s, out_channels]`` (values near ``[0, 1]``).

    The last layer is explicit: :meth:`last_layer` is the ``nn.Conv`` that maps the final features to images
    (its parameters live under ``LAST_LAYER``), and ``__call__(z, return_features=True)`` also returns the
    features it reads, so a caller can differentiate the output with respect to that layer alone (the VQGAN
    adaptive weight, :func:`vqjax.models.vqgan.last_layer_grads`). With ``out_size = (H, W)`` the output is
    cropped to it (the images the encoder padded).
    """

    channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    out_size: tuple[int, int] | None = None

    def _block(self, channels: int) -> nn.Module:
        return remat_lib.block(ResBlock, self.remat)(channels, dtype=self.dtype, param_dtype=self.param_dtype)

    LAST_LAYER = "conv_out"

    def last_layer(self, **kwargs) -> nn.Conv:
        """The final 3x3 convolution (features -> ``out_channels``), in float32."""
        return nn.Conv(self.out_channels, (3, 3), dtype=jnp.float32, param_dtype=self.param_dtype, **kwargs)

    def to_images(self, out: jax.Array) -> jax.Array:
        """The last layer's output to images: cropped to ``out_size`` (when set), ``(out + 1) / 2``."""
        if self.out_size is not None:
            out = out[:, :self.out_size[0], :self.out_size[1]]
        return (out + 1.0) * 0.5

    def apply_last_layer(self, last_params, features: jax.Array) -> jax.Array:
        """Images from ``features`` and the last layer's parameters ``last_params`` (a pure function of both)."""
        return self.to_images(self.last_layer(parent=None).apply({"params": last_params}, features))

    @nn.compact
    def __call__(self, z: jax.Array, *, return_features: bool = False):
        mults = tuple(self.channel_mult)[::-1]
        h = nn.Conv(self.channels * mults[0], (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(z.astype(self.dtype))
        for level, mult in enumerate(mults):
            for _ in range(self.num_res_blocks):
                h = self._block(self.channels * mult)(h)
            if level < len(mults) - 1:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, hh * 2, ww * 2, c), "nearest")
                h = nn.Conv(self.channels * mults[level + 1], (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.swish(_norm(h, self.dtype, self.param_dtype)(h))
        images = self.to_images(self.last_layer(name=self.LAST_LAYER)(h))
        return (images, h) if return_features else images


class ImageTokenizer(nn.Module):
    """Encoder -> quantizer -> decoder.

    ``__call__(x, train)`` returns ``(reconstruction, Quantized)``; ``encode(x)`` returns the int32 codes
    (``[B, h, w]``, or ``[B, h, w, L]`` for multi-codebook quantizers) and ``decode(codes)`` the images.

    Attributes:
      encoder, decoder: the convolutional halves.
      quantizer: any :mod:`vqjax.nn` quantizer whose ``dim`` is the encoder's ``latent_dim``.
    """

    encoder: Encoder
    quantizer: nn.Module
    decoder: Decoder

    def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False,
                 apply_update: bool | jax.Array = True):
        """``(reconstruction, Quantized)``, or ``(reconstruction, Quantized, decoder features)`` with
        ``return_features`` (the input of the decoder's last layer). ``apply_update=False`` holds the codebook
        statistics of this call pending (gradient accumulation: all micro-batches but the last)."""
        q = self.quantizer(self.encoder(x), train=train, apply_update=apply_update)
        if return_features:
            recon, h = self.decoder(q.values, return_features=True)
            return recon, q, h
        return self.decoder(q.values), q

    def encode(self, x: jax.Array) -> jax.Array:
        return self.quantizer.encode(self.encoder(x))

    def decode(self, codes: jax.Array) -> jax.Array:
        return self.decoder(self.quantizer.decode(codes))

    def last_layer_params(self, params) -> dict:
        """The decoder's last-layer parameters within this model's ``params``."""
        return params["decoder"][Decoder.LAST_LAYER]
