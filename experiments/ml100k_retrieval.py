"""Generative retrieval on MovieLens-100k (TIGER): semantic IDs from experiments/ml100k_semantic_ids.py (trained
first in WORKDIR/semantic_ids), a 2-layer decoder over histories of 20 items, trie-constrained beam search of 20.

    python -m vqjax.main --config=experiments/ml100k_retrieval.py --workdir=runs/ml100k_retrieval
    python -m vqjax.main --config=experiments/ml100k_retrieval.py --workdir=runs/ml100k_retrieval_random \
        --config.ids=random                                     # the same model on random IDs
    python -m vqjax.main --config=experiments/ml100k_retrieval.py:runlocal --workdir=/tmp/retrieval
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.generative_retrieval import default_config, runlocal


def get_config(arg=None):
    c = default_config()
    return runlocal(c) if parse_arg(arg) else c
