"""VQ-VAE on the bundled MNIST digits: 7x7 tokens from 1024 codes, EMA codebook with k-means init and dead-code
replacement (the default tokenizer; what ``make demo`` trains).

    python -m vqjax.main --config=experiments/mnist_vq.py --workdir=runs/mnist_vq
    python -m vqjax.main --config=experiments/mnist_vq.py:runlocal --workdir=/tmp/mnist_vq   # a tiny run
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_mnist"
    c.quantizer = "vq"
    c.quantizer_kwargs = dict(codebook_size=1024, codebook_learning="ema", decay=0.99, codebook_init="kmeans",
                              dead_code_threshold=0.05, beta=0.25)
    c.num_train_steps = 2000
    c.optimizer.learning_rate = 2e-3
    return runlocal(c) if parse_arg(arg) else c
