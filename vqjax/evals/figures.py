"""PNG figures a person would rather look at than read: image grids, rows of decoded examples, waveforms with
their spectrograms and curves. matplotlib (a heavy import) loads on the first figure, on the Agg backend."""

from __future__ import annotations

import os

import numpy as np

from vqjax.models.audio.losses import stft_magnitude

__all__ = ["pyplot", "save_reconstructions", "save_image_rows", "save_figure", "save_waveforms", "save_curve"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no screen), imported on the first figure."""
    import matplotlib  # heavy import, needed only by runs that draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy import, as above

    return plt


def _grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.ones((rows * (h + 2), cols * (w + 2), c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + 2) + 1:r * (h + 2) + 1 + h, k * (w + 2) + 1:k * (w + 2) + 1 + w] = img
    return out


def save_reconstructions(path: str, originals: np.ndarray, reconstructions: np.ndarray, title: str = "") -> str:
    """A PNG with a row of originals above a row of their reconstructions (``[N, H, W, C]`` in ``[0, 1]``)."""
    return save_image_rows(path, [originals, reconstructions], ["original", "reconstruction"], title)


def save_image_rows(path: str, rows, labels, title: str = "") -> str:
    """A PNG with one labelled row of images per entry of ``rows`` (each ``[N, H, W, C]`` in ``[0, 1]``, at most
    16 shown): a clip's frames above their reconstructions by several codecs, say."""
    plt = pyplot()

    n = min(min(len(r) for r in rows), 16)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(n * 0.7, 4), 1.0 * len(rows)), squeeze=False)
    for ax, images, label in zip(axes[:, 0], rows, labels):
        img = _grid(np.clip(np.asarray(images)[:n], 0, 1), n)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def save_figure(fig, path: str, title: str = "", dpi: int = 110) -> str:
    """Titles a matplotlib figure, lays it out, writes it to ``path`` (creating its folder) and closes it."""
    plt = pyplot()

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_waveforms(path: str, waves, labels, sample_rate: int, n_fft: int = 512) -> str:
    """A PNG with, per waveform (``[T]``), its samples over time and its log-magnitude spectrogram beside them,
    one row each, labelled; the first row is meant to be the original."""
    plt = pyplot()


    fig, axes = plt.subplots(len(waves), 2, figsize=(11, 1.7 * len(waves)), squeeze=False)
    for row, (wave, label) in zip(axes, zip(waves, labels)):
        wave = np.asarray(wave, np.float32)
        t = np.arange(wave.size) / sample_rate
        row[0].plot(t, wave, lw=0.3)
        row[0].set_ylim(-1, 1)
        row[0].set_ylabel(label, fontsize=7)
        spec = 20 * np.log10(stft_magnitude(wave[None], n_fft, xp=np)[0].T + 1e-5)
        row[1].imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
                      extent=(0, t[-1] if t.size else 1, 0, sample_rate / 2000))
        row[1].set_ylabel("kHz", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_curve(path: str, values, xlabel: str, ylabel: str, title: str = "") -> str:
    """A PNG of one curve: ``values`` against their index (e.g. PSNR by frame)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(len(values)), np.asarray(values), "o-")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
