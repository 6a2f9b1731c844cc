"""FSQ tokenizer on the bundled MNIST digits: 7x7 tokens, levels (8, 5, 5, 5) = 1000 implicit codes, 4-d latents
projected from the 32-d encoder output.

    python -m vqjax.main --config=experiments/mnist_fsq.py --workdir=runs/mnist_fsq
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_mnist"
    c.quantizer = "fsq"
    c.quantizer_kwargs = dict(levels=(8, 5, 5, 5))
    c.num_train_steps = 2000
    c.optimizer.learning_rate = 2e-3
    return runlocal(c) if parse_arg(arg) else c
