"""The causal 3D video tokenizer of ``experiments/moving_mnist_video.py`` started from the per-frame image tokenizer
of 8 x 8 tokens a frame (``runs/moving_mnist_frames64``), its weights inflated into the causal 3D layout
(``config.inflate_from``, MAGVIT-v2's initialisation): the image layout (no patch stem, three halvings, width 16
then 32), time halved at the first two halvings, so 5 x 8 x 8 = 320 FSQ tokens a clip, the video tokenizer's rate.
At step 0 it is that image tokenizer on the last frame of each group of four; training teaches it the motion.

    python -m vqjax.main --config=experiments/moving_mnist_frames.py --workdir=runs/moving_mnist_frames64 \\
        --config.model.channel_mult='(1, 2, 2, 2)'
    python -m vqjax.main --config=experiments/moving_mnist_frames.py --workdir=runs/moving_mnist_frames16_800 \\
        --config.num_train_steps=800
    python -m vqjax.main --config=experiments/moving_mnist_video_inflated.py --workdir=runs/moving_mnist_video_inflated
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.video_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.model.patch_size = 1
    c.model.channel_mult = (1, 2, 2, 2)
    c.model.temporal_down = (True, True, False)
    c.inflate_from = "runs/moving_mnist_frames64"
    c.batch_size = 4
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 100
    c.max_eval_examples = 64
    # per-frame 4 x 4 tokens trained as many steps (400) and as many as this run and its image tokenizer (800)
    c.frame_baselines = ("runs/moving_mnist_frames16", "runs/moving_mnist_frames16_800", "runs/moving_mnist_frames64")
    if parse_arg(arg):
        c = runlocal(c)
        c.inflate_from = ""
    return c
