"""SASRec on MovieLens-100k, the baseline of experiments/ml100k_retrieval.py on the same split and harness.

    python -m vqjax.main --config=experiments/ml100k_sasrec.py --workdir=runs/ml100k_sasrec
    python -m vqjax.main --config=experiments/ml100k_sasrec.py:runlocal --workdir=/tmp/sasrec
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.sasrec import default_config, runlocal


def get_config(arg=None):
    c = default_config()
    return runlocal(c) if parse_arg(arg) else c
