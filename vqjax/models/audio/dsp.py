"""Numpy DSP for waveforms that the codec, its tokenizer and its data share: mono mixdown, polyphase resampling,
a zero-phase high-pass, gated loudness and its normalisation, and 16-bit PCM conversion.

Loudness follows ITU-R BS.1770's gating (400 ms blocks with 75% overlap, an absolute gate at -70 dB and a relative
gate 10 dB under the mean of the blocks that pass it) without its K-weighting filter: a level in dB relative to
full scale that ignores silence, so clips of different pause lengths come out equally loud.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["hann_window", "to_mono", "resample", "highpass", "loudness_db", "normalize_loudness", "to_pcm16", "from_pcm16"]


def hann_window(n: int) -> np.ndarray:
    """The periodic Hann window of ``n`` samples (its shifts by ``n / 4`` sum to 2)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def to_mono(x: np.ndarray) -> np.ndarray:
    """``[T]`` from ``[T]`` or ``[T, C]`` (the mean of the channels)."""
    x = np.asarray(x, np.float32)
    return x if x.ndim == 1 else x.mean(axis=1)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``x`` (``[T]`` or ``[T, C]``) from ``sr_in`` to ``sr_out`` Hz, polyphase; the identity when they are equal."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"resample: sample rates must be positive; got sr_in={sr_in}, sr_out={sr_out}")
    x = np.asarray(x, np.float32)
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly  # scipy.signal is a heavy import, needed only here

    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g, axis=0).astype(np.float32)


def highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """``x`` (``[T]`` or ``[T, C]``) without what lies under ``cutoff_hz``: an ``order`` Butterworth high-pass run
    forwards and backwards (zero phase, so nothing moves in time; the gain is the filter's squared, -3 dB x 2 at
    the cutoff). At 60 Hz and order 4 it takes DC out entirely, 50 Hz hum down by 14 dB and costs a 100 Hz
    voice 0.2 dB. Signals too short for the filter's edge padding are filtered with what padding they allow."""
    if not 0.0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"highpass: cutoff_hz must lie in (0, {sample_rate / 2:g}) at {sample_rate} Hz; "
                         f"got {cutoff_hz}")
    from scipy.signal import butter, sosfiltfilt  # scipy.signal is a heavy import, needed only here

    x = np.asarray(x, np.float32)
    if x.shape[0] < 2:
        return x - x.mean(axis=0) if x.size else x
    sos = butter(order, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")
    pad = min(3 * (2 * len(sos) + 1), x.shape[0] - 1)
    return sosfiltfilt(sos, x.astype(np.float64), axis=0, padlen=pad).astype(np.float32)


def loudness_db(x: np.ndarray, sample_rate: int) -> float:
    """Gated loudness in dB relative to full scale (BS.1770 gating without the K-weighting; see the module
    docstring); ``-inf`` for a silent signal. Signals shorter than a 400 ms block count as one block."""
    x = to_mono(x).astype(np.float64)
    block = max(int(0.4 * sample_rate), 1)
    hop = max(block // 4, 1)
    if x.size <= block:
        powers = np.array([np.mean(x * x)]) if x.size else np.zeros(1)
    else:
        starts = np.arange(0, x.size - block + 1, hop)
        c = np.concatenate([[0.0], np.cumsum(x * x)])
        powers = (c[starts + block] - c[starts]) / block
    gate = powers > 10 ** (-70 / 10)
    if not gate.any():
        return -math.inf
    relative = np.mean(powers[gate]) * 10 ** (-10 / 10)
    gate &= powers > relative
    return float(10 * np.log10(np.mean(powers[gate])))


def normalize_loudness(x: np.ndarray, sample_rate: int, target_db: float = -23.0, peak: float = 0.99) -> np.ndarray:
    """``x`` scaled to ``target_db`` of :func:`loudness_db`, then down so that ``max |x| <= peak``; a silent
    signal comes back unchanged."""
    x = np.asarray(x, np.float32)
    level = loudness_db(x, sample_rate)
    if not math.isfinite(level):
        return x
    y = x * np.float32(10 ** ((target_db - level) / 20))
    top = float(np.max(np.abs(y))) if y.size else 0.0
    return y * np.float32(peak / top) if top > peak else y


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] as int16 (clipped)."""
    return np.round(np.clip(np.asarray(x, np.float64), -1.0, 1.0) * 32767.0).astype(np.int16)


def from_pcm16(x: np.ndarray) -> np.ndarray:
    """int16 samples as float32 in [-1, 1]."""
    return np.asarray(x, np.float32) / np.float32(32767.0)
