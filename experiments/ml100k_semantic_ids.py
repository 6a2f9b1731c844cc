"""Semantic IDs for MovieLens-100k's movies: an RQ-VAE (3 levels x 64 codes, k-means init, EMA codebooks, dead-code
reseeding) on content (title, year, genres) + collaborative (BPR) features, TIGER's extra level against
collisions; 10% of the test items withheld from training as cold items, given IDs as new items.

    python -m vqjax.main --config=experiments/ml100k_semantic_ids.py --workdir=runs/ml100k_semantic_ids
    python -m vqjax.main --config=experiments/ml100k_semantic_ids.py:runlocal --workdir=/tmp/ids
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.semantic_ids import default_config, runlocal


def get_config(arg=None):
    c = default_config()
    return runlocal(c) if parse_arg(arg) else c
