"""A variable-bitrate speech codec on the bundled recorded speech (Debian's klettres-data and ktuberling-data):
STFT encoder and inverse-STFT decoder (causal, so it streams, with the decoder's 30 ms delay), 50 frames per
second. The first code level is the input's pitch (0 when unvoiced), which drives the decoder's harmonic part; the
next four the spectral envelope (log powers in 20 mel bands, a residual VQ of four levels of 1024 codes), on which
the decoder builds its magnitudes; then a residual VQ of 8 levels of 1024 codes, each level searched DAC-style on
8-dimensional l2-normalised projections (EMA codebooks, k-means init, dead-code reseeding), with quantizer dropout,
so the same model decodes 1.5, 3 and 6 kbps (3, 6 and 12 levels: the pitch and the envelope's first two levels;
the pitch, the envelope and one latent level; then seven). Judged on held-out languages against Codec2 and Opus in
the same run.

    python -m vqjax.main --config=experiments/speech_codec.py --workdir=runs/speech_codec
    python -m vqjax.main --config=experiments/speech_codec.py:runlocal --workdir=/tmp/speech_codec   # a tiny run
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.audio_codec import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.model.harmonic = True
    c.model.pitch_codes = True
    c.model.envelope_levels = 4
    c.quantizer = "rvq"
    c.quantizer_kwargs = dict(num_levels=8, codebook_size=1024, code_dim=8, metric="cosine", quantizer_dropout=0.5,
                              codebook_learning="ema", codebook_init="kmeans", dead_code_threshold=1.0)
    c.eval_levels = (3, 6, 12)
    c.batch_size = 8
    c.num_train_steps = 10000
    c.eval_every_steps = 2500
    return runlocal(c) if parse_arg(arg) else c
