"""A causal 3D video tokenizer (MAGVIT-v2 layout) on Moving MNIST generated from the bundled digits: 17 frames of
64x64, 4x in time and in space (5 x 16 x 16 tokens a clip), FSQ with levels (8, 5, 5, 5) (1000 implicit codes).

    python -m vqjax.main --config=experiments/moving_mnist_video.py --workdir=runs/moving_mnist_video
    python -m vqjax.main --config=experiments/moving_mnist_video.py:runlocal --workdir=/tmp/moving_mnist_video
"""

from vqjax.train.config import parse_arg, runlocal
from vqjax.train.tasks.video_tokenizer import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.num_train_steps = 2000
    c.eval_every_steps = 500
    c.max_eval_examples = 64
    return runlocal(c) if parse_arg(arg) else c
