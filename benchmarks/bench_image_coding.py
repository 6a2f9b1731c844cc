"""Image tokens judged as image coding: the 1D tokenizer at every prefix length, the grid tokenizers trained for
the matching token counts with equal steps, and JPEG and WebP at equal bits, by one harness on the same held-
out images (:func:`vqjax.evals.image.rate_distortion`).

    python benchmarks/bench_image_coding.py --train                  # trains what is missing, then scores
    python benchmarks/bench_image_coding.py --datasets mnist --max_images 200
    python benchmarks/bench_image_coding.py --dry                    # tiny runs, a check that the pipeline works

Per dataset (``mnist``: the bundled digits, ``photos``: the 32x32 photo crops) it trains, in
``ROOT/<dataset>_1d`` and ``ROOT/<dataset>_grid<k>``, the experiment ``experiments/<dataset>_1d.py`` and its
``grid_config(k)`` for k = 1, 4, 16 (resuming what a previous call left), trains the in-repo feature network
on the training split for the feature distance, scores everything on the first ``--max_images`` held-out
images, prints the table, and writes ``ROOT/<dataset>_rows.json`` and the rate-distortion figure
``--figures/image_coding_<dataset>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import experiment_module  # noqa: E402

import vqjax  # noqa: E402
from vqjax.evals import image as image_eval  # noqa: E402
from vqjax.evals.figures import save_image_rows  # noqa: E402
from vqjax.train import train_and_evaluate  # noqa: E402
from vqjax.train.config import read_example_splits  # noqa: E402
from vqjax.train.perceptual import train_feature_net  # noqa: E402

GRIDS = (1, 4, 16)


def configs(dataset: str, dry: bool) -> dict:
    """``{run name: config}`` of the 1D tokenizer and its grid tokenizers."""
    module = experiment_module(f"{dataset}_1d")
    arg = "runlocal" if dry else None
    out = {f"{dataset}_1d": module.get_config(arg)}
    out.update({f"{dataset}_grid{k}": module.grid_config(k, arg) for k in GRIDS})
    if dry:
        for c in out.values():
            c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 4, 4, 4
            c.max_eval_examples, c.eval_batch_size = 40, 40
    return out


def held_out(config, count: int) -> tuple[np.ndarray, object]:
    """The first ``count`` images of the eval split and the training source."""
    train, evals = read_example_splits(config, None)
    count = min(count, len(evals))
    return np.stack([evals[i]["image"] for i in range(count)]), train


def feature_net(train_source, classes: int, steps: int, seed: int = 0):
    net, params, accuracy = train_feature_net(train_source, num_classes=classes, steps=steps, seed=seed)
    print(f"feature network: {classes} classes, {steps} steps, train accuracy {accuracy:.3f}")
    return lambda y: net.apply(params, y, method="features")


def table(rows: list[dict]) -> str:
    """One line per token count of the 1D tokenizer: it, the grid of that count, JPEG and WebP at its bits (marked
    "over budget" where even their lowest quality needs more), and the adaptive mode at its PSNR."""
    one_d = [r for r in rows if r["kind"] == "fixed" and r["codec"].endswith("_1d")]
    head = ("| tokens | bits/px | 1D PSNR / SSIM / feat. | grid PSNR / SSIM / feat. | JPEG PSNR (bits/px) | "
            "WebP PSNR (bits/px) | adaptive, same mean PSNR: mean tokens | adaptive, each image within the mean "
            "MSE: mean tokens |")
    lines = [head, "|" + " --- |" * 8]
    fmt = lambda r: f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['feature_distance']:.3f}"
    for r in one_d:
        k = r["tokens"]
        grid = [g for g in rows if g["kind"] == "fixed" and "_grid" in g["codec"] and g["tokens"] == k]
        anchors = {a: [x for x in rows if x["kind"] == "at_bits" and x["codec"] == a and x["matched"] == r["codec"]
                       and x["matched_tokens"] == k] for a in ("jpeg", "webp")}
        ad = {kind: [x for x in rows if x["kind"] == kind and x["codec"] == r["codec"] and x["matched_tokens"] == k]
              for kind in ("adaptive", "adaptive_matched")}
        cells = [str(k), f"{r['bits_per_pixel']:.3f}", fmt(r), fmt(grid[0]) if grid else "(no square grid)"]
        for a in ("jpeg", "webp"):
            x = anchors[a][0] if anchors[a] else None
            over = " over budget" if x and x["bits_per_image"] > 1.02 * r["bits_per_image"] else ""
            cells.append(f"{x['psnr']:.2f} ({x['bits_per_pixel']:.3f}{over})" if x else "")
        for kind in ("adaptive_matched", "adaptive"):
            x = ad[kind][0] if ad[kind] else None
            cells.append(f"{x['tokens']:.1f} ({x['psnr']:.2f} dB)" if x else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/image_coding")
    p.add_argument("--datasets", default="mnist,photos")
    p.add_argument("--train", action="store_true", help="train (or resume) the runs first")
    p.add_argument("--max_images", type=int, default=500)
    p.add_argument("--feature_steps", type=int, default=300)
    p.add_argument("--figures", default="docs/figures")
    p.add_argument("--dry", action="store_true", help="tiny runs (runlocal, 4 steps, 8 images, 3 qualities)")
    a = p.parse_args(argv)
    if a.dry:
        a.max_images, a.feature_steps = 8, 5
    for dataset in a.datasets.split(","):
        runs = configs(dataset, a.dry)
        for name, config in runs.items():
            workdir = os.path.join(a.root, name)
            if a.train or a.dry:
                train_and_evaluate(config, workdir, progress=not a.dry)
            elif not os.path.exists(os.path.join(workdir, "spec.json")):
                raise SystemExit(f"{workdir} holds no trained tokenizer: run with --train")
        first = next(iter(runs.values()))
        images, train_source = held_out(first, a.max_images)
        features = feature_net(train_source, int(first.feature_net_classes), a.feature_steps)
        tokenizers = {name: vqjax.Tokenizer.load(os.path.join(a.root, name)) for name in runs}
        qualities = {"jpeg": (5, 50, 95), "webp": (0, 50, 100)} if a.dry else None
        rows = image_eval.rate_distortion(tokenizers, images, features=features, qualities=qualities)
        with open(os.path.join(a.root, f"{dataset}_rows.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
        figure = image_eval.plot_rate_distortion(
            os.path.join(a.figures if not a.dry else a.root, f"image_coding_{dataset}.png"), rows,
            f"{dataset}: {len(images)} held-out images")
        one_d = tokenizers[f"{dataset}_1d"]
        ks = image_eval.prefix_lengths(one_d.token_range)
        show = images[:8]
        rows_img = [show.astype(np.float32) / 255.0 if show.dtype == np.uint8 else show]
        rows_img += [np.asarray(one_d.decode(one_d.encode(show, num_tokens=k))) for k in ks]
        rows_img += [np.asarray(tokenizers[f"{dataset}_grid{k}"].decode(tokenizers[f"{dataset}_grid{k}"].encode(show)))
                     for k in GRIDS]
        prefixes = save_image_rows(
            os.path.join(a.figures if not a.dry else a.root, f"image_coding_{dataset}_prefixes.png"), rows_img,
            ["original"] + [f"1D, {k} tokens" for k in ks] + [f"grid, {k} tokens" for k in GRIDS],
            f"{dataset}: held-out images decoded from the first k tokens of one 1D tokenizer, and by grid tokenizers")
        print(f"\n## {dataset}: {len(images)} held-out images of {images.shape[1]}x{images.shape[2]}, "
              f"steps {first.num_train_steps} per tokenizer\n")
        print(table(rows))
        print(f"\nfigures: {figure}, {prefixes}")


if __name__ == "__main__":
    main()
