"""The frame-by-frame baseline of ``experiments/moving_mnist_video.py``: the image tokenizer trained on and applied
to every frame of the same Moving MNIST clips (``config.video_frames``). Four halvings give 4 x 4 = 16 tokens a
frame with the same FSQ levels (8, 5, 5, 5): the video tokenizer's token rate once past its first frame. The same
number of frames a step (68 = 4 clips of 17) and of steps as the video run.

    python -m vqjax.main --config=experiments/moving_mnist_frames.py --workdir=runs/moving_mnist_frames16
    # 8 x 8 = 64 tokens a frame (four times the video tokenizer's rate):
    python -m vqjax.main --config=experiments/moving_mnist_frames.py --workdir=runs/moving_mnist_frames64 \\
        --config.model.channel_mult='(1, 2, 2, 2)'
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.image_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_moving_mnist"
    c.video_frames = True
    c.model.channels = 16
    c.model.channel_mult = (1, 2, 2, 2, 2)
    c.model.latent_dim = 8
    c.quantizer = "fsq"
    c.quantizer_kwargs = dict(levels=(8, 5, 5, 5))
    c.batch_size = 68
    c.eval_batch_size = 68
    c.max_eval_examples = 64 * 17
    c.num_train_steps = 400
    c.log_every_steps = 25
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 100
    return runlocal(c) if parse_arg(arg) else c
