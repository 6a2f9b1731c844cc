"""What a training run leaves for a person: TensorBoard event files, ``metrics.jsonl`` and PNG figures."""

from __future__ import annotations

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter

from vqjax.evals.figures import pyplot

__all__ = ["MetricWriter", "read_metrics", "save_curves", "result_table"]


class MetricWriter:
    """Writes scalars to TensorBoard event files (tensorboardX, no TensorFlow) and to ``metrics.jsonl``.

    Each jsonl line is ``{"step": s, "split": "train" | "eval", name: value, ...}``. On resume from step ``s``,
    lines written after ``s`` by the killed run are dropped first, so the file reads like one uninterrupted run.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
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


def save_curves(workdir: str) -> dict[str, str]:
    """``loss_curves.png`` (train losses), ``codebook_usage.png`` (eval usage and perplexity over steps) for
    tokenizers, ``ranking_metrics.png`` (MRR, Hits@1/10 over steps) for link prediction."""
    plt = pyplot()

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
