"""The training CLI (flags only; the work is :func:`vqjax.train.train_and_evaluate`).

    python -m vqjax.main --config=experiments/mnist_vq.py --workdir=DIR [--config.field=value ...]

Running it again on the same workdir resumes from the latest checkpoint. ``--distributed`` calls
``jax.distributed.initialize()`` first (multi-host runs on a pod; the cluster is detected from the environment).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment file (experiments/NAME.py[:arg])", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, figures, the tokenizer")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host launch)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in sys.argv[1:]):
        logging.set_verbosity(logging.WARNING)        # orbax logs every checkpoint step at INFO
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    if FLAGS.config.get("task") == "link_prediction":
        from vqjax.train.links import train_and_evaluate_links

        result = train_and_evaluate_links(FLAGS.config, FLAGS.workdir)
        if jax.process_index() == 0:
            print(link_report(result, FLAGS.workdir))
        return
    from vqjax.train import train_and_evaluate

    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(report(result, FLAGS.workdir))


def _table(header: str, rows, figures, workdir: str, extra=(), result=None) -> str:
    """A markdown table of ``rows``, then the figure paths, ``extra`` lines and the result as JSON."""
    import os

    lines = ["", f"| {header} | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
    lines += [f"figure: {os.path.join(workdir, name)}" for name in figures]
    return "\n".join(lines + list(extra) + ["", json.dumps(result)])


def report(result: dict, workdir: str) -> str:
    """The final evaluation as a table, and where the figures and the tokenizer are."""
    import os

    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("PSNR", f"{result['psnr']:.2f} dB"), ("SSIM", f"{result['ssim']:.4f}"),
            ("codebook usage", f"{100 * result['usage']:.1f}%"), ("perplexity", f"{result['perplexity']:.1f}"),
            ("dead codes", f"{int(result['dead_codes'])}"), ("bits per image", f"{result['bits_per_image']:.0f}")]
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    return _table("eval metric", rows, ("reconstructions.png", "codebook_usage.png", "loss_curves.png"), workdir,
                  extra, result)


def link_report(result: dict, workdir: str) -> str:
    """The filtered test metrics of a link-prediction run as a table, and where its figures are."""
    import os

    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("MRR", f"{result['mrr']:.4f}"), ("Hits@1", f"{result['hits@1']:.4f}"),
            ("Hits@3", f"{result['hits@3']:.4f}"), ("Hits@10", f"{result['hits@10']:.4f}"),
            ("mean rank", f"{result['mean_rank']:.1f}"), ("parameters", f"{result['num_params']:,}")]
    return _table("filtered test metric", rows, ("loss_curves.png", "ranking_metrics.png"), workdir,
                  [f"metrics: {os.path.join(workdir, 'metrics.jsonl')}"], result)


if __name__ == "__main__":
    app.run(main)
