"""Link prediction on UMLS (pykeen's copy: 135 entities, 46 relations) with NodePiece entities: 40 anchors, each
node as its 10 nearest anchors and 12 relation types, an MLP encoder, RotatE scoring. Compare with
``umls_embedding.py`` (one vector per entity, same scorer and budget).

    python -m vqjax.main --config=experiments/umls_nodepiece.py --workdir=runs/umls_nodepiece
    python -m vqjax.main --config=experiments/umls_nodepiece.py --workdir=runs/kin --config.dataset=kinships
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.link_prediction import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "umls"
    c.encoder = "mlp"
    c.scorer = "rotate"
    return runlocal(c) if parse_arg(arg) else c
