"""Graph + text in one LM: UMLS entities as NodePiece token spans, relations as words ("interacts with"), tail
prediction as generation. Judged by filtered MRR (every entity's span scored by the LM's likelihood), next to the
link-prediction models of ``experiments/umls_nodepiece.py`` (``benchmarks/bench_link_prediction.py``).

    python -m vqjax.main --config=experiments/umls_text_lm.py --workdir=runs/umls_text_lm
    python -m vqjax.main --config=experiments/umls_text_lm.py:runlocal --workdir=/tmp/umls_lm   # a tiny run
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.lm import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.documents = "kg_text"
    c.kg_dataset = "umls"
    c.weights = dict(text=0.5, graph=1.0)
    c.text_vocab_size = 512
    c.seq_len = 128
    c.batch_size = 32
    c.model.dim, c.model.num_layers, c.model.num_heads, c.model.num_kv_heads, c.model.mlp_dim = 128, 3, 4, 2, 384
    c.num_train_steps = 2000
    c.eval_every_steps = 500
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 100
    c = runlocal(c) if parse_arg(arg) else c
    if parse_arg(arg):
        c.max_test_queries = 10
    return c
