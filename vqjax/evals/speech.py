"""The speech-codec harness: one set of metrics for every codec on the same held-out files, neural or classical.

A codec here is a function ``(wave float32 [T], sample_rate) -> decoded float32 [T']``. :func:`evaluate_codec`
runs it over the clips and scores each decoded clip against its original, after aligning the codec's delay
(:func:`align`: the envelopes' cross-correlation peak within ``max_delay_seconds``, refined on the waveform, found
once per clip) so that no codec is under-rated for its latency or for synthesising its own phase:

* ``pesq_wb`` and ``pesq_nb``: ITU-T P.862.2 wide band and P.862 narrow band (the ``pesq`` package; NaN when it
  is not installed, install ``vqjax[audio]``);
* ``stoi``: short-time objective intelligibility (``pystoi``);
* ``si_sdr``: scale-invariant SDR in dB;
* ``mel_distance``: :func:`vqjax.models.audio.losses.multiscale_mel_loss` (lower is better).

The anchors are Debian's classical codecs run as subprocesses on the same clips: :func:`codec2_roundtrip`
(``c2enc``/``c2dec``, 8 kHz, 700–3200 bit/s) and :func:`opus_roundtrip` (``opusenc``/``opusdec``, 6 kbps and up),
both resampled back to the clips' rate. :func:`anchor_codecs` lists those whose binaries are present.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Sequence

import numpy as np

from vqjax.data.audio import from_pcm16, resample, to_pcm16
from vqjax.evals.figures import pyplot, save_figure
from vqjax.models.audio.losses import multiscale_mel_loss, si_sdr

__all__ = ["align", "score_clip", "magnitude_or_phase", "evaluate_codec", "CodecResult", "codec2_roundtrip",
           "opus_roundtrip", "anchor_codecs", "CODEC2_MODES", "summary_rows", "plot_rate_distortion", "METRICS", "evaluate"]

CODEC2_MODES = (3200, 2400, 1600, 1400, 1300, 1200, 700)
METRICS = ("pesq_wb", "pesq_nb", "stoi", "si_sdr", "mel_distance")


def _envelope(x: np.ndarray, width: int) -> np.ndarray:
    """The root-mean-square of ``x`` over a sliding window of ``width`` samples, mean removed."""
    env = np.sqrt(np.maximum(np.convolve(x * x, np.ones(width) / width, mode="same"), 0.0))
    return env - env.mean()


def _xcorr_lag(ref: np.ndarray, deg: np.ndarray, lags: np.ndarray) -> int:
    """The lag among ``lags`` (positive: ``deg`` lags ``ref``) that maximises the cross-correlation."""
    size = 1 << (ref.size + deg.size - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    return int(lags[np.argmax(corr[lags % size])])


def align(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, max_delay_seconds: float = 0.1
          ) -> tuple[np.ndarray, int]:
    """``degraded`` shifted by its delay against ``reference`` and cut or zero-padded to the reference's length,
    and the delay in samples (positive: the codec lags).

    The delay is found in two stages: the cross-correlation of the signals' 4 ms RMS envelopes (which a codec that
    synthesises its own phase, parametric like Codec2 or neural, keeps although its waveform no longer correlates
    with the input), then the waveform cross-correlation within one envelope window of that lag (sample-exact for
    waveform-matching codecs such as Opus)."""
    ref = np.asarray(reference, np.float64)
    deg = np.asarray(degraded, np.float64)
    max_lag = int(max_delay_seconds * sample_rate)
    width = max(1, int(0.004 * sample_rate))
    coarse = _xcorr_lag(_envelope(ref, width), _envelope(deg, width),
                        np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]))
    lag = _xcorr_lag(ref, deg, np.arange(coarse - width, coarse + width + 1))
    shifted = deg[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), deg])
    out = np.zeros(ref.size)
    out[:min(ref.size, shifted.size)] = shifted[:ref.size]
    return out.astype(np.float32), lag


def _pesq(ref, deg, sample_rate, mode):
    try:
        from pesq import pesq  # optional dependency
    except ImportError:
        return math.nan
    rate = 16000 if mode == "wb" else 8000
    try:
        return float(pesq(rate, resample(ref, sample_rate, rate), resample(deg, sample_rate, rate), mode))
    except Exception:              # the package raises its own errors for silent or too-short signals
        return math.nan


def score_clip(reference: np.ndarray, decoded: np.ndarray, sample_rate: int, *, aligned: bool = True) -> dict:
    """The metrics of one decoded clip (``decoded`` aligned first unless ``aligned=False``); see the module
    docstring. ``delay`` is the aligned lag in samples."""
    from pystoi import stoi  # optional dependency

    ref = np.asarray(reference, np.float32)
    deg, lag = align(ref, decoded, sample_rate) if aligned else (np.asarray(decoded, np.float32)[:ref.size], 0)
    if deg.size < ref.size:
        deg = np.pad(deg, (0, ref.size - deg.size))
    return {"pesq_wb": _pesq(ref, deg, sample_rate, "wb"), "pesq_nb": _pesq(ref, deg, sample_rate, "nb"),
            "stoi": float(stoi(ref, deg, sample_rate, extended=False)),
            "si_sdr": float(si_sdr(ref[None], deg[None], xp=np)[0]),
            "mel_distance": float(multiscale_mel_loss(deg[None], ref[None], sample_rate, xp=np)), "delay": lag}


def magnitude_or_phase(reference: np.ndarray, decoded: np.ndarray, sample_rate: int, n_fft: int = 640) -> dict:
    """Which half of a decoded clip costs its quality: the scores (:func:`score_clip`) of its STFT magnitudes with
    the reference's phases (``'decoded_magnitude'``) and of the reference's magnitudes with its phases
    (``'decoded_phase'``), after aligning it (Hann window ``n_fft``, hop ``n_fft / 4``, resynthesised by the
    inverse STFT). A codec whose ``decoded_magnitude`` scores stay low has spectra that are wrong, whatever its
    phase; one whose ``decoded_phase`` scores stay low has the phase to mend."""
    from scipy.signal import istft, stft  # heavy import, loaded only where needed

    ref = np.asarray(reference, np.float64)
    deg, _ = align(reference, decoded, sample_rate)
    overlap = n_fft - n_fft // 4
    spectra = [stft(x, nperseg=n_fft, noverlap=overlap)[2] for x in (ref, np.asarray(deg, np.float64))]
    (r, d) = spectra

    def resynth(mag, phase_of):
        y = istft(np.abs(mag) * np.exp(1j * np.angle(phase_of)), nperseg=n_fft, noverlap=overlap)[1]
        return np.pad(y, (0, max(ref.size - y.size, 0)))[:ref.size].astype(np.float32)

    ref32 = ref.astype(np.float32)
    return {"decoded_magnitude": score_clip(ref32, resynth(d, r), sample_rate, aligned=False),
            "decoded_phase": score_clip(ref32, resynth(r, d), sample_rate, aligned=False)}


@dataclasses.dataclass(frozen=True)
class CodecResult:
    """One codec's scores on the clips: ``name``, ``kbps``, ``per_clip`` (one dict of metrics per clip) and
    ``mean`` (the mean of each metric over the clips where it is finite)."""

    name: str
    kbps: float
    per_clip: list[dict]
    mean: dict


def evaluate_codec(name: str, kbps: float, codec: Callable[[np.ndarray, int], np.ndarray],
                   clips: Sequence[np.ndarray], sample_rate: int) -> CodecResult:
    """Runs ``codec`` on every clip and scores it (:func:`score_clip`)."""
    per_clip = []
    for i, clip in enumerate(clips):
        scores = score_clip(clip, codec(np.asarray(clip, np.float32), sample_rate), sample_rate)
        per_clip.append({"clip": i, **scores})
    return CodecResult(name, float(kbps), per_clip, _mean_metrics(per_clip))


def _mean_metrics(per_clip: Sequence[dict]) -> dict:
    """The mean of each metric over the clips where it is finite (NaN where none is)."""
    mean = {}
    for key in METRICS:
        values = [c[key] for c in per_clip if math.isfinite(c[key])]
        mean[key] = float(np.mean(values)) if values else math.nan
    return mean


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")


def codec2_roundtrip(wave: np.ndarray, sample_rate: int, bitrate: int = 3200) -> np.ndarray:
    """``wave`` through Codec2 at ``bitrate`` bit/s (one of :data:`CODEC2_MODES`): resampled to 8 kHz, encoded
    by ``c2enc``, decoded by ``c2dec``, resampled back."""
    if bitrate not in CODEC2_MODES:
        raise ValueError(f"codec2_roundtrip: bitrate must be one of {CODEC2_MODES}; got {bitrate}")
    mode = "700C" if bitrate == 700 else str(bitrate)
    with tempfile.TemporaryDirectory() as tmp:
        raw, bits, out = (os.path.join(tmp, f) for f in ("in.raw", "out.bit", "out.raw"))
        to_pcm16(resample(wave, sample_rate, 8000)).tofile(raw)
        _run(["c2enc", mode, raw, bits])
        _run(["c2dec", mode, bits, out])
        decoded = from_pcm16(np.fromfile(out, np.int16))
    return resample(decoded, 8000, sample_rate)


def opus_roundtrip(wave: np.ndarray, sample_rate: int, kbps: float = 6.0) -> np.ndarray:
    """``wave`` through Opus at ``kbps`` (``opusenc --bitrate``, VBR as the encoder defaults; ``opusdec`` at
    the clip's rate, which the decoder resamples to from its internal 48 kHz)."""
    import soundfile  # optional dependency

    with tempfile.TemporaryDirectory() as tmp:
        wav, enc, out = (os.path.join(tmp, f) for f in ("in.wav", "out.opus", "out.wav"))
        soundfile.write(wav, to_pcm16(wave), sample_rate, subtype="PCM_16")
        _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", wav, enc])
        _run(["opusdec", "--quiet", "--rate", str(sample_rate), enc, out])
        decoded, rate = soundfile.read(out, dtype="float32")
    return resample(decoded if decoded.ndim == 1 else decoded.mean(1), rate, sample_rate)


def anchor_codecs(specs: Sequence[str]) -> tuple[dict[str, tuple[float, Callable]], list[str]]:
    """The anchors named ``'codec2:BITRATE'`` or ``'opus:KBPS'`` whose binaries are installed, as ``{name:
    (kbps, codec)}``, and the names skipped (with the missing binary)."""
    found, skipped = {}, []
    for spec in specs:
        kind, _, value = spec.partition(":")
        if kind == "codec2":
            bitrate = int(value)
            if bitrate not in CODEC2_MODES:
                raise ValueError(f"anchor {spec!r}: Codec2 bitrates are {CODEC2_MODES}")
            need, kbps = ("c2enc", "c2dec"), bitrate / 1000
            fn = lambda w, sr, b=bitrate: codec2_roundtrip(w, sr, b)
        elif kind == "opus":
            kbps = float(value)
            need = ("opusenc", "opusdec")
            fn = lambda w, sr, k=kbps: opus_roundtrip(w, sr, k)
        else:
            raise ValueError(f"anchor {spec!r} must be 'codec2:BITRATE' or 'opus:KBPS'")
        missing = [b for b in need if shutil.which(b) is None]
        if missing:
            skipped.append(f"{spec} (missing {', '.join(missing)}: apt-get install -y "
                           f"{'codec2' if kind == 'codec2' else 'opus-tools'})")
        else:
            found[f"{kind} {value}{' bps' if kind == 'codec2' else ' kbps'}"] = (kbps, fn)
    return found, skipped


def summary_rows(results: Sequence[CodecResult]) -> list[dict]:
    """One row per codec, by bitrate: name, kbps and the mean metrics."""
    return [{"codec": r.name, "kbps": r.kbps, **r.mean} for r in sorted(results, key=lambda r: (r.kbps, r.name))]


def group_rows(results: Sequence[CodecResult], groups: Sequence[str]) -> dict[str, list[dict]]:
    """:func:`summary_rows` within each group of clips (``groups[i]`` names clip ``i``'s, e.g. its language or
    speaker): where a codec wins and loses, which the mean over all clips hides."""
    out = {}
    for group in sorted(set(groups)):
        members = {i for i, g in enumerate(groups) if g == group}
        within = []
        for r in results:
            if len(r.per_clip) != len(groups):
                raise ValueError(f"group_rows: {r.name} has {len(r.per_clip)} clips; groups has {len(groups)}")
            clips = [c for c in r.per_clip if c["clip"] in members]
            within.append(CodecResult(r.name, r.kbps, clips, _mean_metrics(clips)))
        out[group] = summary_rows(within)
    return out


def plot_rate_distortion(path: str, results: Sequence[CodecResult], title: str = "") -> str:
    """PESQ-WB, STOI and mel distance against kbps, one marker per codec family (vqjax's points joined)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    families: dict[str, list[CodecResult]] = {}
    for r in results:
        families.setdefault(r.name.split(" ")[0], []).append(r)
    for ax, key, label in zip(axes, ("pesq_wb", "stoi", "mel_distance"),
                              ("PESQ wide band (higher is better)", "STOI (higher is better)",
                               "multi-scale mel distance (lower is better)")):
        for family, rs in sorted(families.items()):
            rs = sorted(rs, key=lambda r: r.kbps)
            ax.plot([r.kbps for r in rs], [r.mean[key] for r in rs], "o-", label=family)
        ax.set_xlabel("kbps")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, title)


def _anchor_specs(names: Sequence[str], kbps: float) -> list[str]:
    """Anchor names as :func:`anchor_codecs` specs: a bare ``'codec2'`` is the Codec2 mode nearest ``kbps``, a bare
    ``'opus'`` Opus at ``max(6, kbps)`` kbps (its lowest speech rate); ``'codec2:B'`` and ``'opus:K'`` as given."""
    specs = []
    for name in names:
        if name == "codec2":
            specs.append(f"codec2:{min(CODEC2_MODES, key=lambda b: abs(b / 1000 - kbps))}")
        elif name == "opus":
            specs.append(f"opus:{max(6.0, round(kbps, 1)):g}")
        else:
            specs.append(name)
    return specs


def evaluate(tok, clips: Sequence[np.ndarray], *, sample_rate: int | None = None,
             anchors: Sequence[str] = ("codec2", "opus"), num_levels: int | None = None) -> list[dict]:
    """A speech or audio codec artifact (:class:`vqjax.tokenizers.AudioTokenizer`) beside classical anchors, by one
    harness on the same clips: each clip (mono float ``[T]`` in [-1, 1] at ``sample_rate``, default the
    tokenizer's) encoded (its first ``num_levels`` levels) and decoded, then delay-aligned and scored
    (:func:`score_clip`: PESQ-WB/NB, STOI, SI-SDR, mel distance). ``anchors``: ``'codec2'`` and ``'opus'`` at the
    tokenizer's bitrate (:func:`_anchor_specs`), or explicit ``'codec2:BITRATE'``/``'opus:KBPS'``.

    Returns:
      One row per codec (:func:`summary_rows`: ``codec``, ``kbps`` and the mean metrics), sorted by bitrate; an
      anchor whose binaries are missing is left out and named in a ``skipped`` row.

    Raises:
      ValueError: a tokenizer of another modality, no clips, or an unknown anchor.
    """
    if tok.modality != "audio":
        raise ValueError(f"vqjax.evals.speech.evaluate: tok must be an audio tokenizer; got modality {tok.modality!r}")
    if not len(clips):
        raise ValueError("vqjax.evals.speech.evaluate: clips is empty")
    rate = int(sample_rate or tok.sample_rate)
    levels = num_levels or tok.num_levels
    kbps = tok.kbps if levels in (None, tok.num_levels) else tok.frame_rate * levels * math.log2(tok.vocab_size) / 1e3

    def neural(wave: np.ndarray, sr: int) -> np.ndarray:
        codes = tok.encode(wave[None], sample_rate=sr, num_levels=num_levels)
        decoded = np.asarray(tok.decode(codes))[0]
        return resample(decoded, int(tok.sample_rate), sr)[:wave.shape[0]]

    found, skipped = anchor_codecs(_anchor_specs(anchors, kbps))
    results = [evaluate_codec("vqjax", kbps, neural, clips, rate)]
    results += [evaluate_codec(name, k, fn, clips, rate) for name, (k, fn) in found.items()]
    return summary_rows(results) + [{"codec": reason, "skipped": True} for reason in skipped]
