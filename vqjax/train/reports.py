"""What a training run leaves for a person: TensorBoard event files, ``metrics.jsonl`` and PNG figures."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

__all__ = ["MetricWriter", "read_metrics", "save_reconstructions", "save_image_rows", "save_figure", "save_waveforms",
           "save_curve", "save_curves", "result_table"]


class MetricWriter:
    """Writes scalars to TensorBoard event files (tensorboardX, no TensorFlow) and to ``metrics.jsonl``.

    Each jsonl line is ``{"step": s, "split": "train" | "eval", name: value, ...}``. On resume from step ``s``,
    lines written after ``s`` by the killed run are dropped first, so the file reads like one uninterrupted run.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
            with open(self.path, "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in kept)
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        row = {"step": int(step), "split": split, **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        for name, value in scalars.items():
            self.tb.add_scalar(f"{split}/{name}", float(value), int(step))
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The rows of ``workdir/metrics.jsonl`` (empty when absent)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vqjax.models.audio_losses import stft_magnitude

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def save_curves(workdir: str) -> dict[str, str]:
    """``loss_curves.png`` (train losses), ``codebook_usage.png`` (eval usage and perplexity over steps) for
    tokenizers, ``ranking_metrics.png`` (MRR, Hits@1/10 over steps) for link prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    paths = {}
    if train:
        fig, ax = plt.subplots(figsize=(5, 3))
        for name in ("loss", "recon_loss", "mel_loss", "quantizer_loss", "gen_loss", "disc_loss"):
            pts = [(r["step"], r[name]) for r in train if name in r]
            if pts:
                ax.plot(*zip(*pts), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        paths["loss_curves"] = os.path.join(workdir, "loss_curves.png")
        fig.savefig(paths["loss_curves"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    usage = [r for r in evals if "usage" in r]
    if usage:
        fig, ax = plt.subplots(figsize=(5, 3))
        steps = [r["step"] for r in usage]
        ax.plot(steps, [100 * r["usage"] for r in usage], "o-", label="usage %")
        ax.set_ylim(0, 105)
        ax.set_xlabel("step")
        ax.set_ylabel("codebook usage (%)")
        ax2 = ax.twinx()
        ax2.plot(steps, [r["perplexity"] for r in usage], "s--", color="tab:orange", label="perplexity")
        ax2.set_ylabel("perplexity")
        fig.legend(fontsize=7, loc="lower right")
        paths["codebook_usage"] = os.path.join(workdir, "codebook_usage.png")
        fig.savefig(paths["codebook_usage"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    ranked = [r for r in evals if "mrr" in r]
    if ranked:
        fig, ax = plt.subplots(figsize=(5, 3))
        steps = [r["step"] for r in ranked]
        for name in ("mrr", "hits@1", "hits@10"):
            ax.plot(steps, [r[name] for r in ranked], "o-", label=f"{name} (valid)")
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        paths["ranking_metrics"] = os.path.join(workdir, "ranking_metrics.png")
        fig.savefig(paths["ranking_metrics"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def result_table(header: str, rows, figures, workdir: str, extra=(), result=None) -> str:
    """A markdown table of ``rows`` (name, value), then the figure paths, ``extra`` lines and ``result`` as JSON."""
    lines = ["", f"| {header} | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
    lines += [f"figure: {os.path.join(workdir, name)}" for name in figures]
    return "\n".join(lines + list(extra) + ["", json.dumps(result)])
