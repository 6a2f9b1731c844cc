"""Side information sent as codes in front of the latents: the pitch (:class:`PitchCoder`) and the spectral
envelope (:class:`EnvelopeCoder`), each a streaming analysis of the input on windows of two frames."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.audio.dsp import hann_window
from vqjax.models.audio.losses import mel_filterbank, pitch_track
from vqjax.models.audio.stft import MAX_PITCH, MIN_PITCH, frame_signal
from vqjax.nn.multi import ResidualVQ

__all__ = ["PitchCoder", "EnvelopeCoder"]


class PitchCoder(nn.Module):
    """The pitch as one code per codec frame (Codec2's idea, for the harmonic decoder): :func:`pitch_track` on a
    window of ``n_fft`` samples ending at each frame's end (centred without ``causal``), then code 0 for an
    unvoiced frame and ``1 .. vocab - 1`` for pitches evenly spaced in log between ``min_pitch`` and ``max_pitch``
    (cycles per sample). With 1024 codes, one step is 0.23% of the pitch. No parameters."""

    n_fft: int
    hop: int
    vocab: int
    min_pitch: float = MIN_PITCH
    max_pitch: float = MAX_PITCH
    causal: bool = True

    def encode(self, x: jax.Array, state=None):
        """``(codes int32 [B, T / hop], state)`` of waveforms ``x [B, T, 1]``; causal: the state holds the last
        ``n_fft - hop`` samples."""

        frames, state = frame_signal(x[..., 0].astype(jnp.float32), self.n_fft, self.hop, self.causal, state)
        pitch, voiced = pitch_track(frames, self.min_pitch, self.max_pitch)
        span = math.log(self.max_pitch / self.min_pitch)
        position = jnp.clip(jnp.log(pitch / self.min_pitch) / span, 0.0, 1.0)
        codes = 1 + jnp.round(position * (self.vocab - 2)).astype(jnp.int32)
        return jnp.where(voiced > 0, codes, 0), state

    def decode(self, codes: jax.Array):
        """``(pitch, voiced)`` ``[B, F]`` float32 of codes (0 or absent, -1: unvoiced)."""
        voiced = (codes > 0).astype(jnp.float32)
        step = jnp.maximum(codes - 1, 0).astype(jnp.float32) / (self.vocab - 2)
        return self.min_pitch * (self.max_pitch / self.min_pitch) ** step, voiced




class EnvelopeCoder(nn.Module):
    """The spectral envelope as codes (Codec2 sends line spectral pairs, LPCNet Bark-band cepstra): per codec frame
    of ``hop`` samples, ``per_frame`` envelopes (every ``hop / per_frame`` samples), each the log power in
    ``num_bands`` mel bands (unit-area triangles, :func:`~vqjax.models.audio.losses.mel_filterbank`) of the
    Hann-windowed ``n_fft`` samples ending where its step ends (centred without ``causal``), concatenated and
    quantized by a residual VQ of ``num_levels`` levels of ``codebook_size`` codes in that log domain (EMA
    codebooks, k-means init, dead-code reseeding). The decoder reads the decoded envelope beside the latents and
    builds its magnitudes on :meth:`per_bin` of it, so a voice or microphone unlike the training ones keeps its
    envelope instead of being regressed toward theirs. ``__call__`` quantizes for training (the EMA statistics
    update); ``encode``/``decode`` go between samples, codes and log band powers ``[B, F, per_frame *
    num_bands]``."""

    n_fft: int
    hop: int
    sample_rate: int
    num_bands: int = 20
    num_levels: int = 2
    codebook_size: int = 1024
    causal: bool = True
    per_frame: int = 1

    def setup(self):
        if self.hop % self.per_frame or self.n_fft < self.hop // self.per_frame:
            raise ValueError(f"EnvelopeCoder: per_frame ({self.per_frame}) must divide hop ({self.hop}) into steps "
                             f"no longer than n_fft ({self.n_fft})")
        self.quantizer = ResidualVQ(self.num_levels, self.codebook_size, self.per_frame * self.num_bands,
                                    codebook_learning="ema", codebook_init="kmeans", dead_code_threshold=1.0)

    def features(self, x: jax.Array, state=None):
        """``(log band powers float32 [B, T / hop, per_frame * num_bands], state)`` of waveforms ``x [B, T, 1]``;
        causal: the state holds the last ``n_fft - hop / per_frame`` samples."""

        step = self.hop // self.per_frame
        frames, state = frame_signal(x[..., 0].astype(jnp.float32), self.n_fft, step, self.causal, state)
        power = jnp.abs(jnp.fft.rfft(frames * hann_window(self.n_fft), axis=-1)) ** 2
        bands = jnp.log(jnp.maximum(power @ jnp.asarray(mel_filterbank(self.sample_rate, self.n_fft,
                                                                       self.num_bands)), 1e-10))
        return bands.reshape(bands.shape[0], -1, self.per_frame * self.num_bands), state

    def __call__(self, x: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True):
        """The quantized log band powers of ``x`` (a :class:`~vqjax.quantizers.base.Quantized`; no gradient), its
        metrics with ``'envelope_error_db'``, the quantization's RMS error in dB of power."""
        bands, _ = self.features(x)
        q = self.quantizer(jax.lax.stop_gradient(bands), train=train, apply_update=apply_update)
        error_db = jnp.sqrt(jnp.mean((q.values - bands) ** 2)) * (10.0 / math.log(10.0))
        return q._replace(metrics={**q.metrics, "envelope_error_db": error_db})

    def encode(self, x: jax.Array, state=None):
        """``(codes int32 [B, T / hop, num_levels], state)``."""
        bands, state = self.features(x, state)
        return self.quantizer.encode(bands), state

    def decode(self, codes: jax.Array) -> jax.Array:
        """Log band powers ``[B, F, num_bands]`` of codes (-1: level absent)."""
        return self.quantizer.decode(codes)

    def per_bin(self, bands: jax.Array, n_fft: int) -> jax.Array:
        """The log amplitude per bin of an ``n_fft`` spectrum that log band powers ``[B, F, per_frame *
        num_bands]`` imply, ``[B, F * per_frame, n_fft // 2 + 1]`` (one row per envelope): half the log power,
        interpolated linearly in frequency between the bands' centres (held beyond them)."""
        bands = bands.reshape(bands.shape[0], -1, self.num_bands)
        return 0.5 * bands @ jnp.asarray(_band_to_bins(self.sample_rate, self.n_fft, self.num_bands, n_fft))


@functools.lru_cache(maxsize=16)
def _band_to_bins(sample_rate: int, band_fft: int, num_bands: int, n_fft: int) -> np.ndarray:
    """``[num_bands, n_fft // 2 + 1]``: linear interpolation from the mel bands' centres to the bins' frequencies."""

    weights = mel_filterbank(sample_rate, band_fft, num_bands)
    freqs = np.linspace(0, sample_rate / 2, band_fft // 2 + 1)
    centres = (freqs[:, None] * weights).sum(0) / weights.sum(0)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    return np.stack([np.interp(bins, centres, row) for row in np.eye(num_bands)]).astype(np.float32)



