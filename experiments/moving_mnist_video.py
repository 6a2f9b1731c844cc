"""A causal 3D video tokenizer (MAGVIT-v2 layout) on Moving MNIST generated from the bundled digits: 17 frames of
64x64; a 2x2 patch stem and two halvings give 8x in space, two frame halvings 4x in time (5 x 8 x 8 = 320 tokens a
clip, 16 a frame once past the first), FSQ with levels (8, 5, 5, 5) (1000 implicit codes). Its final test scores the
per-frame image tokenizers of ``experiments/moving_mnist_frames.py`` (``config.frame_baselines``) and MPEG-4 / VP9
at the same bits per pixel on the same test clips.

    python -m vqjax.main --config=experiments/moving_mnist_frames.py --workdir=runs/moving_mnist_frames16
    python -m vqjax.main --config=experiments/moving_mnist_video.py --workdir=runs/moving_mnist_video
    python -m vqjax.main --config=experiments/moving_mnist_video.py:runlocal --workdir=/tmp/moving_mnist_video
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.video_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.model.patch_size = 2
    c.model.channel_mult = (1, 2, 2)
    c.model.temporal_down = (True, True)
    c.batch_size = 4
    c.optimizer.learning_rate = 2e-3
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 100
    c.max_eval_examples = 64
    c.frame_baselines = ("runs/moving_mnist_frames16", "runs/moving_mnist_frames64")
    return runlocal(c) if parse_arg(arg) else c
