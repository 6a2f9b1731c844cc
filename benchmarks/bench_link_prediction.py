"""NodePiece against per-node embeddings on real knowledge graphs: parameters against filtered test MRR.

For each dataset, trains the NodePiece link predictor (``experiments/umls_nodepiece.py``: MLP over anchor and
relation tokens, RotatE) and the embedding baseline (``experiments/umls_embedding.py``: one vector per entity,
RotatE) with the same dimension, steps, batch and negatives, then prints a table of parameters against filtered
MRR and Hits@1/3/10 on the test split, and saves ``params_vs_mrr.png``. Runs are ordinary workdirs under
``--root``: rerunning resumes or only evaluates them.

    python benchmarks/bench_link_prediction.py [--datasets umls nations kinships ml100k_kg] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

# NodePiece vocabulary per dataset (anchors, anchors per node, relation types per node); the rest is shared.
NODEPIECE = {"umls": (40, 10, 12), "nations": (10, 5, 12), "kinships": (40, 10, 12), "ml100k_kg": (500, 20, 12)}


def run(dataset: str, encoder: str, args) -> dict:
    from experiments_loader import load_experiment

    from vqjax.train import train_and_evaluate as train_and_evaluate_links

    c = load_experiment("umls_embedding" if encoder == "embedding" else "umls_nodepiece")
    c.dataset = dataset
    c.num_train_steps = args.steps
    c.eval_every_steps = args.steps
    c.checkpoint_every_steps = args.steps
    c.dim = args.dim
    c.nodepiece.num_anchors, c.nodepiece.anchors_per_node, c.nodepiece.relations_per_node = NODEPIECE[dataset]
    return train_and_evaluate_links(c, os.path.join(args.root, f"{dataset}_{encoder}"), progress=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(NODEPIECE))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--root", default=os.path.join(ROOT, "runs", "link_prediction"))
    args = p.parse_args()
    rows = []
    for dataset in args.datasets:
        for encoder in ("mlp", "embedding"):
            r = run(dataset, encoder, args)
            rows.append({"dataset": dataset, "encoder": encoder, **r})
            print(json.dumps(rows[-1]), flush=True)
    os.makedirs(args.root, exist_ok=True)
    with open(os.path.join(args.root, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    print("\n| dataset | entities | model | parameters | MRR | Hits@1 | Hits@3 | Hits@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        with open(os.path.join(args.root, f"{r['dataset']}_{r['encoder']}", "run.json")) as fh:
            n = json.load(fh)["num_entities"]
        name = "NodePiece (MLP)" if r["encoder"] == "mlp" else "embedding table"
        print(f"| {r['dataset']} | {n} | {name} | {r['num_params']:,} | {r['mrr']:.3f} | {r['hits@1']:.3f} | "
              f"{r['hits@3']:.3f} | {r['hits@10']:.3f} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for dataset in args.datasets:
        pts = {r["encoder"]: r for r in rows if r["dataset"] == dataset}
        xs = [pts[e]["num_params"] for e in ("mlp", "embedding")]
        ys = [pts[e]["mrr"] for e in ("mlp", "embedding")]
        line, = ax.plot(xs, ys, "-", alpha=0.4)
        ax.plot(xs[0], ys[0], "o", color=line.get_color(), label=f"{dataset}: NodePiece")
        ax.plot(xs[1], ys[1], "s", color=line.get_color(), mfc="none", label=f"{dataset}: embedding")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("filtered test MRR")
    ax.legend(fontsize=6)
    path = os.path.join(args.root, "params_vs_mrr.png")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
