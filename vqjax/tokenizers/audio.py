"""Speech and audio codecs (``modality='audio'``, from the ``audio_codec`` task): signals of any length at a stated
sample rate, codes ``[B, frames, levels]``, chunked streaming for causal models (see :class:`AudioTokenizer`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.models.audio.dsp import resample
from vqjax.tokenizers.base import Tokenizer, register_tokenizer

__all__ = ["AudioTokenizer"]


@register_tokenizer("audio")
class AudioTokenizer(Tokenizer):
    """A speech or audio codec's tokenizer (``modality='audio'``, from the ``audio_codec`` task).

    ``encode(x, sample_rate=...)`` takes a batch of mono signals ``[B, T]`` or ``[B, T, 1]`` of any length ``T``
    and returns int32 codes ``[B, frames, levels]``, ``frames = ceil((T + delay) / hop_length)`` (the signal
    zero-padded to whole frames, and past the decoder's :attr:`delay`); ``decode(codes)`` returns float32
    ``[B, frames * hop_length - delay]`` in [-1, 1], sample ``n`` the estimate of input sample ``n``. The model
    learnt on signals high-passed at ``spec['highpass_hz']`` and loudness-normalised to ``spec['loudness_db']``
    (:func:`vqjax.data.audio.highpass`, :func:`vqjax.data.audio.normalize_loudness`); ``encode`` takes the
    samples as given, so prepare other recordings the same way for the quality it was judged at. The rules:

    * ``sample_rate`` is required; a rate other than the model's is resampled (polyphase, exact for rational
      ratios) before encoding, so the codes always describe the model's rate;
    * float samples must lie in [-1, 1]; int16 PCM is divided by 32767; other dtypes, stereo ``[B, T, 2]``, empty
      signals, signals shorter than one frame and NaN/Inf are refused with a ``ValueError``;
    * ``lengths [B]`` (samples) encodes a padded batch of signals of different lengths: example ``b``'s codes are
      exactly those of encoding ``x[b, :lengths[b]]`` alone, and its frames past ``ceil(lengths[b] / hop)`` are
      ``-1``. A causal model encodes the batch in one call (its frames never see what follows); a non-causal one
      encodes each group of equal frame count at that length;
    * ``num_levels`` keeps a residual codec's first levels (a lower bitrate); ``decode`` accepts fewer levels than
      the model has, and ``-1`` frames (padding, as ``encode`` returns them) decode to silence.

    Streaming (causal models): ``encode_chunk(x, state, sample_rate=...)`` and ``decode_chunk(codes, state)`` carry
    the encoder's and decoder's state from chunk to chunk (``state=None`` starts a signal); chunks of whole frames
    give exactly the codes and samples of the whole signal. ``decode_chunk`` returns the decoder's samples as they
    come, lagging the input by :attr:`delay` (``decode`` drops those first ``delay`` samples).
    """

    @property
    def codes_shape(self) -> tuple:
        """``(None, levels)``: any number of frames."""
        return tuple(None if v is None else int(v) for v in self.spec["codes_shape"])

    @property
    def input_shape(self) -> tuple:
        return tuple(None if v is None else int(v) for v in self.spec["input"]["shape"])

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        return int(self.model.hop_length)

    def _example_input(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((1, 4 * self.hop_length, 1), jnp.float32)

    @property
    def kbps(self) -> float:
        """Bitrate of the full codes: ``frame_rate * levels * log2(vocab_size) / 1000``."""
        return float(self.spec["kbps"])

    @property
    def num_levels(self) -> int | None:
        """A residual codec's levels (None for a single quantizer)."""
        return self.model.num_levels

    @property
    def delay(self) -> int:
        """Samples by which the decoder's raw output lags the input (0 but for a causal inverse-STFT decoder)."""
        return int(self.model.delay)

    def _signals(self, x, sample_rate) -> np.ndarray:
        name = "AudioTokenizer.encode"
        if sample_rate is None:
            raise ValueError(f"{name}: sample_rate is required (this model reads {self.sample_rate} Hz; other rates "
                             f"are resampled)")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"{name}: sample_rate must be a positive int; got {sample_rate!r}")
        x = np.asarray(x)
        if x.ndim == 3:
            if x.shape[-1] != 1:
                raise ValueError(f"{name}: this model is mono; got {x.shape[-1]} channels in shape {x.shape} "
                                 f"(mix down first, e.g. x.mean(-1))")
            x = x[..., 0]
        if x.ndim != 2:
            raise ValueError(f"{name}: x must be a batch of mono signals [B, T] or [B, T, 1]; got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: x is empty (shape {x.shape})")
        if x.dtype == np.int16:
            x = x.astype(np.float32) / np.float32(32767.0)
        elif not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{name}: samples must be floating in [-1, 1] or int16 PCM; got dtype {x.dtype}")
        x = x.astype(np.float32)
        bad = int(np.sum(~np.isfinite(x)))
        if bad:
            raise ValueError(f"{name}: the signal holds {bad} NaN/Inf sample(s)")
        top = float(np.max(np.abs(x)))
        if top > 1.0:
            raise ValueError(f"{name}: samples must lie in [-1, 1]; got a peak of {top:g}")
        if int(sample_rate) != self.sample_rate:
            x = resample(x.T, int(sample_rate), int(self.sample_rate)).T
        return x

    def encode(self, x, *, sample_rate: int | None = None, num_levels: int | None = None, lengths=None
               ) -> jax.Array:
        """int32 codes ``[B, frames, levels]`` (see the class docstring for the rules)."""
        name = "AudioTokenizer.encode"
        rate_in = sample_rate
        x = self._signals(x, sample_rate)
        b, t = x.shape
        hop = self.hop_length
        if lengths is None:
            lengths = np.full(b, t, np.int64)
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (b,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"{name}: lengths must be {b} ints (one per signal); got {lengths!r}")
            if int(rate_in) != self.sample_rate:
                lengths = np.ceil(lengths * self.sample_rate / int(rate_in)).astype(np.int64)
            if lengths.min() < 1 or lengths.max() > t:
                raise ValueError(f"{name}: lengths must lie in [1, {t}] (the padded length); got {lengths.tolist()}")
        if lengths.min() < hop:
            raise ValueError(f"{name}: signals must hold at least one frame ({hop} samples = "
                             f"{1000 * hop / self.sample_rate:g} ms at {self.sample_rate} Hz); got "
                             f"{int(lengths.min())} samples")
        levels = self.num_levels
        if num_levels is not None and (levels is None or not 1 <= num_levels <= levels):
            raise ValueError(f"{name}: num_levels must lie in [1, {levels}] for this codec; got {num_levels}"
                             if levels is not None else f"{name}: num_levels needs a residual codec")
        frames = -(-(lengths + self.delay) // hop)
        total = int(-(-(t + self.delay) // hop))
        causal = bool(getattr(self.model.encoder, "causal", True))
        groups = [np.arange(b)] if causal else [np.flatnonzero(frames == f) for f in np.unique(frames)]
        out = None
        for idx in groups:
            f = total if causal else int(frames[idx[0]])
            chunk = np.zeros((idx.size, f * hop, 1), np.float32)
            n = min(t, f * hop)
            chunk[:, :n, 0] = x[idx, :n]
            if not causal:                    # each signal alone: zeros after its own length, as encoded alone
                chunk[np.arange(f * hop)[None, :] >= lengths[idx][:, None]] = 0.0
            codes = np.asarray(_audio_encode(self.model, self.variables, jnp.asarray(chunk), num_levels))
            if out is None:
                out = np.full((b, total) + codes.shape[2:], -1, np.int32)
            out[idx, :f] = codes
        keep = np.arange(total)[None, :] < frames[:, None]
        out[~keep] = -1
        return jnp.asarray(out)

    def _streaming(self, name: str) -> None:
        if not bool(getattr(self.model.encoder, "causal", False)):
            raise ValueError(f"AudioTokenizer.{name}: streaming needs a causal model; this one was trained with "
                             f"causal=False")

    def encode_chunk(self, x, state=None, *, sample_rate: int | None = None, num_levels: int | None = None):
        """``(codes [B, frames, levels], state)`` of the next chunk ``x [B, T]`` of a signal, ``T`` a multiple of
        the hop length, at the model's ``sample_rate`` (chunks are not resampled: a resampler has state too)."""
        self._streaming("encode_chunk")
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"AudioTokenizer.encode_chunk: chunks must be at the model's rate {self.sample_rate} Hz; "
                             f"got {sample_rate} (resample the whole signal first)")
        x = self._signals(x, self.sample_rate)
        if x.shape[1] % self.hop_length:
            raise ValueError(f"AudioTokenizer.encode_chunk: a chunk must hold whole frames (a multiple of "
                             f"{self.hop_length} samples); got {x.shape[1]}")
        codes, state = _audio_encode_chunk(self.model, self.variables, jnp.asarray(x[..., None]), state, num_levels)
        return codes, state

    def decode_chunk(self, codes, state=None):
        """``(samples [B, frames * hop_length], state)`` of the next chunk of codes (``state=None`` starts a
        signal); codes as for :meth:`decode`, without padding frames."""
        self._streaming("decode_chunk")
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer) or codes.shape[1] == 0:
            raise ValueError(f"AudioTokenizer.decode_chunk: codes must be integer [B, frames, levels]; got "
                             f"{codes.dtype} {codes.shape}")
        if codes.min() < 0 or codes.max() >= self.vocab_size:
            raise ValueError(f"AudioTokenizer.decode_chunk: codes must lie in [0, {self.vocab_size}); got min "
                             f"{int(codes.min())}, max {int(codes.max())}")
        wave, state = _audio_decode_chunk(self.model, self.variables, jnp.asarray(codes, jnp.int32), state)
        return wave[..., 0], state

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, frames * hop_length]`` in [-1, 1] from codes ``[B, frames, levels']`` (``levels' <=``
        the model's); ``-1`` frames are silence. Raises ``ValueError`` for a code outside ``[0, vocab_size)``
        that is not a whole ``-1`` frame, or a wrong shape."""
        name = "AudioTokenizer.decode"
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer) or codes.shape[1] == 0:
            raise ValueError(f"{name}: codes must be integer [B, frames, levels]; got {codes.dtype} {codes.shape}")
        levels = self.codes_shape[-1]
        if not 1 <= codes.shape[2] <= levels:
            raise ValueError(f"{name}: codes must have between 1 and {levels} levels; got {codes.shape[2]}")
        pad = np.all(codes == -1, axis=2)
        real = codes[~pad]
        if real.size and (real.min() < 0 or real.max() >= self.vocab_size):
            raise ValueError(f"{name}: codes must lie in [0, {self.vocab_size}) (or be whole -1 padding frames); "
                             f"got min {int(real.min())}, max {int(real.max())}")
        safe = np.where(pad[..., None], 0, codes).astype(np.int32)
        wave = np.asarray(_audio_decode(self.model, self.variables, jnp.asarray(safe)))[..., 0]
        wave = wave * np.repeat(~pad, self.hop_length, axis=1)
        return jnp.asarray(wave[:, self.delay:], jnp.float32)


@jax.jit(static_argnums=(0, 3))
def _audio_encode(model, variables, x, num_levels):
    return model.apply(variables, x, num_levels, method=model.encode).astype(jnp.int32)


@jax.jit(static_argnums=(0, 4))
def _audio_encode_chunk(model, variables, x, state, num_levels):
    codes, state = model.apply(variables, x, state, num_levels, method=model.encode_stream)
    return codes.astype(jnp.int32), state


@jax.jit(static_argnums=0)
def _audio_decode_chunk(model, variables, codes, state):
    wave, state = model.apply(variables, codes, state, method=model.decode_stream)
    return jnp.clip(wave, -1.0, 1.0).astype(jnp.float32), state


@jax.jit(static_argnums=0)
def _audio_decode(model, variables, codes):
    return jnp.clip(model.apply(variables, codes, method=model.decode), -1.0, 1.0).astype(jnp.float32)

