"""Multichannel time-series tokenizers (``modality='timeseries'``, from the ``sequence_tokenizer`` task): raw
signals of any length that is a multiple of the hop, normalised by the statistics the spec carries (see
:class:`TimeSeriesTokenizer`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.tokenizers.base import Tokenizer, check_codes, decode_checked, encode_checked, register_tokenizer

__all__ = ["TimeSeriesTokenizer"]


@register_tokenizer("timeseries")
class TimeSeriesTokenizer(Tokenizer):
    """A multichannel time-series tokenizer (``modality='timeseries'``, from the ``sequence_tokenizer`` task).

    ``encode(x)`` takes raw float signals ``[B, T, C]`` (``[B, T]`` for one channel) in the units of the training
    data: ``C`` must be the trained :attr:`channels`, ``T`` a positive multiple of :attr:`hop_length`; the
    per-channel normalisation recorded in the spec (``spec['normalization']``) is applied inside the model. It
    returns int32 codes ``[B, T / hop(, levels)]`` (a multi-scale model: ``[B, sum_s T / (hop s)]``);
    ``decode(codes)`` returns float32 ``[B, T, C]`` in raw units. Non-floating dtypes, a wrong channel count, a
    length that is not a whole number of frames (too short included), empty input and NaN/Inf are refused with a
    ``ValueError``; codes outside ``[0, vocab_size)`` too.
    """

    @property
    def channels(self) -> int:
        return int(self.spec["input"]["shape"][-1])

    @property
    def channel_names(self) -> list[str]:
        return list(self.spec.get("channels") or [f"ch {i}" for i in range(self.channels)])

    @property
    def normalization(self) -> dict:
        """``{'mean': [C], 'scale': [C]}``: ``encode`` reads ``(x - mean) / scale``."""
        return dict(self.spec["normalization"])

    @property
    def hop_length(self) -> int:
        """Samples per code position (times the largest temporal scale of a multi-scale model)."""
        return int(self.model.hop_length) * max(getattr(self.model.quantizer, "scales", (1,)))

    def encode(self, x) -> jax.Array:
        """int32 codes of raw signals (see the class docstring for the rules)."""
        name = "TimeSeriesTokenizer.encode"
        x = np.asarray(x)
        if x.ndim == 2 and self.channels == 1:
            x = x[..., None]
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"{name}: signals must be [B, T, {self.channels}] ({self.channels} channels: "
                             f"{', '.join(self.channel_names)}); got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: x is empty (shape {x.shape})")
        if x.shape[1] % self.hop_length:
            raise ValueError(f"{name}: the length T ({x.shape[1]}) must be a positive multiple of {self.hop_length} "
                             f"samples (one code position); pad or crop the signal")
        if not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{name}: signals must be floating; got dtype {x.dtype}")
        codes, bad, _, _ = encode_checked(self.model, self.variables, jnp.asarray(x, jnp.float32))
        if int(bad):
            raise ValueError(f"{name}: the signals hold {int(bad)} NaN/Inf value(s)")
        return codes

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, T, C]`` raw signals from codes ``[B, positions(, levels)]``."""
        codes = check_codes(codes, "TimeSeriesTokenizer.decode", ("positions",), self.codes_shape[1:],
                               self.vocab_size)
        scales = getattr(self.model.quantizer, "scales", None)
        if scales is not None:
            self.model.quantizer.frames_for(codes.shape[1])         # raises for a count of no whole frames
        out, _, _ = decode_checked(self.model, self.variables, codes, -np.inf, np.inf)
        return out

