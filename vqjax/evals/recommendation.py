"""One harness for every recommender on the same leave-one-out split: full-ranking Recall@k and NDCG@k, overall and
for warm and cold test items separately, the popularity baseline, and the comparison table and figure.

    ranked = ranker(histories)                          # int [U, k]: each user's top-k items, best first
    metrics = ranking_metrics(ranked, targets)          # recall@5, ndcg@5, recall@10, ndcg@10
    result = evaluate_ranker(ranker, splits, "test")    # + warm/... and cold/... and counts

With a single held-out item per user, Recall@k is the fraction of users whose item is in their top k, and NDCG@k is
``1 / log2(1 + rank)`` when it is (rank from 1), else 0, averaged over users (Kang & McAuley 2018; Rajput et al.
2023). No item is excluded from the ranking (a user's earlier items included): every method ranks the whole
catalogue the same way.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import numpy as np

from vqjax.evals.figures import pyplot, save_figure

__all__ = ["KS", "ranking_metrics", "history_matrix", "evaluate_ranker", "popularity_ranker", "write_result",
           "read_result", "compare_runs", "plot_comparison", "RESULT_FILE", "evaluate"]

KS = (5, 10)
RESULT_FILE = "retrieval.json"


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int] = KS) -> dict:
    """Recall@k and NDCG@k of rankings ``ranked [U, >= max(ks)]`` (-1 = no item) against one target per user."""
    ranked, targets = np.asarray(ranked), np.asarray(targets)
    if ranked.ndim != 2 or ranked.shape[0] != targets.shape[0] or ranked.shape[1] < max(ks):
        raise ValueError(f"ranking_metrics: ranked must be [U, >= {max(ks)}] for {targets.shape[0]} targets; got "
                         f"{ranked.shape}")
    hit = ranked == targets[:, None]
    rank = np.where(hit.any(1), np.argmax(hit, 1) + 1, np.iinfo(np.int32).max)
    out = {}
    for k in ks:
        inside = rank <= k
        out[f"recall@{k}"] = float(np.mean(inside)) if len(targets) else 0.0
        out[f"ndcg@{k}"] = float(np.mean(np.where(inside, 1.0 / np.log2(1.0 + np.minimum(rank, k)), 0.0))) \
            if len(targets) else 0.0
    return out


def history_matrix(histories: Sequence[np.ndarray], max_items: int) -> np.ndarray:
    """int32 ``[U, max_items]``: each history's last ``max_items`` items, right-aligned, left-padded with -1.

    Raises:
      ValueError: an empty history.
    """
    out = np.full((len(histories), max_items), -1, np.int32)
    for u, h in enumerate(histories):
        if len(h) == 0:
            raise ValueError(f"history {u} is empty; a recommender needs at least one item")
        piece = np.asarray(h[-max_items:], np.int32)
        out[u, max_items - len(piece):] = piece
    return out


def evaluate_ranker(ranker: Callable[[np.ndarray], np.ndarray], splits, split: str, *, max_items: int,
                    batch_size: int = 256, k: int = max(KS), max_users: int | None = None) -> dict:
    """Metrics of ``ranker`` (``[B, max_items]`` histories -> ``[B, >= k]`` items) on ``split`` of ``splits``:
    overall, ``warm/...`` and ``cold/...`` (targets withheld from training), with ``users`` and ``cold_users``.
    Batches are padded to ``batch_size`` (one compiled shape)."""
    histories, targets = splits.split(split)
    if max_users is not None:
        histories, targets = histories[:max_users], targets[:max_users]
    hist = history_matrix(histories, max_items)
    ranked = []
    for s in range(0, hist.shape[0], batch_size):
        part = hist[s:s + batch_size]
        pad = batch_size - part.shape[0]
        got = np.asarray(ranker(np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part))
        ranked.append(got[:part.shape[0], :k])
    ranked = np.concatenate(ranked)
    cold = splits.cold[targets]
    out = {**ranking_metrics(ranked, targets), "users": int(len(targets)), "cold_users": int(cold.sum())}
    for name, mask in (("warm", ~cold), ("cold", cold)):
        if mask.any():
            out.update({f"{name}/{m}": v for m, v in ranking_metrics(ranked[mask], targets[mask]).items()})
    return out


def popularity_ranker(train: Sequence[np.ndarray], num_items: int, k: int = max(KS)):
    """The most interacted-with training items (ties by id) for everyone."""
    counts = np.bincount(np.concatenate([np.asarray(s) for s in train]), minlength=num_items)
    top = np.argsort(-counts, kind="stable")[:k].astype(np.int32)
    return lambda hist: np.tile(top, (hist.shape[0], 1))


def write_result(workdir: str, method: str, metrics: dict, popularity: dict, info: dict) -> str:
    """``workdir/retrieval.json``: the method's test metrics and the popularity baseline's on the same split."""
    path = os.path.join(workdir, RESULT_FILE)
    with open(path + ".tmp", "w") as fh:
        json.dump({"method": method, "test": metrics, "popularity": popularity, **info}, fh, indent=1)
    os.replace(path + ".tmp", path)
    return path


def read_result(workdir: str) -> dict:
    with open(os.path.join(workdir, RESULT_FILE)) as fh:
        return json.load(fh)


def compare_runs(workdirs: Sequence[str], out_png: str | None = None) -> str:
    """A markdown table of the runs' test metrics (popularity once, from the first run), and ``out_png``.

    Raises:
      ValueError: runs on different splits (their ``split`` entries differ).
    """
    results = [read_result(w) for w in workdirs]
    splits = {json.dumps(r.get("split"), sort_keys=True) for r in results}
    if len(splits) > 1:
        raise ValueError(f"compare_runs: the runs used different splits: {sorted(splits)}")
    rows = [("popularity", results[0]["popularity"])] + [(r["method"], r["test"]) for r in results]
    cols = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    lines = ["| method | " + " | ".join(cols) + " | cold recall@10 |", "| --- " * (len(cols) + 2) + "|"]
    for name, m in rows:
        cold = m.get("cold/recall@10")
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) +
                     f" | {'' if cold is None else f'{cold:.4f}'} |")
    if out_png:
        plot_comparison(rows, out_png)
    return "\n".join(lines)


def plot_comparison(rows, path: str) -> str:
    """Bars of Recall@10 and NDCG@10 per method, overall and on the cold test items."""
    plt = pyplot()

    names = [n for n, _ in rows]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (title, keys) in zip(axes, (("all test users", ("recall@10", "ndcg@10")),
                                        ("users whose test item is cold", ("cold/recall@10", "cold/ndcg@10")))):
        for j, key in enumerate(keys):
            ax.bar(x + (j - 0.5) * 0.38, [m.get(key, 0.0) for _, m in rows], 0.38, label=key.split("/")[-1])
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def evaluate(ranker: Callable[[np.ndarray], np.ndarray], splits, *, split: str = "test", max_items: int,
             batch_size: int = 256, max_users: int | None = None, name: str = "ranker") -> list[dict]:
    """A recommender (``histories [B, max_items] -> items [B, >= 10]``, e.g. a trained run's
    ``vqjax.train.tasks.recommender.load_ranker(workdir)``) and the popularity baseline on ``split`` of a
    leave-one-out ``splits`` (:func:`vqjax.data.recommendation.leave_one_out`), by one harness
    (:func:`evaluate_ranker`): Recall@k and NDCG@k overall, on warm and on cold targets.

    Returns:
      Two rows, ``name`` then ``'popularity'``, each ``{'codec': name, **metrics}``.
    """
    args = dict(max_items=max_items, batch_size=batch_size, max_users=max_users)
    popular = popularity_ranker(splits.train, splits.num_items)
    return [{"codec": name, **evaluate_ranker(ranker, splits, split, **args)},
            {"codec": "popularity", **evaluate_ranker(popular, splits, split, **args)}]
