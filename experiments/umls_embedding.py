"""The per-node embedding baseline for ``umls_nodepiece.py``: one 64-d vector per entity, RotatE, same budget.

    python -m vqjax.main --config=experiments/umls_embedding.py --workdir=runs/umls_embedding
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.link_prediction import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "umls"
    c.encoder = "embedding"
    c.scorer = "rotate"
    return runlocal(c) if parse_arg(arg) else c
