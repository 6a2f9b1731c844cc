"""Streaming 1D layers: every layer is a function ``(x, state) -> (y, state)``; with ``causal=True`` running
consecutive chunks with the state carried gives the result of running the whole signal at once (see
:mod:`vqjax.models.audio`). Shared by the audio codecs and the sequence tokenizer."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.streaming import StateChain

__all__ = ["check_chunk", "StreamingConv1d", "StreamingConvTranspose1d", "ResidualUnit", "StateChain"]


def check_chunk(x: jax.Array, multiple: int, where: str) -> None:
    if x.ndim != 3:
        raise ValueError(f"{where}: x must be [batch, time, channels]; got shape {x.shape}")
    if x.shape[1] % multiple:
        raise ValueError(f"{where}: the time axis ({x.shape[1]}) must be a multiple of {multiple} (the stride); pad "
                         f"the signal or choose chunks of whole frames")


class StreamingConv1d(nn.Module):
    """A 1D convolution ``[B, T, Cin] -> [B, T / stride, features]``.

    Causal: output frame ``t`` sees the inputs up to the end of its stride window, ``(t + 1) * stride - 1``, and
    ``(kernel_size - 1) * dilation`` before it. The state is the last ``context`` inputs, ``context =
    (kernel_size - 1) * dilation + 1 - stride`` (zeros at the start of a signal).
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    causal: bool = True
    groups: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def context(self) -> int:
        return (self.kernel_size - 1) * self.dilation + 1 - self.stride

    @nn.compact
    def __call__(self, x: jax.Array, state: jax.Array | None = None):
        if self.context < 0:
            raise ValueError(f"StreamingConv1d: kernel_size ({self.kernel_size}) x dilation ({self.dilation}) must "
                             f"cover the stride ({self.stride})")
        check_chunk(x, self.stride, "StreamingConv1d")
        cin = x.shape[-1]
        if cin % self.groups or self.features % self.groups:
            raise ValueError(f"StreamingConv1d: groups ({self.groups}) must divide the input ({cin}) and output "
                             f"({self.features}) channels")
        kernel = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                            (self.kernel_size, cin // self.groups, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        if self.causal:
            if state is None:
                state = jnp.zeros((x.shape[0], self.context, cin), x.dtype)
            full = jnp.concatenate([state.astype(x.dtype), x], axis=1)
            new_state = full[:, full.shape[1] - self.context:]
        else:                 # explicit padding (XLA's CPU kernel gradient of a self-padding convolution is slow)
            full = jnp.pad(x, ((0, 0), (self.context // 2, self.context - self.context // 2), (0, 0)))
            new_state = None
        y = jax.lax.conv_general_dilated(full.astype(self.dtype), kernel.astype(self.dtype), (self.stride,),
                                         [(0, 0)], rhs_dilation=(self.dilation,),
                                         dimension_numbers=("NWC", "WIO", "NWC"),
                                         feature_group_count=self.groups)
        return y + bias.astype(self.dtype), new_state


class StreamingConvTranspose1d(nn.Module):
    """A transposed 1D convolution ``[B, T, Cin] -> [B, T * stride, features]`` (upsampling by ``stride``).

    Each input frame writes ``kernel_size`` outputs starting at ``t * stride``; the full result has ``(T - 1) *
    stride + kernel_size`` samples. Causal: the first ``T * stride`` are this chunk's output and the last
    ``kernel_size - stride`` (the overlap into the next frames) are the state, added onto the next chunk's first
    outputs (dropped at the end of a signal). Non-causal: the overlap is trimmed from both ends.
    """

    features: int
    kernel_size: int
    stride: int
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, state: jax.Array | None = None):
        k, s = self.kernel_size, self.stride
        if k < s:
            raise ValueError(f"StreamingConvTranspose1d: kernel_size ({k}) must be >= stride ({s})")
        check_chunk(x, 1, "StreamingConvTranspose1d")
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                            (k, cin, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        # y[t s + r] = sum_m x[t - m] w[m s + r]: the transposed convolution in polyphase form, one stride-1
        # convolution of M = ceil(k / s) taps producing the s phases as channels (a stride-dilated input is
        # much slower to differentiate on CPU). The full result has (T - 1) s + k samples.
        m_taps = -(-k // s)
        w = jnp.pad(kernel, ((0, m_taps * s - k), (0, 0), (0, 0)))
        w = w.reshape(m_taps, s, cin, self.features).transpose(0, 2, 1, 3).reshape(m_taps, cin, s * self.features)
        # Padding is explicit: XLA's CPU kernel gradient of a convolution that pads itself is ~50x slower.
        xp = jnp.pad(x.astype(self.dtype), ((0, 0), (m_taps - 1, m_taps - 1), (0, 0)))
        y = jax.lax.conv_general_dilated(xp, w[::-1].astype(self.dtype), (1,), [(0, 0)],
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        y = y.reshape(y.shape[0], -1, self.features)[:, :(x.shape[1] - 1) * s + k]
        n = x.shape[1] * s
        overlap = k - s
        if self.causal:
            if state is not None:
                y = y.at[:, :overlap].add(state.astype(y.dtype))
            out, new_state = y[:, :n], y[:, n:]
        else:
            left = overlap // 2
            out, new_state = y[:, left:left + n], None
        return out + bias.astype(self.dtype), new_state


class ResidualUnit(nn.Module):
    """ELU, a dilated ``kernel_size`` convolution to ``channels // compress``, ELU, a 1x1 convolution back, plus
    the input."""

    kernel_size: int = 7
    dilation: int = 1
    compress: int = 2
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None):
        state = (None, None) if state is None else state
        ch = x.shape[-1]
        h, s1 = StreamingConv1d(max(ch // self.compress, 1), self.kernel_size, dilation=self.dilation,
                                causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype)(nn.elu(x), state[0])
        h, s2 = StreamingConv1d(ch, 1, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype)(nn.elu(h), state[1])
        return x + h, (s1, s2)


