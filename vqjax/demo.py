"""``make demo-remedies``: fit VQ codebooks on real photo patches, plain VQ next to VQ with each collapse remedy.

Data: 8x8 grey patches of scikit-image's bundled photos, per-patch mean removed, scaled to unit variance.
Each variant trains a :class:`vqjax.nn.VectorQuantizer` directly on the patches (loss: reconstruction MSE plus
the quantizer's own loss) with Adam, then reports on held-out patches the relative MSE (MSE over the data
variance), the perplexity and the fraction of codes used. A figure of sorted code usage per variant is saved.

    python -m vqjax.demo --out runs/demo [--steps 400 --codebook-size 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqjax import metrics
from vqjax.data import photo_patches
from vqjax.evals.figures import pyplot
from vqjax.nn import STATS, VectorQuantizer

__all__ = ["VARIANTS", "FitResult", "fit_codebook", "load_patches", "run", "main"]

VARIANTS: dict[str, dict] = {
    "plain VQ": {},
    "k-means init": {"codebook_init": "kmeans"},
    "EMA": {"codebook_learning": "ema"},
    "dead-code replacement": {"dead_code_threshold": 1.0},
    "SimVQ": {"codebook_learning": "simvq"},
    "entropy regulariser": {"entropy_weight": 0.3, "entropy_temperature": 3.0},
    "factorised 8-d cosine": {"code_dim": 8, "metric": "cosine"},
    "EMA + k-means + dead-code": {"codebook_learning": "ema", "codebook_init": "kmeans",
                                  "dead_code_threshold": 1.0},
}


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Held-out quality of one fitted codebook."""
    name: str
    relative_mse: float
    perplexity: float
    usage: float
    seconds: float
    counts: np.ndarray = dataclasses.field(repr=False)


def load_patches(num_train: int, num_test: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test 8x8 photo patches (disjoint draws), mean-removed, scaled by the train std."""
    data = photo_patches(num_train + num_test, patch=8, seed=seed)
    train, test = data[:num_train], data[num_train:]
    scale = train.std()
    return train / scale, test / scale


def fit_codebook(name: str, train: np.ndarray, test: np.ndarray, *, codebook_size: int = 512, steps: int = 400,
                 batch_size: int = 1024, learning_rate: float = 1e-2, seed: int = 0, **vq_kwargs) -> FitResult:
    """Trains a ``VectorQuantizer(codebook_size, D, **vq_kwargs)`` on ``train [N, D]`` and scores it on ``test``.

    Deterministic given ``seed``. Returns a :class:`FitResult` with the per-code counts on ``test``.
    """
    module = VectorQuantizer(codebook_size, train.shape[1], **vq_kwargs)
    key = jax.random.key(seed)
    train_j, test_j = jnp.asarray(train), jnp.asarray(test)
    variables = module.init(key, train_j[:batch_size])
    params, stats = variables.get("params", {}), variables[STATS]
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    def loss_fn(params, stats, x, rng):
        q, updates = module.apply({"params": params, STATS: stats}, x, train=True, mutable=[STATS],
                                  rngs={"vq": rng})
        return jnp.mean((q.values - x) ** 2) + q.loss, updates[STATS]

    @jax.jit
    def step(params, stats, opt_state, i):
        rng = jax.random.fold_in(key, i)
        idx = jax.random.randint(jax.random.fold_in(rng, 0), (batch_size,), 0, train_j.shape[0])
        grads, stats = jax.grad(loss_fn, has_aux=True)(params, stats, train_j[idx], jax.random.fold_in(rng, 1))
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    start = time.perf_counter()
    for i in range(steps):
        params, stats, opt_state = step(params, stats, opt_state, i)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start

    variables = {"params": params, STATS: stats}
    codes = module.apply(variables, test_j, method="encode")
    recon = module.apply(variables, codes, method="decode")
    counts = np.bincount(np.asarray(codes), minlength=codebook_size)
    return FitResult(name=name,
                     relative_mse=float(jnp.mean((recon - test_j) ** 2) / jnp.var(test_j)),
                     perplexity=float(metrics.perplexity(jnp.asarray(counts))),
                     usage=float(np.mean(counts > 0)), seconds=seconds, counts=counts)


def plot_usage(results: list[FitResult], path: pathlib.Path) -> None:
    """Saves sorted per-code usage (fraction of test vectors, log scale) of every variant as a PNG."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for res in results:
        frac = np.sort(res.counts)[::-1] / max(res.counts.sum(), 1)
        ax.plot(np.arange(1, frac.size + 1), np.maximum(frac, 1e-7),
                label=f"{res.name} (usage {res.usage:.0%})")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1)
    ax.set_xlabel("code rank")
    ax.set_ylabel("fraction of test patches (0 plotted at 1e-7)")
    ax.set_title("Codebook usage on held-out 8x8 photo patches")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out: pathlib.Path, *, codebook_size: int = 512, steps: int = 400, num_train: int = 100_000,
        num_test: int = 10_000, variants: dict[str, dict] | None = None, seed: int = 0) -> list[FitResult]:
    """Fits every variant, prints a table, writes ``results.json`` and ``codebook_usage.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_patches(num_train, num_test, seed=seed)
    results = []
    print(f"8x8 photo patches: {len(train)} train, {len(test)} test, K={codebook_size}, {steps} steps")
    print(f"{'variant':28s} {'rel. MSE':>9s} {'perplexity':>11s} {'usage':>7s} {'fit s':>7s}")
    for name, kwargs in (variants or VARIANTS).items():
        res = fit_codebook(name, train, test, codebook_size=codebook_size, steps=steps, seed=seed, **kwargs)
        results.append(res)
        print(f"{name:28s} {res.relative_mse:9.4f} {res.perplexity:11.1f} {res.usage:7.1%} {res.seconds:7.1f}",
              flush=True)
    plot_usage(results, out / "codebook_usage.png")
    (out / "results.json").write_text(json.dumps(
        [{k: v for k, v in dataclasses.asdict(r).items() if k != "counts"} for r in results], indent=2))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="folder for results.json and codebook_usage.png")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    run(out, codebook_size=args.codebook_size, steps=args.steps, seed=args.seed)
    print(f"\nresults: {out / 'results.json'}\nfigure:  {out / 'codebook_usage.png'}")


if __name__ == "__main__":
    main()
