"""Synthetic stand-ins for Debian's speech recordings (tests cannot rely on klettres-data being installed): ogg
files laid out as the packages lay them out, ``<root>/<language>/<word>.ogg``, voiced sounds (a harmonic series on
a gliding pitch under a syllable envelope) between stretches of silence."""

import os

import numpy as np


def voiced(seconds: float, sample_rate: int, seed: int, silence: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(100, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.sin(np.pi * t / t[-1]) ** 2
    wave = 0.3 * wave * envelope + 0.003 * rng.normal(size=n)
    pad = np.zeros(int(silence * sample_rate))
    return np.concatenate([pad, wave, pad]).astype(np.float32)


def make_speech_roots(root, files_per_language: int = 10) -> dict:
    """Two corpora like klettres and ktuberling: test languages ``en``, ``fr`` (klettres) and ``de``
    (ktuberling, stereo 44.1 kHz), train languages ``nl``, ``sv`` (22.05 kHz mono) and ``pl`` (stereo)."""
    import soundfile

    layout = {"klettres": {"en": (22050, 1), "fr": (22050, 1), "nl": (22050, 1), "sv": (22050, 1)},
              "ktuberling": {"de": (44100, 2), "pl": (44100, 2)}}
    roots = {}
    seed = 0
    for corpus, languages in layout.items():
        base = os.path.join(str(root), corpus)
        for language, (rate, channels) in languages.items():
            os.makedirs(os.path.join(base, language), exist_ok=True)
            for i in range(files_per_language):
                seed += 1
                wave = voiced(0.5 + 0.05 * (i % 5), rate, seed)
                data = np.stack([wave, 0.8 * wave], 1) if channels == 2 else wave
                soundfile.write(os.path.join(base, language, f"w{i:02d}.ogg"), data, rate)
        roots[corpus] = base
    return roots


def make_music(path, seconds: float = 8.5, rate: int = 44100) -> str:
    """A stereo chord with a beat at ``rate``, written as wav: a stand-in for the iscc-samples music clip."""
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)
    left = (0.4 * chord * beat).astype(np.float32)
    soundfile.write(str(path), np.stack([left, 0.7 * left], 1), rate)
    return str(path)
