"""EEG (as ``experiments/eeg_tokenizer.py``: SelfRegulationSCP1, 1 s windows of 6 channels at 256 Hz) tokenized by
multi-scale residual quantization in the NeuroRVQ spirit: the 32 latent frames are quantized coarse to fine at
temporal scales 4, 2 and 1, each scale by its own 256-code VQ (EMA, k-means start, dead-code reseeding) on what the
coarser scales left: 8 + 16 + 32 = 56 tokens a window. Time-domain loss only; FAST at scale 5 beside it.

    python -m vqjax.main --config=experiments/eeg_tokenizer_multiscale.py --workdir=runs/eeg_multiscale
    python -m vqjax.main --config=experiments/eeg_tokenizer_multiscale.py:runlocal --workdir=/tmp/eeg_multiscale
"""

import ml_collections

from vqjax.train.config import parse_arg
from vqjax.train.tasks.sequence_tokenizer import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = "vqjax_timeseries/eeg_scp1"
    c.length = 256
    c.model.channels = 32
    c.model.strides = (2, 2, 2)
    c.model.latent_dim = 16
    c.model.scales = (4, 2, 1)
    c.quantizer = "vq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(codebook_size=256, codebook_learning="ema",
                                                        codebook_init="kmeans", dead_code_threshold=1.0))
    c.eval_levels = ()
    c.band_power = True
    c.fast_scales = (5.0,)
    c.fast_vocab_size = 2048
    c.batch_size = 32
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    return runlocal(c) if parse_arg(arg) else c
