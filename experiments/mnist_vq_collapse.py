"""Codebook collapse on purpose: plain VQ (gradient-learned codebook, random init, no EMA, no dead-code
replacement) with 1024 codes and the same budget as ``mnist_vq``. Compare its eval usage with ``mnist_vq``'s.

    python -m vqjax.main --config=experiments/mnist_vq_collapse.py --workdir=runs/mnist_vq_collapse
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_mnist"
    c.quantizer = "vq"
    c.quantizer_kwargs = dict(codebook_size=1024, codebook_learning="gradient", codebook_init="random", beta=0.25)
    c.num_train_steps = 2000
    c.optimizer.learning_rate = 2e-3
    return runlocal(c) if parse_arg(arg) else c
