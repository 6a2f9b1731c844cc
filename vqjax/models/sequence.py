"""Tokenizers for multichannel time series ``[B, T, C]``: motion capture, accelerometers, EEG, robot actions.

:class:`SequenceTokenizer` is a 1D convolutional autoencoder (the SEANet encoder and decoder of
:mod:`vqjax.models.audio`, non-causal by default, on ``C`` channels; the temporal downsampling is the product of
``strides``) with optional Transformer blocks at the latent rate, around any layer-2 quantizer (VQ with EMA and
code reset as T2M-GPT, residual VQ as MoMask, FSQ, ...). Two things set it apart from the audio codec:

* **per-channel normalisation travels with the model**: ``mean`` and ``scale`` (one per channel, from the training
  set) are fields, so an artifact's spec carries them; ``encode`` takes raw signals and ``decode`` returns them,
  while ``__call__`` works in normalised units (what the losses compare);
* **multi-scale residual quantization** (``scales``, in the NeuroRVQ spirit): the latent sequence is quantized
  coarse to fine, at each scale ``s`` (largest first) the remaining residual averaged over windows of ``s`` latent
  frames, quantized by that scale's own quantizer and repeated back, so slow trends cost few tokens and fine
  detail is what the later scales add. The codes of the scales are concatenated along time: ``F / s_1 + F / s_2 +
  ...`` positions for ``F`` latent frames.

    model = sequence_tokenizer(channels=32, strides=(2, 2), latent_dim=16, signal_channels=6, ...)
    codes = model.apply(variables, x, method=model.encode)     # x [B, T, 6] raw -> [B, T / 4] (one scale, VQ)
    x_hat = model.apply(variables, codes, method=model.decode)  # [B, T, 6] raw

:func:`spectral_loss` is the LaBraM/NeuroRVQ-style target on patches: the amplitude and the phase of each
channel's Fourier transform per patch.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.audio import SEANetDecoder, SEANetEncoder
from vqjax.quantizers.base import Quantized

__all__ = ["LatentTransformer", "MultiScaleResidual", "SequenceTokenizer", "SequenceClassifier", "spectral_loss",
           "patch_spectrum"]


def _sinusoid(length: int, dim: int) -> jax.Array:
    pos = np.arange(length)[:, None]
    freq = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)[None]
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq)[:, :dim // 2]
    return jnp.asarray(table)


class LatentTransformer(nn.Module):
    """``num_layers`` pre-LayerNorm Transformer blocks of ``width`` channels (bidirectional self-attention with
    ``num_heads`` heads, a GELU MLP of 4x width) over ``[B, F, D]``: a dense layer to ``width`` with sinusoidal
    positions added, the blocks, a dense layer back to ``D`` added to the input. Zero layers: the identity."""

    num_layers: int
    width: int = 64
    num_heads: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.num_layers == 0:
            return x
        if self.width % self.num_heads:
            raise ValueError(f"LatentTransformer: width ({self.width}) must be a multiple of num_heads "
                             f"({self.num_heads})")
        h = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype)(x) + _sinusoid(x.shape[1], self.width).astype(self.dtype)
        for _ in range(self.num_layers):
            a = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
            h = h + nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype)(a, a)
            m = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
            h = h + nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype)(nn.gelu(nn.Dense(4 * self.width, dtype=self.dtype, param_dtype=self.param_dtype)(m)))
        return x + nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype)(nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h))


class MultiScaleResidual(nn.Module):
    """Residual quantization across temporal scales: ``quantizers[i]`` quantizes the residual averaged over windows
    of ``scales[i]`` latent frames (coarsest first; every scale must divide the frame count). The call returns the summed quantized values, the concatenated codes, and the quantizers'
    summed loss and averaged metrics (as a :class:`vqjax.Quantized`)."""

    quantizers: Sequence[nn.Module]
    scales: Sequence[int]

    @property
    def vocab_size(self) -> int:
        """Distinct values of one code: the largest of the scales' quantizers' (codes of every scale share it)."""
        return max(int(q.vocab_size) for q in self.quantizers)

    def _check(self, frames: int) -> None:
        for s in self.scales:
            if frames % s:
                raise ValueError(f"MultiScaleResidual: every scale must divide the latent frames ({frames}); got "
                                 f"scales {tuple(self.scales)}")

    def __call__(self, z: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True):
        self._check(z.shape[1])
        residual, total, loss, metrics, codes = z, jnp.zeros_like(z), 0.0, {}, []
        for quantizer, s in zip(self.quantizers, self.scales):
            pooled = residual.reshape(z.shape[0], z.shape[1] // s, s, z.shape[2]).mean(axis=2)
            q = quantizer(pooled, train=train, apply_update=apply_update)
            up = jnp.repeat(q.values, s, axis=1)
            total = total + up
            residual = residual - jax.lax.stop_gradient(up)
            loss = loss + q.loss
            codes.append(q.codes)
            for k, v in q.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v / len(self.scales)
        return Quantized(total, jnp.concatenate(codes, axis=1), jnp.asarray(loss, jnp.float32), metrics)

    def encode(self, z: jax.Array) -> jax.Array:
        self._check(z.shape[1])
        residual, codes = z, []
        for quantizer, s in zip(self.quantizers, self.scales):
            pooled = residual.reshape(z.shape[0], z.shape[1] // s, s, z.shape[2]).mean(axis=2)
            c = quantizer.encode(pooled)
            residual = residual - jnp.repeat(quantizer.decode(c), s, axis=1)
            codes.append(c)
        return jnp.concatenate(codes, axis=1)

    def frames_for(self, positions: int) -> int:
        """Latent frames ``F`` whose codes take ``positions = sum(F / s)`` positions."""
        per = sum(1.0 / s for s in self.scales)
        frames = int(round(positions / per))
        if sum(frames // s for s in self.scales) != positions or any(frames % s for s in self.scales):
            raise ValueError(f"MultiScaleResidual.decode: {positions} code positions are not a whole number of "
                             f"latent frames for scales {tuple(self.scales)}")
        return frames

    def decode(self, codes: jax.Array) -> jax.Array:
        frames = self.frames_for(codes.shape[1])
        out, start = None, 0
        for quantizer, s in zip(self.quantizers, self.scales):
            part = codes[:, start:start + frames // s]
            start += frames // s
            v = jnp.repeat(quantizer.decode(part), s, axis=1)
            out = v if out is None else out + v
        return out


class SequenceTokenizer(nn.Module):
    """Raw ``[B, T, C]`` -> normalise -> encoder -> Transformer -> quantizer -> Transformer -> decoder -> raw.

    ``__call__(xn, train)`` takes normalised signals (:meth:`normalize`) and returns ``(normalised reconstruction,
    Quantized)``; ``encode(x)`` raw signals to int32 codes ``[B, T / hop(, levels)]`` (multi-scale: ``[B, sum_s T /
    (hop s)]``); ``decode(codes)`` codes to raw signals. ``T`` must be a multiple of :attr:`hop_length` (times the
    largest scale).
    """

    encoder: SEANetEncoder
    quantizer: nn.Module
    decoder: SEANetDecoder
    mean: Sequence[float]
    scale: Sequence[float]
    transformer_layers: int = 0

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def num_levels(self) -> int | None:
        return getattr(self.quantizer, "num_levels", None)

    def _stats(self):
        return jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.scale, jnp.float32)

    def normalize(self, x: jax.Array) -> jax.Array:
        mean, scale = self._stats()
        if x.shape[-1] != mean.shape[0]:
            raise ValueError(f"SequenceTokenizer: signals must have {mean.shape[0]} channels; got {x.shape[-1]} "
                             f"(shape {x.shape})")
        return (x.astype(jnp.float32) - mean) / scale

    def denormalize(self, y: jax.Array) -> jax.Array:
        mean, scale = self._stats()
        return y.astype(jnp.float32) * scale + mean

    def setup(self):
        dt = dict(dtype=self.encoder.dtype, param_dtype=self.encoder.param_dtype)
        self.pre = LatentTransformer(self.transformer_layers, **dt)
        self.post = LatentTransformer(self.transformer_layers, **dt)

    def _latent(self, xn):
        z, _ = self.encoder(xn)
        return self.pre(z)

    def _signal(self, v):
        y, _ = self.decoder(self.post(v))
        return y

    def __call__(self, xn: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True):
        q = self.quantizer(self._latent(xn), train=train, apply_update=apply_update)
        return self._signal(q.values), q

    def encode(self, x: jax.Array) -> jax.Array:
        return self.quantizer.encode(self._latent(self.normalize(x)))

    def decode(self, codes: jax.Array) -> jax.Array:
        return self.denormalize(self._signal(self.quantizer.decode(codes)))

    def reconstruct(self, xn: jax.Array, levels: int | None = None) -> tuple[jax.Array, jax.Array]:
        """``(reconstruction, codes)``: the normalised reconstruction of normalised ``xn`` from the first
        ``levels`` levels of a residual quantizer's codes (None: all), and all the codes."""
        codes = self.quantizer.encode(self._latent(xn))
        kept = codes if levels is None else jnp.where(jnp.arange(codes.shape[-1]) < levels, codes, -1)
        return self._signal(self.quantizer.decode(kept)), codes


def _patch_rfft(x: jax.Array, patch: int) -> jax.Array:
    b, t, c = x.shape
    if t % patch:
        raise ValueError(f"patch_spectrum: the length ({t}) must be a multiple of the patch ({patch})")
    spec = jnp.fft.rfft(x.astype(jnp.float32).reshape(b, t // patch, patch, c), axis=2)
    return jnp.moveaxis(spec, 2, 3)                                   # [B, T / patch, C, patch // 2 + 1]


def patch_spectrum(x: jax.Array, patch: int):
    """``(amplitude, phase)`` of the real FFT of each channel over consecutive patches of ``patch`` samples:
    ``x [B, T, C]`` -> ``[B, T / patch, C, patch // 2 + 1]`` each."""
    spec = _patch_rfft(x, patch)
    return jnp.abs(spec), jnp.angle(spec)


def spectral_loss(recon: jax.Array, target: jax.Array, patch: int) -> jax.Array:
    """The Fourier amplitude and phase of each patch (LaBraM, Jiang et al. 2024; NeuroRVQ): the mean absolute
    difference of the amplitudes plus the mean of ``1 - cos`` of the phase differences weighted by the target's
    normalised amplitude (a phase only counts where there is energy; wrap-around free). The cosine is computed as
    ``Re(r conj(t)) / (|r| |t|)`` with magnitudes kept off zero, so the gradient stays finite at empty bins (the
    angle's is not)."""
    r, t = _patch_rfft(recon, patch), _patch_rfft(target, patch)
    a_r = jnp.sqrt(jnp.real(r) ** 2 + jnp.imag(r) ** 2 + 1e-12)
    a_t = jnp.sqrt(jnp.real(t) ** 2 + jnp.imag(t) ** 2 + 1e-12)
    cos = (jnp.real(r) * jnp.real(t) + jnp.imag(r) * jnp.imag(t)) / (a_r * a_t)
    weight = a_t / jnp.sum(a_t, axis=-1, keepdims=True)
    phase = jnp.sum(weight * (1.0 - cos), axis=-1)
    return jnp.mean(jnp.abs(a_r - a_t)) / patch ** 0.5 + jnp.mean(phase)


class SequenceClassifier(nn.Module):
    """A small Transformer classifier over a series' tokens or over the raw series, the same blocks either way (the
    downstream test of a time-series tokenizer: how much of the class survives tokenization).

    ``__call__(x)`` with int codes ``[B, P]`` or ``[B, P, L]`` (``vocab_size`` set): the sum of one learned embedding
    per level; with floats ``[B, T, C]`` (``patch`` set): non-overlapping patches of ``patch`` samples, each
    flattened and projected (so ``patch = hop`` gives both the same sequence length). Then
    :class:`LatentTransformer` blocks of ``width``, mean pooling over positions and a dense layer to
    ``num_classes`` logits.
    """

    num_classes: int
    width: int = 64
    num_layers: int = 2
    vocab_size: int | None = None
    patch: int | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if jnp.issubdtype(x.dtype, jnp.integer):
            if self.vocab_size is None:
                raise ValueError("SequenceClassifier: integer codes need vocab_size")
            codes = x if x.ndim == 3 else x[..., None]
            h = sum(nn.Embed(self.vocab_size, self.width, name=f"embed_{level}", **dt)(codes[..., level])
                    for level in range(codes.shape[-1]))
        else:
            if self.patch is None or x.ndim != 3 or x.shape[1] % self.patch:
                raise ValueError(f"SequenceClassifier: raw signals [B, T, C] need patch dividing T; got shape "
                                 f"{x.shape} and patch {self.patch}")
            b, t, c = x.shape
            h = nn.Dense(self.width, **dt)(x.reshape(b, t // self.patch, self.patch * c))
        h = LatentTransformer(self.num_layers, width=self.width, **dt)(h)
        return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=self.param_dtype)(jnp.mean(h, axis=1))
