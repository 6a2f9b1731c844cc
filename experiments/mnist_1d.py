"""A 1D tokenizer on the bundled MNIST digits: 4x4 patches, a 3-block Transformer encoder (width 96) writing 32
ordered tokens, FSQ levels (8, 5, 5, 5) = 1000 codes per token, a 3-block Transformer decoder, trained with
nested (tail) dropout so that every prefix of 1..32 tokens decodes (``tok.encode(images, num_tokens=k)``).

    python -m vqjax.main --config=experiments/mnist_1d.py --workdir=runs/mnist_1d
    python -m vqjax.main --config=experiments/mnist_1d.py:runlocal --workdir=/tmp/mnist_1d   # a tiny run

:func:`grid_config` is the 2D grid tokenizer it is judged against at ``tokens`` = 1, 4 or 16 (the digits
padded to 32x32 and downsampled to a 1x1, 2x2 or 4x4 grid), with the same quantizer, losses, optimizer and
steps (``benchmarks/bench_image_coding.py``).
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, grid_for_tokens, runlocal

STEPS = 2000


def _shared(c):
    c.dataset = "vqjax_mnist"
    c.quantizer = "fsq"
    c.quantizer_kwargs = dict(levels=(8, 5, 5, 5))
    c.num_train_steps = STEPS
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.batch_size = 32
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 200
    return c


def get_config(arg: str | None = None):
    c = _shared(default_config())
    c.architecture = "1d"
    c.model_1d.update(dict(image_size=(28, 28), patch_size=4, num_tokens=32, min_tokens=1, width=96, encoder_layers=3,
                           decoder_layers=3, num_heads=4, latent_dim=16, linear_path=True))
    return runlocal(c) if parse_arg(arg) else c


def grid_config(tokens: int, arg: str | None = None):
    """The grid tokenizer of ``tokens`` = 1, 4 or 16 codes (a ``side x side`` grid) on the same terms
    (:func:`vqjax.train.tasks.image_tokenizer.grid_for_tokens`)."""
    c = _shared(default_config())
    c.model.channels = 16
    c.model.latent_dim = 32
    c = grid_for_tokens(c, tokens, (28, 28))
    return runlocal(c) if parse_arg(arg) else c
