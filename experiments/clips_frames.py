"""The frame-by-frame baseline of ``experiments/clips_video.py``: the image tokenizer trained on and applied to
every frame of the same real-footage clips (``config.video_frames``), 4 x 4 = 16 FSQ tokens a frame (levels
(8, 5, 5, 5)), the video tokenizer's rate past its first frame; 68 frames a step (4 clips of 17), as many steps.

    python -m vqjax.main --config=experiments/clips_frames.py --workdir=runs/clips_frames16
    # 8 x 8 = 64 tokens a frame (four times the video tokenizer's rate):
    python -m vqjax.main --config=experiments/clips_frames.py --workdir=runs/clips_frames64 \\
        --config.model.channel_mult='(1, 2, 2, 2)'
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_video_clips"
    c.video_frames = True
    c.model.channels = 16
    c.model.channel_mult = (1, 2, 2, 2, 2)
    c.model.latent_dim = 8
    c.quantizer = "fsq"
    c.quantizer_kwargs = dict(levels=(8, 5, 5, 5))
    c.batch_size = 68
    c.eval_batch_size = 68
    c.max_eval_examples = 60 * 17
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 100
    return runlocal(c) if parse_arg(arg) else c
