"""Robot action chunks: 32 steps x 7 joint torques (1.6 s at 20 Hz) of a scripted MuJoCo Pusher-v5 arm (random
crops of 400 training episodes; the three non-overlapping chunks of each of 100 held-out episodes), tokenized by a
1D convolutional residual-VQ tokenizer (4x in time, 8 levels of 256 codes with quantizer dropout: 8, 16, 32 or 64
tokens a chunk) and compared with FAST at scales 2 to 20 (its BPE fitted on the training chunks), by normalised MSE
against tokens per chunk.

    python -m vqjax.main --config=experiments/action_tokenizer.py --workdir=runs/action_tokenizer
    python -m vqjax.main --config=experiments/action_tokenizer.py:runlocal --workdir=/tmp/action_tokenizer
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.sequence_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_timeseries/pusher_actions"
    c.length = 32
    c.model.channels = 64
    c.model.strides = (2, 2)
    c.model.latent_dim = 16
    c.quantizer_kwargs.num_levels = 8
    c.quantizer_kwargs.codebook_size = 256
    c.eval_levels = (1, 2, 4, 8)
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    return runlocal(c) if parse_arg(arg) else c
