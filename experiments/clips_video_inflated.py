"""``experiments/moving_mnist_video_inflated.py`` on real footage (``vqjax_video_clips`` at a nominal 24 frames per
second): the causal 3D tokenizer started from the per-frame image tokenizer of 8 x 8 tokens a frame
(``runs/clips_frames64``), inflated, then trained on clips; 5 x 8 x 8 = 320 FSQ tokens a clip.

    python -m vqjax.main --config=experiments/clips_frames.py --workdir=runs/clips_frames64 \\
        --config.model.channel_mult='(1, 2, 2, 2)'
    python -m vqjax.main --config=experiments/clips_frames.py --workdir=runs/clips_frames16_800 \\
        --config.num_train_steps=800
    python -m vqjax.main --config=experiments/clips_video_inflated.py --workdir=runs/clips_video_inflated
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.video_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_video_clips"
    c.frame_rate = 24.0
    c.model.patch_size = 1
    c.model.channel_mult = (1, 2, 2, 2)
    c.model.temporal_down = (True, True, False)
    c.inflate_from = "runs/clips_frames64"
    c.batch_size = 4
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 100
    c.max_eval_examples = 64
    # per-frame 4 x 4 tokens trained as many steps (400) and as many as this run and its image tokenizer (800)
    c.frame_baselines = ("runs/clips_frames16", "runs/clips_frames16_800", "runs/clips_frames64")
    if parse_arg(arg):
        c = runlocal(c)
        c.inflate_from = ""
    return c
