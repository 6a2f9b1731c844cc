"""SEANet encoder and mirrored decoder (SoundStream, Zeghidour et al. 2021; EnCodec, Defossez et al. 2022):
strided streaming 1D convolutions with residual units of dilated convolutions and ELU activations, a frame rate
set by the strides, working on the samples."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models import remat as remat_lib
from vqjax.models.audio.streaming import (
    ResidualUnit,
    StateChain,
    StreamingConv1d,
    StreamingConvTranspose1d,
    check_chunk,
)

__all__ = ["SEANetEncoder", "SEANetDecoder"]


class _SEANet(nn.Module):
    """The fields the SEANet encoder and decoder share: base width, strides, residual units (``num_residual`` per
    stride, dilations ``dilation_base ** j``, kernel ``residual_kernel_size``), the outer ``kernel_size``, causality."""

    channels: int = 32
    strides: Sequence[int] = (2, 4, 5, 8)
    num_residual: int = 1
    dilation_base: int = 2
    kernel_size: int = 7
    residual_kernel_size: int = 3
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.strides))

    @property
    def delay(self) -> int:
        """Samples by which the decoder's output lags the signal: 0 (frame ``t``'s samples are written by frames up
        to ``t``)."""
        return 0

    def _chain(self, state) -> StateChain:
        return StateChain(state)

    def _residual(self, dilation_index: int) -> ResidualUnit:
        return remat_lib.block(ResidualUnit, self.remat)(
            self.residual_kernel_size, self.dilation_base ** dilation_index, causal=self.causal, dtype=self.dtype,
            param_dtype=self.param_dtype)


class SEANetEncoder(_SEANet):
    """Waveforms ``[B, T, audio_channels]`` -> latents ``[B, T / hop_length, latent_dim]``, ``hop_length =
    prod(strides)``.

    A ``kernel_size`` convolution to ``channels``; per stride ``s``: ``num_residual`` residual units (dilations
    ``dilation_base ** j``), ELU and a ``2 s`` strided convolution doubling the width; ELU and a ``kernel_size``
    convolution to ``latent_dim``.
    """

    latent_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, state=None):
        check_chunk(x, self.hop_length, "SEANetEncoder")
        run = self._chain(state)
        h = run(StreamingConv1d(self.channels, self.kernel_size, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), x)
        ch = self.channels
        for s in self.strides:
            for j in range(self.num_residual):
                h = run(self._residual(j), h)
            ch *= 2
            h = run(StreamingConv1d(ch, 2 * s, stride=s, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), nn.elu(h))
        h = run(StreamingConv1d(self.latent_dim, self.kernel_size, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), nn.elu(h))
        return h, (tuple(run.states) if self.causal else None)


class SEANetDecoder(_SEANet):
    """Latents ``[B, F, latent_dim]`` -> waveforms ``[B, F * hop_length, audio_channels]``: the encoder mirrored
    (transposed ``2 s`` convolutions halving the width, in reverse stride order)."""

    audio_channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, state=None):
        check_chunk(z, 1, "SEANetDecoder")
        run = self._chain(state)
        ch = self.channels * 2 ** len(self.strides)
        h = run(StreamingConv1d(ch, self.kernel_size, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), z)
        for s in reversed(tuple(self.strides)):
            ch //= 2
            h = run(StreamingConvTranspose1d(ch, 2 * s, s, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), nn.elu(h))
            for j in range(self.num_residual):
                h = run(self._residual(j), h)
        h = run(StreamingConv1d(self.audio_channels, self.kernel_size, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype),
                nn.elu(h))
        return h, (tuple(run.states) if self.causal else None)


