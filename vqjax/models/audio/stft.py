"""STFT encoder and inverse-STFT decoder (the Vocos decoder of WavTokenizer, Siuzdak 2023; Ji et al. 2024), and
the framing, windowing, overlap-add and harmonic excitation they stream with.

The encoder reads the short-time spectrum; the decoder predicts a log magnitude and a phase per bin, turned into
samples by the inverse FFT and overlap-add, with ConvNeXt blocks at the frame rate in between. A causal inverse
STFT writes each frame's window ahead of the frame, so its output lags the input by ``n_fft - hop`` samples
(``delay``). With ``harmonic=True`` the decoder adds a voiced part: a pitch, a voicing and an envelope shaping
:func:`harmonic_frames`."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models import remat as remat_lib
from vqjax.models.audio.dsp import hann_window
from vqjax.models.audio.streaming import StateChain, StreamingConv1d, check_chunk

__all__ = ["ConvNeXtBlock", "STFTEncoder", "ISTFTDecoder", "hann_window", "frame_signal", "frame_spectra", "harmonic_frames", "overlap_add", "inverse_stft", "MIN_PITCH", "MAX_PITCH", "ENVELOPE_CENTRE", "ENVELOPE_SCALE"]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block over time (as in Vocos, Siuzdak 2023): a depthwise ``kernel_size`` convolution, LayerNorm, a
    pointwise MLP ``channels -> expansion * channels -> channels`` with GELU, scaled by a learned per-channel
    ``layer_scale`` (initially ``layer_scale_init``), plus the input. The state is the depthwise convolution's."""

    kernel_size: int = 7
    expansion: int = 3
    layer_scale_init: float = 0.1
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None):
        ch = x.shape[-1]
        h, state = StreamingConv1d(ch, self.kernel_size, groups=ch, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype)(x, state)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.Dense(self.expansion * ch, dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.Dense(ch, dtype=self.dtype, param_dtype=self.param_dtype)(nn.gelu(h))
        scale = self.param("layer_scale", nn.initializers.constant(self.layer_scale_init), (ch,), self.param_dtype)
        return x + scale.astype(self.dtype) * h, state


class _Fourier(nn.Module):
    """The fields the STFT encoder and iSTFT decoder share. ``strides[0]`` is the STFT hop (window ``n_fft = 4 *
    strides[0]``); the later strides change the frame rate by strided convolutions (encoder) or by splitting each
    frame into ``s`` (decoder). ``channels`` is the width and ``num_residual`` the ConvNeXt blocks at each rate."""

    channels: int = 256
    strides: Sequence[int] = (160, 2)
    num_residual: int = 2
    kernel_size: int = 7
    causal: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.strides))

    @property
    def n_fft(self) -> int:
        return 4 * int(self.strides[0])

    @property
    def delay(self) -> int:
        """Samples by which the causal decoder's output lags the signal, ``n_fft - strides[0]``: a frame's window
        reaches that far past the frame, so a causal decoder writes sample ``n`` as its estimate of input sample
        ``n - delay`` (the non-causal one centres its windows: 0)."""
        return self.n_fft - int(self.strides[0]) if self.causal else 0

    def _chain(self, state) -> StateChain:
        return StateChain(state)

    def _blocks(self, run: StateChain, h):
        scale = 1.0 / (len(self.strides) * self.num_residual)
        for _ in range(self.num_residual):
            block = remat_lib.block(ConvNeXtBlock, self.remat)
            h = run(block(self.kernel_size, layer_scale_init=scale, causal=self.causal, dtype=self.dtype,
                          param_dtype=self.param_dtype), h)
        return h


def frame_signal(x: jax.Array, n_fft: int, hop: int, causal: bool = True, state: jax.Array | None = None):
    """``(frames [B, T / hop, n_fft], state)`` of ``x [B, T]`` (``T`` a multiple of ``hop``). Causal: frame ``t``
    ends at sample ``(t + 1) hop`` and the state is the last ``n_fft - hop`` samples (zeros before the signal);
    otherwise the frames are centred (``(n_fft - hop) / 2`` zeros each side) and the state stays None."""
    context = n_fft - hop
    if causal:
        state = jnp.zeros((x.shape[0], context), x.dtype) if state is None else state.astype(x.dtype)
        full = jnp.concatenate([state, x], axis=1)
        new_state = full[:, full.shape[1] - context:]
    else:
        full, new_state = jnp.pad(x, ((0, 0), (context // 2, context - context // 2))), None
    idx = hop * np.arange(x.shape[1] // hop)[:, None] + np.arange(n_fft)[None, :]
    return full[:, idx], new_state


ENVELOPE_CENTRE = -12.0     # the log band powers of speech at -23 LUFS lie around -23 .. 0; the decoder reads them
ENVELOPE_SCALE = 6.0        # as (bands - ENVELOPE_CENTRE) / ENVELOPE_SCALE, of order one


MIN_PITCH = 50.0 / 16000      # the voiced range, cycles per sample: 50 to 550 Hz at 16 kHz (decoder and pitch codes)
MAX_PITCH = 550.0 / 16000


def frame_spectra(x: jax.Array, n_fft: int, hop: int, causal: bool = True, state: jax.Array | None = None):
    """``(spectra [B, T / hop, n_fft // 2 + 1], state)``: the Hann-windowed FFT of each of :func:`frame_signal`'s
    frames (complex64). The STFT encoder reads these, and frame ``t`` is what the inverse-STFT decoder's frame
    ``t`` reconstructs (up to scale), on the same grid."""
    frames, state = frame_signal(x, n_fft, hop, causal, state)
    return jnp.fft.rfft(frames * hann_window(n_fft), axis=-1), state


def harmonic_frames(pitch: jax.Array, n_fft: int, hop: int, causal: bool = True, state=None,
                    voiced: jax.Array | None = None):
    """``(frames [B, F, n_fft], state)``: frame ``t`` of one harmonic excitation ``sum_{n=1}^{M_t} cos(n theta)``
    whose pitch glides, so that overlapping frames agree and overlap-add keeps every harmonic.

    ``pitch [B, F]`` (cycles per sample) is taken as the pitch at each frame's centre, ``c_t = t hop + n_fft / 2``.
    The phase at the centres runs on by the trapezoid rule, ``phi_{t+1} = phi_t + 2 pi hop (f_t + f_{t+1}) / 2``,
    and within frame ``t`` the pitch glides on the slope from the previous frame, ``s_t = f_t - f_{t-1}`` per hop:
    ``theta(x) = phi_t + 2 pi (f_t x + s_t x^2 / (2 hop))`` at ``x = m - n_fft / 2``. So where the pitch glides
    linearly, consecutive frames are the same signal where they overlap; a pitch held for each frame instead
    (frames that agree only where one starts) lets a harmonic ``n`` drift apart by ``n (f_{t+1} - f_t) m`` cycles
    across the overlap, which at 1% of glide per frame washes the harmonics above 2 kHz out of the sum. The
    slope is 0 where ``voiced [B, F]`` (default: all) marks the frame or the previous one unvoiced, and at most
    10% of ``f_t`` per hop (a pitch jump, such as an octave error, is not a glide). ``M_t = floor(1 / (2 (f_t +
    2 |s_t|)))``: every harmonic below Nyquist at the highest pitch the frame reaches (the Dirichlet kernel sums
    them in closed form).

    The centre phase runs in fixed point (int32 units of ``2^-24`` cycle, whose sums are exact), so chunks with
    the state carried give the whole signal's frames exactly. Causal: the state is ``(phase, pitch, voiced)`` of
    the chunk's last frame (None: the signal starts, phase 0 and no slope); otherwise every call starts so."""
    two_pi = 2.0 * np.pi
    unit = 1 << 24
    pitch = pitch.astype(jnp.float32)
    voiced = jnp.ones_like(pitch) if voiced is None else (voiced > 0).astype(jnp.float32)
    b = pitch.shape[0]
    if state is None:
        start, before_p, before_v = jnp.zeros((b,), jnp.int32), pitch[:, 0], jnp.zeros((b,), jnp.float32)
    else:
        start, before_p, before_v = state
    prev_p = jnp.concatenate([before_p[:, None], pitch[:, :-1]], axis=1)
    prev_v = jnp.concatenate([before_v[:, None], voiced[:, :-1]], axis=1)
    step = jnp.round(jnp.mod(hop * (prev_p + pitch) * 0.5, 1.0) * unit).astype(jnp.int32)
    if state is None:
        step = step.at[:, 0].set(0)                 # the first frame's centre is phase 0
    phase = (start[:, None] + jnp.cumsum(step, axis=1)) & (unit - 1)   # two's-complement wrap: exact mod 2^24
    new_state = (phase[:, -1], pitch[:, -1], voiced[:, -1]) if causal else None
    slope = jnp.where((voiced > 0) & (prev_v > 0), pitch - prev_p, 0.0)
    slope = jnp.clip(slope, -0.1 * pitch, 0.1 * pitch)
    x = jnp.arange(n_fft, dtype=jnp.float32) - n_fft / 2
    cycles = phase.astype(jnp.float32)[..., None] / unit + pitch[..., None] * x + \
        (slope / (2.0 * hop))[..., None] * x * x
    theta = two_pi * (cycles - jnp.floor(cycles))          # in [0, 2 pi): the kernel is 2 pi periodic
    count = jnp.maximum(jnp.floor(0.5 / (pitch + 2.0 * jnp.abs(slope))), 1.0)[..., None]
    half_sin = jnp.sin(0.5 * theta)
    regular = jnp.abs(half_sin) > 1e-4
    kernel = jnp.sin((count + 0.5) * theta) / (2.0 * jnp.where(regular, half_sin, 1.0)) - 0.5
    return jnp.where(regular, kernel, count), new_state


def overlap_add(frames: jax.Array, hop: int, causal: bool = True, state: jax.Array | None = None):
    """``(y [B, F * hop], state)``: frames ``[B, F, n_fft]`` (``n_fft`` a multiple of ``hop``) summed with frame
    ``t`` on samples ``t hop .. t hop + n_fft - 1``. Causal: the last ``n_fft - hop`` samples (the overlap into
    later frames) are the state, added onto the next chunk's first samples (as :class:`StreamingConvTranspose1d`);
    otherwise the overlap is trimmed from both ends."""
    b, f, n = frames.shape
    if n % hop:
        raise ValueError(f"overlap_add: the frame length ({n}) must be a multiple of hop ({hop})")
    r = n // hop
    parts = frames.reshape(b, f, r, hop)
    y = sum(jnp.pad(parts[:, :, k], ((0, 0), (k, r - 1 - k), (0, 0))) for k in range(r))
    y = y.reshape(b, (f + r - 1) * hop)
    out_len, overlap = f * hop, n - hop
    if causal:
        if state is not None:
            y = y.at[:, :overlap].add(state.astype(y.dtype))
        return y[:, :out_len], y[:, out_len:]
    left = overlap // 2
    return y[:, left:left + out_len], None


def inverse_stft(spec: jax.Array, n_fft: int, hop: int, causal: bool = True, state: jax.Array | None = None):
    """``(y [B, F * hop], state)`` from complex spectra ``[B, F, n_fft // 2 + 1]``: inverse real FFT, the Hann
    synthesis window scaled by ``2 hop / n_fft`` (its shifts by ``hop = n_fft / 4`` then sum to one, so the spectra
    of unwindowed frames give the signal back), :func:`overlap_add`."""
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * (hann_window(n_fft) * (2.0 * hop / n_fft))
    return overlap_add(frames, hop, causal, state)


class STFTEncoder(_Fourier):
    """Waveforms ``[B, T, 1]`` -> latents ``[B, T / hop_length, latent_dim]`` from the short-time spectrum: per STFT
    frame (Hann window ``n_fft``, hop ``strides[0]``) the log magnitude and the power-law compressed (``|X|^0.3``)
    real and imaginary parts, a dense layer to ``channels``, ConvNeXt blocks, then per later stride ``s`` a
    ``2 s`` strided convolution and more blocks; LayerNorm and a dense layer to ``latent_dim``. Every layer works
    at the frame rate, so the encoder costs a fraction of :class:`SEANetEncoder`."""

    latent_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, state=None):
        check_chunk(x, self.hop_length, "STFTEncoder")
        if x.shape[-1] != 1:
            raise ValueError(f"STFTEncoder: x must be mono [batch, time, 1]; got shape {x.shape}")
        run = self._chain(state)
        hop = int(self.strides[0])
        spec = run(lambda v, st: frame_spectra(v, self.n_fft, hop, self.causal, st), x[..., 0].astype(jnp.float32))
        mag = jnp.abs(spec)
        unit = spec / jnp.maximum(mag, 1e-7)
        comp = mag ** 0.3
        feats = jnp.concatenate([jnp.log(mag + 1e-5), comp * jnp.real(unit), comp * jnp.imag(unit)], axis=-1)
        h = nn.Dense(self.channels, dtype=self.dtype, param_dtype=self.param_dtype)(feats.astype(self.dtype))
        h = self._blocks(run, h)
        for s in self.strides[1:]:
            h = run(StreamingConv1d(self.channels, 2 * s, stride=s, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), h)
            h = self._blocks(run, h)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return nn.Dense(self.latent_dim, dtype=self.dtype, param_dtype=self.param_dtype)(h), (tuple(run.states) if self.causal else None)


class ISTFTDecoder(_Fourier):
    """Latents ``[B, F, latent_dim]`` -> waveforms ``[B, F * hop_length, 1]`` through the inverse STFT (Vocos's
    head, as in WavTokenizer): a ``kernel_size`` convolution to ``channels`` and ConvNeXt blocks, per later stride
    ``s`` (in reverse) a dense layer splitting each frame into ``s`` and more blocks, then LayerNorm and a dense
    layer to a log magnitude and a phase per frequency bin; inverse FFT, Hann synthesis window, overlap-add."""

    audio_channels: int = 1
    harmonic: bool = False
    min_pitch: float = MIN_PITCH
    max_pitch: float = MAX_PITCH

    @nn.compact
    def __call__(self, z: jax.Array, state=None, pitch=None, envelope=None):
        """``(samples, state)`` of latents ``z``; ``pitch``: None (the harmonic part predicts its own pitch) or
        ``(pitch, voiced)`` per latent frame ``[B, F]`` sent with the codes (:class:`PitchCoder`); ``envelope``:
        None or ``(bands, bins)`` per latent frame sent with the codes (:class:`EnvelopeCoder`): the log band
        powers ``[B, F, n]``, read with ``z``, and the log amplitude per frequency bin they imply, the base that the
        predicted log magnitudes and harmonic envelope are corrections to: ``[B, F * s, n_fft // 2 + 1]``, one per
        STFT frame (``s`` of them per latent frame), used as is; or ``[B, F, n_fft // 2 + 1]``, put on each latent
        frame's last STFT frame, whose window it was measured on, and on a line from the previous latent frame's
        on the earlier ones."""
        check_chunk(z, 1, "ISTFTDecoder")
        if pitch is not None and not self.harmonic:
            raise ValueError("ISTFTDecoder: a pitch is given but the decoder has no harmonic part (harmonic=False)")
        if self.audio_channels != 1:
            raise ValueError(f"ISTFTDecoder: mono only; got audio_channels={self.audio_channels}")
        run = self._chain(state)
        bins = self.n_fft // 2 + 1
        base = 0.0
        if envelope is not None:
            bands, per_bin = envelope
            per_latent = self.hop_length // int(self.strides[0])
            if bands.shape[:2] != z.shape[:2] or per_bin.shape[-1] != bins or \
                    per_bin.shape[1] not in (z.shape[1], z.shape[1] * per_latent):
                raise ValueError(f"ISTFTDecoder: envelope must be (bands [B, F, n], bins [B, F or F * {per_latent}, "
                                 f"{bins}]) for latents of shape {z.shape}; got {bands.shape} and {per_bin.shape}")
            z = jnp.concatenate([z, (bands.astype(z.dtype) - ENVELOPE_CENTRE) / ENVELOPE_SCALE], axis=-1)
            if per_bin.shape[1] == z.shape[1] * per_latent:       # one envelope per STFT frame: its own
                base = per_bin.astype(jnp.float32)
            else:
                base = run(lambda v, st: _line_per_frame(v, per_latent, self.causal, st), per_bin.astype(jnp.float32))
        h = run(StreamingConv1d(self.channels, self.kernel_size, causal=self.causal, dtype=self.dtype, param_dtype=self.param_dtype), z)
        h = self._blocks(run, h)
        for s in reversed(tuple(self.strides[1:])):
            h = nn.Dense(s * self.channels, dtype=self.dtype, param_dtype=self.param_dtype)(h)
            h = h.reshape(h.shape[0], h.shape[1] * s, self.channels)
            h = self._blocks(run, h)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
        out = nn.Dense(2 * bins, dtype=jnp.float32, param_dtype=self.param_dtype)(h.astype(jnp.float32))
        mag = jnp.exp(jnp.minimum(out[..., :bins] + base, 8.0))
        spec = jax.lax.complex(mag * jnp.cos(out[..., bins:]), mag * jnp.sin(out[..., bins:]))
        hop = int(self.strides[0])
        if self.harmonic:
            spec = spec + run(lambda v, st: self._harmonic_part(v, hop, st, pitch, base), h.astype(jnp.float32))
        self.sow("intermediates", "spectrum", spec)       # for losses on the predicted phase (mutable only)
        y = run(lambda v, st: inverse_stft(v, self.n_fft, hop, self.causal, st), spec)
        return y[..., None], (tuple(run.states) if self.causal else None)


    def _harmonic_part(self, h: jax.Array, hop: int, state, given=None, base=0.0):
        """``(spectra, state)`` of the voiced part (a source-filter model in the STFT domain): a pitch in
        ``[min_pitch, max_pitch]`` cycles per sample, a voicing in [0, 1] and a spectral envelope per frame;
        :func:`harmonic_frames` at that pitch, Hann-windowed, through the FFT, shaped by the envelope and scaled
        by the voicing. The envelope (a log correction to ``base``, the sent envelope's, when there is one) and
        the voicing come from a dense layer. The pitch too, unless ``given``
        (``(pitch, voiced)`` per latent frame, spread over its STFT frames by :func:`_pitch_per_frame`; the
        voicing is then the dense layer's times ``voiced``, which also stops the excitation's glide across unvoiced
        frames); a predicted pitch has its gradient stopped, as spectral losses give it no useful one, and learns
        from its own loss on the input's pitch track (it and the voicing logit are sown as intermediates)."""
        bins = self.n_fft // 2 + 1
        out = nn.Dense(bins + (1 if given is not None else 2), dtype=jnp.float32, param_dtype=self.param_dtype,
                       name="harmonic_head")(h)
        envelope = jnp.exp(jnp.minimum(out[..., :bins] + base, 8.0))
        voicing = jax.nn.sigmoid(out[..., bins])
        if given is None:
            pitch = self.min_pitch * (self.max_pitch / self.min_pitch) ** jax.nn.sigmoid(out[..., bins + 1])
            self.sow("intermediates", "pitch", pitch)
            self.sow("intermediates", "voicing_logit", out[..., bins])
            frames, state = harmonic_frames(jax.lax.stop_gradient(pitch), self.n_fft, hop, self.causal, state)
        else:
            phase_state, previous = (None, None) if state is None else state
            pitch, voiced, previous = _pitch_per_frame(given, h.shape[1] // given[0].shape[1], self.causal, previous)
            voicing = voicing * voiced
            frames, phase_state = harmonic_frames(pitch, self.n_fft, hop, self.causal, phase_state, voiced)
            state = (phase_state, previous) if self.causal else None
        comb = jnp.fft.rfft(frames * hann_window(self.n_fft), axis=-1) * (2.0 / self.n_fft)
        return comb * (envelope * voicing[..., None]), state


def _pitch_per_frame(given, per_latent: int, causal: bool, previous=None):
    """``(pitch, voiced, last)`` per STFT frame from ``(pitch, voiced)`` per latent frame ``[B, F]``: the last of
    a latent frame's ``per_latent`` STFT frames is the one its pitch was tracked on, so the earlier ones take the
    pitch on the log line from the previous latent frame's (``previous``, the streaming state; the frame's own
    at the start and where either frame is unvoiced); ``last`` is this chunk's last latent pitch and voicing.
    Without ``causal`` the windows are centred and each latent frame's pitch is held."""
    pitch, voiced = given
    if causal:
        start = (pitch[:, :1], voiced[:, :1]) if previous is None else previous
        before_p = jnp.concatenate([start[0], pitch[:, :-1]], axis=1)
        before_v = jnp.concatenate([start[1], voiced[:, :-1]], axis=1)
    else:               # centred windows: each latent frame's pitch is held over its STFT frames
        before_p, before_v = pitch, voiced
    both = (voiced > 0) & (before_v > 0)
    before_p = jnp.where(both, before_p, pitch)
    weight = (jnp.arange(per_latent, dtype=jnp.float32) + 1.0) / per_latent                    # [per_latent]
    log_pitch = jnp.log(before_p)[..., None] + (jnp.log(pitch) - jnp.log(before_p))[..., None] * weight
    b, f = pitch.shape
    last = (pitch[:, -1:], voiced[:, -1:]) if causal else None
    return (jnp.exp(log_pitch).reshape(b, f * per_latent), jnp.repeat(voiced, per_latent, axis=1), last)


def _line_per_frame(values: jax.Array, per_latent: int, causal: bool, previous=None):
    """``(per_frame [B, F * per_latent, n], last)`` of ``values [B, F, n]`` per latent frame: the last of a latent
    frame's ``per_latent`` STFT frames takes the frame's values, the earlier ones lie on the line from the previous
    latent frame's (``previous``, the streaming state: this chunk's last ``[B, 1, n]``; the first frame's own at the
    start of a signal). Without ``causal`` each latent frame's values are held over its frames."""
    b, f, n = values.shape
    if not causal:
        return jnp.repeat(values, per_latent, axis=1), None
    start = values[:, :1] if previous is None else previous
    before = jnp.concatenate([start, values[:, :-1]], axis=1)
    weight = ((jnp.arange(per_latent, dtype=jnp.float32) + 1.0) / per_latent)[None, None, :, None]
    line = before[:, :, None] + (values - before)[:, :, None] * weight
    return line.reshape(b, f * per_latent, n), values[:, -1:]


