"""LFQ tokenizer on the bundled MNIST digits: 7x7 tokens of 10 bits (1024 codes) with MAGVIT-v2's entropy loss.

    python -m vqjax.main --config=experiments/mnist_lfq.py --workdir=runs/mnist_lfq
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_mnist"
    c.quantizer = "lfq"
    c.quantizer_kwargs = dict(bits=10, entropy_weight=0.1, commitment_weight=0.25)
    c.num_train_steps = 2000
    c.optimizer.learning_rate = 2e-3
    return runlocal(c) if parse_arg(arg) else c
