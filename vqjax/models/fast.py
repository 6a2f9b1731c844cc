"""FAST: frequency-space action sequence tokenization (Pertsch et al. 2025), a non-learned tokenizer for chunks of
multichannel signals ``[T, C]``.

Encoding a chunk:

1. per-channel quantile normalisation: the ``quantile`` and ``1 - quantile`` quantiles of each channel on the
   fitting data map to -1 and 1 (values beyond them are kept, not clipped);
2. the orthonormal DCT-II of each channel over time;
3. scale and round: ``round(scale * coefficients)``, integers, most of them 0 at high frequencies;
4. flatten frequency-major (the lowest frequency of every channel first) and write each integer as one character;
5. byte-pair encoding of that string (the ``tokenizers`` library's BPE, trained by :meth:`FAST.fit` on the fitting
   chunks), so frequent runs (long stretches of zeros) become single tokens.

Decoding inverts each step; it is exact up to the rounding of step 3 (``decode(encode(x))`` equals the chunk whose
DCT is the rounded one). A token sequence that does not spell ``T * C`` coefficients (corrupted or truncated
tokens, or a generated sequence of the wrong length) cannot be decoded: :meth:`FAST.decode` reports it in its
``ok`` mask and returns NaN for that chunk rather than padding or cutting it, and :meth:`FAST.decode_one` raises.
Integers outside the alphabet fitted on the data (with a ``margin``) are refused at encoding, never clamped.

    fast = FAST.fit(train_chunks, scale=10.0, vocab_size=1024)       # train_chunks [N, T, C]
    tokens = fast.encode(test_chunks)                                # list of N lists of ints
    chunks, ok = fast.decode(tokens)                                 # [N, T, C], bool [N]
    fast.save("fast_dir"); FAST.load("fast_dir")
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np
import scipy.fft
from tokenizers import Tokenizer, models, trainers

__all__ = ["FAST", "FAST_FILE", "BPE_FILE"]

FAST_FILE = "fast.json"
BPE_FILE = "tokenizer.json"
_BASE = 0x4E00          # integers are written as characters from here on (a block of 20k letters, no whitespace)


def _check_chunks(x, where: str, channels: int | None = None, length: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{where}: chunks must be a non-empty [N, T, C] array; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{where}: chunks must be floating; got dtype {x.dtype}")
    if channels is not None and (x.shape[2] != channels or x.shape[1] != length):
        raise ValueError(f"{where}: chunks must be [N, {length}, {channels}] (what FAST was fitted on); got "
                         f"{x.shape}")
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{where}: chunks hold {bad} NaN/Inf value(s)")
    return x.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class FAST:
    """A fitted FAST tokenizer (see the module docstring).

    Attributes:
      low, high: float64 ``[C]``, the per-channel values mapped to -1 and 1.
      scale: the DCT coefficients' scale before rounding (higher: finer, more tokens).
      length, channels: the chunk shape ``[length, channels]``.
      min_int, max_int: the integer alphabet (each integer one character).
      bpe: the trained ``tokenizers.Tokenizer`` (BPE, no normaliser or pre-tokenizer).
    """

    low: np.ndarray
    high: np.ndarray
    scale: float
    length: int
    channels: int
    min_int: int
    max_int: int
    bpe: object

    # -- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, chunks, *, scale: float = 10.0, vocab_size: int = 1024, quantile: float = 0.01,
            margin: float = 1.0) -> "FAST":
        """Fits the normalisation and the BPE on ``chunks [N, T, C]``.

        Args:
          scale: coefficients are multiplied by it before rounding.
          vocab_size: the BPE vocabulary (at least the integer alphabet's size).
          quantile: the normalising quantiles are ``quantile`` and ``1 - quantile``.
          margin: the alphabet spans the fitting data's integers widened by ``margin`` times their range.
        """
        x = _check_chunks(chunks, "FAST.fit")
        if not scale > 0:
            raise ValueError(f"FAST.fit: scale must be > 0; got {scale}")
        if not 0 <= quantile < 0.5:
            raise ValueError(f"FAST.fit: quantile must lie in [0, 0.5); got {quantile}")
        flat = x.reshape(-1, x.shape[2])
        low, high = np.quantile(flat, quantile, axis=0), np.quantile(flat, 1 - quantile, axis=0)
        high = np.where(high - low > 1e-8, high, low + 1.0)          # a constant channel: unit range
        ints = _integers(x, low, high, scale)
        lo, hi = int(ints.min()), int(ints.max())
        pad = int(np.ceil(margin * max(hi - lo, 1)))
        lo, hi = lo - pad, hi + pad
        alphabet = hi - lo + 1
        if vocab_size < alphabet:
            raise ValueError(f"FAST.fit: vocab_size ({vocab_size}) must be at least the integer alphabet ({alphabet} "
                             f"values from {lo} to {hi}); raise it or lower scale")

        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), show_progress=False,
                                      initial_alphabet=[chr(_BASE + i) for i in range(alphabet)],
                                      max_token_length=None)
        bpe.train_from_iterator([_to_text(row, lo) for row in ints], trainer=trainer)
        return cls(low, high, float(scale), x.shape[1], x.shape[2], lo, hi, bpe)

    # -- encoding and decoding ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.bpe.get_vocab_size())

    def integers(self, chunks) -> np.ndarray:
        """The rounded, scaled DCT coefficients ``[N, T * C]`` (frequency-major) of ``chunks [N, T, C]``."""
        x = _check_chunks(chunks, "FAST.encode", self.channels, self.length)
        return _integers(x, self.low, self.high, self.scale)

    def encode(self, chunks) -> list[list[int]]:
        """Token ids of each chunk (variable length).

        Raises:
          ValueError: a wrong shape, NaN/Inf, or a coefficient outside the fitted alphabet.
        """
        ints = self.integers(chunks)
        lo, hi = int(ints.min()), int(ints.max())
        if lo < self.min_int or hi > self.max_int:
            raise ValueError(f"FAST.encode: scaled DCT coefficients must lie in [{self.min_int}, {self.max_int}] "
                             f"(the alphabet fitted on the training chunks); got [{lo}, {hi}] (input far outside "
                             f"the fitted range; refit with a larger margin)")
        return [enc.ids for enc in self.bpe.encode_batch([_to_text(row, self.min_int) for row in ints])]

    def decode_integers(self, tokens: Sequence[int]) -> np.ndarray | None:
        """The coefficient integers ``[T * C]`` the tokens spell, or None when they are not a valid chunk (an
        unknown id, or not exactly ``T * C`` coefficients)."""
        pieces = []
        for t in tokens:
            piece = self.bpe.id_to_token(int(t)) if 0 <= int(t) < self.vocab_size else None
            if piece is None:
                return None
            pieces.append(piece)
        text = "".join(pieces)
        if len(text) != self.length * self.channels:
            return None
        return np.array([ord(ch) - _BASE + self.min_int for ch in text], np.int64)

    def decode_one(self, tokens: Sequence[int]) -> np.ndarray:
        """The chunk ``[T, C]`` of one token sequence; ``ValueError`` when it does not decode to that shape."""
        ints = self.decode_integers(tokens)
        if ints is None:
            n = len(tokens)
            raise ValueError(f"FAST.decode: {n} token(s) do not spell one chunk of {self.length} x {self.channels} "
                             f"coefficients (an unknown id or a wrong count)")
        return self._chunk(ints)

    def decode(self, tokens: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(chunks [N, T, C] float32, ok [N] bool)``: undecodable sequences are NaN chunks with ``ok`` False."""
        out = np.full((len(tokens), self.length, self.channels), np.nan, np.float32)
        ok = np.zeros(len(tokens), bool)
        for i, seq in enumerate(tokens):
            ints = self.decode_integers(seq)
            if ints is not None:
                out[i], ok[i] = self._chunk(ints), True
        return out, ok

    def _chunk(self, ints: np.ndarray) -> np.ndarray:
        coeffs = ints.reshape(self.length, self.channels).astype(np.float64) / self.scale
        normed = scipy.fft.idct(coeffs, type=2, norm="ortho", axis=0)
        return ((normed + 1.0) / 2.0 * (self.high - self.low) + self.low).astype(np.float32)

    def reconstruct(self, chunks) -> np.ndarray:
        """``decode(encode(chunks))`` without the BPE (the same values: BPE is lossless)."""
        return np.stack([self._chunk(row) for row in self.integers(chunks)])

    # -- saving -------------------------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Writes ``path/fast.json`` (normalisation, scale, shape, alphabet) and ``path/tokenizer.json`` (the BPE)."""
        os.makedirs(path, exist_ok=True)
        meta = {"low": self.low.tolist(), "high": self.high.tolist(), "scale": self.scale, "length": self.length,
                "channels": self.channels, "min_int": self.min_int, "max_int": self.max_int}
        with open(os.path.join(path, FAST_FILE), "w") as fh:
            json.dump(meta, fh, indent=1)
        self.bpe.save(os.path.join(path, BPE_FILE))
        return path

    @classmethod
    def load(cls, path: str) -> "FAST":
        file = os.path.join(path, FAST_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"FAST.load: {path!r} holds no {FAST_FILE}")
        with open(file) as fh:
            meta = json.load(fh)
        return cls(np.asarray(meta["low"]), np.asarray(meta["high"]), float(meta["scale"]), int(meta["length"]),
                   int(meta["channels"]), int(meta["min_int"]), int(meta["max_int"]),
                   Tokenizer.from_file(os.path.join(path, BPE_FILE)))


def _integers(x: np.ndarray, low: np.ndarray, high: np.ndarray, scale: float) -> np.ndarray:
    normed = 2.0 * (x - low) / (high - low) - 1.0
    coeffs = scipy.fft.dct(normed, type=2, norm="ortho", axis=1)
    return np.round(scale * coeffs).astype(np.int64).reshape(x.shape[0], -1)


def _to_text(row: np.ndarray, lo: int) -> str:
    return "".join(chr(_BASE + int(v) - lo) for v in row)
