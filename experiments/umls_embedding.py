"""The per-node embedding baseline for ``umls_nodepiece.py``: one 64-d vector per entity, RotatE, same budget.

    python -m vqjax.main --config=experiments/umls_embedding.py --workdir=runs/umls_embedding
"""

from vqjax.train.config import link_config, parse_arg, runlocal


def get_config(arg: str | None = None):
    c = link_config()
    c.dataset = "umls"
    c.encoder = "embedding"
    c.scorer = "rotate"
    return runlocal(c) if parse_arg(arg) else c
