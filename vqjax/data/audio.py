"""Recorded speech that ships in Debian packages, and the waveform operations the audio pipeline applies.

The recordings (``docs/data.md``): KLettres' spoken letters and syllables (``klettres-data``, about 51 minutes
in 20 languages, one speaker per language) and KTuberling's spoken object names (``ktuberling-data``, about 29
minutes in 20 languages), ogg files whose folder names the language. They are found under
:data:`SPEECH_ROOTS` (``apt-get install -y klettres-data ktuberling-data``), read with ``soundfile``.

Held out for test by language (so by speaker): :data:`TEST_LANGUAGES`. The test clips follow the codec papers'
habit of judging several seconds of speech: :func:`make_clips` joins ``per_clip`` consecutive recordings, each
with its silence trimmed, with a short pause between them.

Synthetic speech for volume, and for machines without the Debian packages: :func:`synthesize` drives eSpeak NG
(the ``espeakng-loader`` wheel bundles the library and its voices) through ctypes, any of its voices and variants
(``'en-us+f3'``, ``'fr+m2'``), 22050 Hz.

Waveforms here are float32 numpy arrays in [-1, 1]: ``[T]`` mono or ``[T, C]``.

* :func:`resample`, :func:`highpass`, :func:`loudness_db`, :func:`normalize_loudness` and the PCM conversions are
  :mod:`vqjax.models.audio.dsp`'s (re-exported here); several of the recordings carry a DC offset or mains hum,
  which the high-pass removes;
* :func:`trim_silence` cuts the leading and trailing 20 ms frames quieter than ``threshold_db`` under the loudest;
* :func:`random_crop` takes a window of a fixed length, zero-padding a shorter signal at the end.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import math
import os
from typing import Mapping, Sequence

import numpy as np

from vqjax.models.audio.dsp import (
    from_pcm16,
    highpass,
    loudness_db,
    normalize_loudness,
    resample,
    to_mono,
    to_pcm16,
)

__all__ = ["SPEECH_ROOTS", "TEST_LANGUAGES", "Recording", "find_recordings", "read_audio", "to_mono", "resample",
           "highpass", "loudness_db", "normalize_loudness", "trim_silence", "make_clips", "random_crop",
           "to_pcm16", "from_pcm16", "perturbed_rate", "equalizer_gains", "random_equalize", "prepare_example",
           "synthesize", "SYNTH_RATE", "write_spoken_words", "SPOKEN_WORDS", "SPOKEN_VOICES"]

SPEECH_ROOTS: dict[str, str] = {"klettres": "/usr/share/klettres", "ktuberling": "/usr/share/ktuberling/sounds"}
TEST_LANGUAGES = ("en", "fr", "de", "es", "it")
_PACKAGES = {"klettres": "klettres-data", "ktuberling": "ktuberling-data"}


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recorded file: its path, corpus (a key of the roots), language (the first folder under the root) and
    the word or letter it says (the file name)."""

    path: str
    corpus: str
    language: str
    word: str


def find_recordings(roots: Mapping[str, str] = SPEECH_ROOTS) -> list[Recording]:
    """Every ``*.ogg`` under each root, sorted by corpus and path.

    Raises:
      FileNotFoundError: a root is missing (naming the Debian package that installs it) or holds no ogg file.
    """
    out = []
    for corpus, root in sorted(roots.items()):
        if not os.path.isdir(root):
            package = _PACKAGES.get(corpus, corpus)
            raise FileNotFoundError(f"speech recordings: {root} is missing; install Debian's {package} "
                                    f"(apt-get install -y {package}) or pass its folder in roots={{{corpus!r}: ...}}")
        files = sorted(glob.glob(os.path.join(root, "**", "*.ogg"), recursive=True))
        if not files:
            raise FileNotFoundError(f"speech recordings: {root} holds no .ogg file")
        for path in files:
            rel = os.path.relpath(path, root).split(os.sep)
            language = rel[0] if len(rel) > 1 else ""
            out.append(Recording(path, corpus, language, os.path.splitext(rel[-1])[0]))
    return out


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """``(samples float32 [T, C], sample_rate)`` of an audio file (ogg, wav, flac: whatever libsndfile reads)."""
    import soundfile  # optional dependency

    x, sr = soundfile.read(path, dtype="float32", always_2d=True)
    return x, int(sr)


def trim_silence(x: np.ndarray, sample_rate: int, threshold_db: float = -40.0) -> np.ndarray:
    """``x`` without its leading and trailing 20 ms frames whose RMS lies more than ``-threshold_db`` dB under the
    loudest frame's (a silent signal comes back empty)."""
    mono = to_mono(x)
    frame = max(int(0.02 * sample_rate), 1)
    n = mono.size // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(mono[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    if rms.max() <= 0:
        return x[:0]
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (threshold_db / 20))
    return x[loud[0] * frame:min((loud[-1] + 1) * frame, mono.size)]


def make_clips(waves: Sequence[np.ndarray], per_clip: int, sample_rate: int, gap_seconds: float = 0.15
               ) -> list[np.ndarray]:
    """Consecutive groups of ``per_clip`` waveforms (``[T]``), each joined with ``gap_seconds`` of silence between
    them; a last incomplete group is dropped."""
    if per_clip <= 0:
        raise ValueError(f"make_clips: per_clip must be positive; got {per_clip}")
    gap = np.zeros(int(round(gap_seconds * sample_rate)), np.float32)
    clips = []
    for start in range(0, len(waves) - per_clip + 1, per_clip):
        parts = []
        for w in waves[start:start + per_clip]:
            parts += [np.asarray(w, np.float32), gap]
        clips.append(np.concatenate(parts[:-1]))
    return clips


def random_crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A window of ``length`` samples of ``x`` (``[T]`` or ``[T, C]``) at a uniform random start; a shorter
    signal is zero-padded at the end."""
    if length <= 0:
        raise ValueError(f"random_crop: length must be positive; got {length}")
    if x.shape[0] <= length:
        pad = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return np.pad(x, pad)
    start = int(rng.integers(0, x.shape[0] - length + 1))
    return x[start:start + length]


def perturbed_rate(sample_rate: int, speed: tuple[float, float], rng: np.random.Generator, step: int = 100) -> int:
    """A recording's rate as if it were played ``f`` times faster, ``f`` log-uniform in ``speed = (low, high)``:
    ``sample_rate * f`` rounded to a multiple of ``step`` Hz (so the polyphase resampler's factors stay small).
    Resampling from that rate to the model's scales the pitch and the formants by ``f`` and the duration by
    ``1 / f``: Kaldi's speed perturbation, which turns a few speakers into many (shorter or longer vocal tracts,
    higher or lower voices)."""
    low, high = (float(v) for v in speed)
    if not 0.0 < low <= high:
        raise ValueError(f"speed must be (low, high) with 0 < low <= high; got {tuple(speed)}")
    factor = math.exp(rng.uniform(math.log(low), math.log(high)))
    return max(step, int(round(sample_rate * factor / step)) * step)


def equalizer_gains(freqs: np.ndarray, tilt_db: float, bump_db: float, bump_hz: float, bump_octaves: float
                    ) -> np.ndarray:
    """Gains in dB at ``freqs`` (Hz) of a smooth equaliser: a tilt of ``tilt_db`` per octave about 1 kHz (flat
    under 100 Hz and over 8 kHz, where speech has little to tilt) plus a bump of ``bump_db`` centred at
    ``bump_hz``, a Gaussian on the octave axis with standard deviation ``bump_octaves``."""
    octaves = np.log2(np.clip(np.asarray(freqs, np.float64), 100.0, 8000.0) / 1000.0)
    distance = np.log2(np.maximum(np.asarray(freqs, np.float64), 1.0) / bump_hz)
    return tilt_db * octaves + bump_db * np.exp(-0.5 * (distance / bump_octaves) ** 2)


def random_equalize(x: np.ndarray, sample_rate: int, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x [T]`` through a random smooth equaliser (:func:`equalizer_gains`), a stand-in for other voices,
    microphones and rooms: a tilt uniform in ``+-max_db / 2`` dB per octave and a bump uniform in ``+-max_db``
    dB at a log-uniform 200 Hz - 4 kHz, 0.3 to 1 octave wide. Zero phase, applied by FFT with the signal padded
    by a quarter second each side so that the filter's short response does not wrap around."""
    if max_db < 0:
        raise ValueError(f"random_equalize: max_db must be >= 0; got {max_db}")
    x = np.asarray(x, np.float32)
    if max_db == 0 or x.size == 0:
        return x
    tilt = rng.uniform(-0.5, 0.5) * max_db
    bump = rng.uniform(-1.0, 1.0) * max_db
    centre = float(np.exp(rng.uniform(np.log(200.0), np.log(4000.0))))
    width = rng.uniform(0.3, 1.0)
    pad = sample_rate // 4
    n = x.size + 2 * pad
    spectrum = np.fft.rfft(np.pad(x.astype(np.float64), pad), n)
    gains = 10.0 ** (equalizer_gains(np.fft.rfftfreq(n, 1.0 / sample_rate), tilt, bump, centre, width) / 20.0)
    return np.fft.irfft(spectrum * gains, n)[pad:pad + x.size].astype(np.float32)


def prepare_example(example: Mapping, *, sample_rate: int, target_db: float | None = -23.0,
                    crop_length: int | None = None, rng: np.random.Generator | None = None,
                    speed: tuple[float, float] | None = None, highpass_hz: float | None = None,
                    equalize_db: float = 0.0) -> dict:
    """One dataset example (``audio`` int16 or float ``[T]``, ``sample_rate``) as the model reads it:
    ``{'audio': float32 [L, 1], 'length': int32}``.

    Speed-perturbed by a random factor in ``speed`` (:func:`perturbed_rate`; needs ``rng``), resampled to
    ``sample_rate``, high-passed at ``highpass_hz`` when given (:func:`highpass`), through a random equaliser
    of up to ``equalize_db`` (:func:`random_equalize`; needs ``rng``; 0: none), loudness-normalised to
    ``target_db`` (None keeps the level), then cut to ``crop_length`` samples when given: a random window with
    ``rng``, else the first ``crop_length`` (zero-padded when shorter). ``length`` counts the samples that are
    signal, not padding.
    """
    wave = np.asarray(example["audio"])
    wave = from_pcm16(wave) if wave.dtype == np.int16 else wave.astype(np.float32)
    rate = int(example["sample_rate"])
    if speed is not None and tuple(float(v) for v in speed) != (1.0, 1.0):
        if rng is None:
            raise ValueError("prepare_example: speed perturbation needs rng")
        rate = perturbed_rate(rate, speed, rng)
    wave = resample(to_mono(wave), rate, sample_rate)
    if highpass_hz is not None:
        wave = highpass(wave, sample_rate, highpass_hz)
    if equalize_db:
        if rng is None:
            raise ValueError("prepare_example: a random equaliser (equalize_db) needs rng")
        wave = random_equalize(wave, sample_rate, equalize_db, rng)
    if target_db is not None:
        wave = normalize_loudness(wave, sample_rate, target_db)
    length = wave.shape[0]
    if crop_length is not None:
        if rng is not None:
            wave = random_crop(wave, crop_length, rng)
        else:
            wave = np.pad(wave[:crop_length], (0, max(crop_length - length, 0)))
        length = min(length, crop_length)
    return {"audio": wave[:, None].astype(np.float32), "length": np.int32(length)}


SYNTH_RATE = 22050
_ESPEAK: dict = {}


def _espeak():
    """The eSpeak NG library, initialised once for synchronous synthesis into a Python callback."""
    if not _ESPEAK:

        try:
            import espeakng_loader  # optional dependency
        except ImportError as err:
            raise ImportError("synthesize needs the espeakng-loader wheel: pip install 'vqjax[audio]'") from err
        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)     # 2: synchronous
        if rate != SYNTH_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")
        chunks: list = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, count, _events):
            if count > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            return 0

        callback = callback_type(collect)
        lib.espeak_SetSynthCallback(callback)
        _ESPEAK.update(lib=lib, chunks=chunks, callback=callback)
    return _ESPEAK


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 150, pitch: int | None = None
               ) -> np.ndarray:
    """``text`` spoken by eSpeak NG's ``voice`` (a language, optionally ``+variant``) at ``words_per_minute``
    (80-450) and ``pitch`` (0-100, None: the voice's), as float32 ``[T]`` at :data:`SYNTH_RATE` Hz.

    eSpeak NG's output is not bit-reproducible: the same call can differ by a few samples in length (its random
    draws are not all seedable from outside). Store what you synthesise if you need it twice.

    Raises:
      ValueError: empty text, an unknown voice, or a rate or pitch out of range.
    """
    if not text or not text.strip():
        raise ValueError("synthesize: text is empty")
    if not 80 <= words_per_minute <= 450:
        raise ValueError(f"synthesize: words_per_minute must lie in [80, 450]; got {words_per_minute}")
    if pitch is not None and not 0 <= pitch <= 100:
        raise ValueError(f"synthesize: pitch must lie in [0, 100]; got {pitch}")
    state = _espeak()
    lib = state["lib"]
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"synthesize: eSpeak NG has no voice {voice!r} (e.g. 'en-us', 'fr', 'de+f2')")
    lib.espeak_SetParameter(1, int(words_per_minute), 0)             # 1: espeakRATE
    if pitch is not None:
        lib.espeak_SetParameter(3, int(pitch), 0)                    # 3: espeakPITCH
    state["chunks"].clear()
    data = text.encode("utf-8")
    lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)   # position 0 in characters, auto encoding
    lib.espeak_Synchronize()
    if pitch is not None:
        lib.espeak_SetParameter(3, 50, 0)
    out = np.concatenate(state["chunks"]) if state["chunks"] else np.zeros(0, np.int16)
    return from_pcm16(out)


SPOKEN_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPOKEN_VOICES = ("en-us", "en", "en+f2", "en-us+m3", "en+f4", "en-us+m7", "en+klatt", "en-us+f3")


def write_spoken_words(folder: str, words: Sequence[str] = SPOKEN_WORDS, voices: Sequence[str] = SPOKEN_VOICES,
                       rates: Sequence[int] = (110, 140, 170, 200, 230),
                       pitches: Sequence[int] = (20, 35, 50, 65, 80)) -> int:
    """A folder of spoken words with transcripts, as a user's own data would be: each word in each voice, rate and
    pitch (:func:`synthesize`) as ``folder/<voice>/<word>_<rate>_<pitch>.wav`` (16-bit, 22050 Hz, silence
    trimmed) with the word in a ``.txt`` sidecar beside it. Files already there are kept (a rerun adds only what
    is missing). Returns the number of clips in the folder.
    """
    import soundfile  # optional dependency (the audio extra)

    count = 0
    for voice in voices:
        sub = os.path.join(folder, voice.replace("+", "_"))
        os.makedirs(sub, exist_ok=True)
        for word in words:
            for rate in rates:
                for pitch in pitches:
                    stem = os.path.join(sub, f"{word}_{rate}_{pitch}")
                    if not os.path.exists(stem + ".wav"):
                        wave = trim_silence(synthesize(word, voice, words_per_minute=rate, pitch=pitch), SYNTH_RATE)
                        soundfile.write(stem + ".wav.tmp", wave, SYNTH_RATE, subtype="PCM_16", format="WAV")
                        os.replace(stem + ".wav.tmp", stem + ".wav")
                    with open(stem + ".txt", "w") as fh:
                        fh.write(word + "\n")
                    count += 1
    return count
