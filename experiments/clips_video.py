"""The causal 3D video tokenizer of ``experiments/moving_mnist_video.py`` on real footage: 17-frame 64x64 RGB crops
of the iscc-samples demo and opencv-doc's sample videos (``vqjax_video_clips``, test from held-out segments), at a
nominal 24 frames per second: 5 x 8 x 8 = 320 FSQ tokens a clip (levels (8, 5, 5, 5)). Its final test scores the
per-frame image tokenizers of ``experiments/clips_frames.py`` and MPEG-4 / VP9 on the same test clips.

    python -m vqjax.main --config=experiments/clips_frames.py --workdir=runs/clips_frames16
    python -m vqjax.main --config=experiments/clips_video.py --workdir=runs/clips_video
    python -m vqjax.main --config=experiments/clips_video.py:runlocal --workdir=/tmp/clips_video
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.video_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_video_clips"
    c.frame_rate = 24.0
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
    c.frame_baselines = ("runs/clips_frames16", "runs/clips_frames64")
    return runlocal(c) if parse_arg(arg) else c
