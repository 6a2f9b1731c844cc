"""Motion: smart-watch accelerometer and gyroscope (aeon's BasicMotions: 6 channels at 10 Hz, four activities;
aeon's own train/test split) in 32-sample windows (random crops in training; the three non-overlapping windows of
each test series), a 1D convolutional residual-VQ tokenizer (4x in time: 8 positions, 4 levels of 256 codes with
quantizer dropout), next to FAST; the downstream test trains one small Transformer classifier on the tokens and on
the raw windows (300 steps, 3 seeds). Other sets through ``--config.dataset=vqjax_timeseries/<set>`` (windows of
32 fit all of them: ``japanese_vowels``, ``gun_point``, ``pickup_gesture``, ``daphnet``).

    python -m vqjax.main --config=experiments/motion_tokenizer.py --workdir=runs/motion_tokenizer
    python -m vqjax.main --config=experiments/motion_tokenizer.py:runlocal --workdir=/tmp/motion_tokenizer
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.sequence_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_timeseries/basic_motions"
    c.length = 32
    c.model.channels = 32
    c.model.strides = (2, 2)
    c.model.latent_dim = 16
    c.quantizer_kwargs.num_levels = 4
    c.quantizer_kwargs.codebook_size = 256
    c.eval_levels = (1, 2, 4)
    c.batch_size = 16
    c.eval_batch_size = 40
    c.fast_scales = (1.0, 2.0, 5.0, 10.0)
    c.downstream_steps = 300
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    return runlocal(c) if parse_arg(arg) else c
