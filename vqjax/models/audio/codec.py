"""The audio codec: encoder, quantizer and decoder, with optional pitch and envelope codes in front of the
latents; batch and chunked (streaming) encoding and decoding that agree exactly."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.audio.coders import EnvelopeCoder, PitchCoder
from vqjax.models.audio.seanet import SEANetDecoder, SEANetEncoder
from vqjax.models.audio.stft import ENVELOPE_CENTRE

__all__ = ["AudioCodec", "align_output", "frames_for"]


def align_output(output: jax.Array, reference: jax.Array, delay: int):
    """``(output[:, delay:], reference[:, :T - delay])``: a codec's output, lagging by ``delay`` samples, and the
    input samples it reconstructs, time on axis 1."""
    if delay == 0:
        return output, reference
    return output[:, delay:], reference[:, :reference.shape[1] - delay]


def frames_for(num_samples: int, hop_length: int) -> int:
    """Frames that cover ``num_samples`` samples (the last one padded): ``ceil(num_samples / hop_length)``."""
    return math.ceil(num_samples / hop_length)


class AudioCodec(nn.Module):
    """Waveforms ``[B, T, audio_channels]`` -> encoder -> quantizer -> decoder (SoundStream/EnCodec layout).

    ``__call__(x, train)`` returns ``(reconstruction, Quantized)`` for whole signals (``T`` a multiple of the hop
    length); ``encode(x, num_levels)`` the int32 codes ``[B, T / hop, L]`` (a residual quantizer's first
    ``num_levels`` levels: fewer levels, lower bitrate) and ``decode(codes)`` the waveform (missing levels count as
    absent). ``encode_stream``/``decode_stream`` take and return the causal encoder's or decoder's state, so
    consecutive chunks give the whole signal's codes and samples.

    Codes sent beside the latents come first, in this order: the pitch (:class:`PitchCoder`, one level), then the
    spectral envelope (:class:`EnvelopeCoder`, its ``E`` levels), then the quantizer's ``L`` levels. With an
    envelope, training also drops, with probability ``quantizer_dropout * E / (E + L)`` per frame, every latent
    level and the envelope's levels after the first ``m ~ U{1..E}`` (the quantizer's own dropout keeps 1 to L
    latent levels), so the pitch and the envelope's first levels alone decode (the lowest bitrates, a parametric
    vocoder); with no envelope level at all (``num_levels=1``) the decoder reads a flat one (``ENVELOPE_CENTRE``),
    never seen in training.
    """

    encoder: SEANetEncoder
    quantizer: nn.Module
    decoder: SEANetDecoder
    pitch: PitchCoder | None = None
    envelope: EnvelopeCoder | None = None

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    def __call__(self, x: jax.Array, *, train: bool = False, apply_update: bool | jax.Array = True):
        """``(waveform, Quantized)``; ``apply_update=False`` holds the codebook statistics of this call pending
        (gradient accumulation: all micro-batches but the last)."""
        z, _ = self.encoder(x)
        q = self.quantizer(z, train=train, apply_update=apply_update)
        extra = {}
        if self.pitch is not None:
            extra["pitch"] = self.pitch.decode(self.pitch.encode(x)[0])
        if self.envelope is not None:
            qe = self.envelope(x, train=train, apply_update=apply_update)
            bands = qe.values
            rate = float(getattr(self.quantizer, "quantizer_dropout", 0.0))
            if train and rate > 0 and self.has_rng("vq"):
                bands, q = self._drop_latents(qe, q, rate)
            q = q._replace(metrics={**q.metrics, "envelope_error_db": qe.metrics["envelope_error_db"]})
            extra["envelope"] = (bands, self.envelope.per_bin(bands, self.decoder.n_fft))
        y, _ = self.decoder(q.values, **extra)
        return y, q

    def _drop_latents(self, qe, q, rate: float):
        """``(bands, q)`` with, per frame with probability ``rate * E / (E + L)``, every latent level dropped
        (values 0, codes -1) and the envelope cut to its first ``m ~ U{1..E}`` levels."""
        env_levels = self.envelope.num_levels
        levels = int(getattr(self.quantizer, "num_levels", 1))
        k_off, k_m = jax.random.split(self.make_rng("vq"))
        lead = q.values.shape[:-1]
        off = jax.random.uniform(k_off, lead) < rate * env_levels / (env_levels + levels)
        kept = jnp.where(off, jax.random.randint(k_m, lead, 1, env_levels + 1), env_levels)
        env_codes = jnp.where(jnp.arange(env_levels) < kept[..., None], qe.codes, -1)
        bands = self.envelope.decode(env_codes)
        values = jnp.where(off[..., None], jnp.zeros_like(q.values), q.values)
        codes = jnp.where(off.reshape(off.shape + (1,) * (q.codes.ndim - off.ndim)), -1, q.codes)
        return bands, q._replace(values=values, codes=codes)

    @property
    def delay(self) -> int:
        """Samples by which the decoder's output lags the input (the decoder's :attr:`delay`): ``decode`` sample
        ``n`` reconstructs input sample ``n - delay``; :func:`align_output` pairs them for a loss."""
        return int(self.decoder.delay)

    @property
    def _side_levels(self) -> int:
        return (self.pitch is not None) + (self.envelope.num_levels if self.envelope is not None else 0)

    @property
    def num_levels(self) -> int | None:
        """The code levels: the residual quantizer's, plus the pitch's and the envelope's in front; None for a
        single quantizer (one bitrate)."""
        levels = getattr(self.quantizer, "num_levels", None)
        return None if levels is None else levels + self._side_levels

    def _keep(self, codes: jax.Array, num_levels: int | None) -> jax.Array:
        if num_levels is None:
            return codes
        total = self.num_levels
        if total is None:
            raise ValueError(f"AudioCodec.encode: num_levels applies to a residual quantizer; this one is "
                             f"{type(self.quantizer).__name__}")
        if not 1 <= num_levels <= total:
            raise ValueError(f"AudioCodec.encode: num_levels must lie in [1, {total}]; got {num_levels}")
        return codes[..., :num_levels]

    def encode(self, x: jax.Array, num_levels: int | None = None) -> jax.Array:
        codes, _ = self.encode_stream(x, None, num_levels)
        return codes

    def encode_stream(self, x: jax.Array, state, num_levels: int | None = None):
        """``(codes, state)`` of one chunk (``state=None``: a new signal)."""
        if not self._side_levels:
            z, state = self.encoder(x, state)
            return self._keep(self.quantizer.encode(z), num_levels), state
        enc_state, pitch_state, env_state = (None, None, None) if state is None else state
        z, enc_state = self.encoder(x, enc_state)
        parts = []
        if self.pitch is not None:
            pitch, pitch_state = self.pitch.encode(x, pitch_state)
            parts.append(pitch[..., None])
        if self.envelope is not None:
            env, env_state = self.envelope.encode(x, env_state)
            parts.append(env)
        codes = jnp.concatenate(parts + [self.quantizer.encode(z)], axis=-1)
        return self._keep(codes, num_levels), (enc_state, pitch_state, env_state)

    def _full(self, codes: jax.Array) -> jax.Array:
        total = self.num_levels
        if total is None or codes.shape[-1] == total:
            return codes
        if codes.shape[-1] > total:
            raise ValueError(f"AudioCodec.decode: codes have {codes.shape[-1]} levels; the quantizer has {total}")
        absent = jnp.full(codes.shape[:-1] + (total - codes.shape[-1],), -1, codes.dtype)
        return jnp.concatenate([codes, absent], axis=-1)

    def decode(self, codes: jax.Array) -> jax.Array:
        y, _ = self.decode_stream(codes, None)
        return y

    def decode_stream(self, codes: jax.Array, state):
        """``(samples, state)`` of one chunk of frames (``state=None``: a new signal)."""
        codes = self._full(codes)
        if not self._side_levels:
            return self.decoder(self.quantizer.decode(codes), state)
        extra, start = {}, 0
        if self.pitch is not None:
            extra["pitch"] = self.pitch.decode(codes[..., 0])
            start = 1
        if self.envelope is not None:
            env = codes[..., start:start + self.envelope.num_levels]
            bands = self.envelope.decode(env)
            bands = jnp.where(jnp.any(env >= 0, axis=-1, keepdims=True), bands, ENVELOPE_CENTRE)
            extra["envelope"] = (bands, self.envelope.per_bin(bands, self.decoder.n_fft))
            start += self.envelope.num_levels
        return self.decoder(self.quantizer.decode(codes[..., start:]), state, **extra)

