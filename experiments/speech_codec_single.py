"""A single-codebook speech tokenizer (WavTokenizer-style: one large codebook, few tokens per second) on the
bundled recorded speech: STFT encoder and inverse-STFT (Vocos) decoder, 50 tokens per second from 4096 codes
(0.6 kbps), EMA codebook with k-means init and dead-code reseeding. Judged on held-out languages against Codec2 and Opus in the same run.

    python -m vqjax.main --config=experiments/speech_codec_single.py --workdir=runs/speech_codec_single
    python -m vqjax.main --config=experiments/speech_codec_single.py:runlocal --workdir=/tmp/speech_single
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.audio_codec import default_config, runlocal


def get_config(arg: str | None = None):
    c = default_config()
    c.quantizer = "vq"
    c.quantizer_kwargs = dict(codebook_size=4096, codebook_learning="ema", codebook_init="kmeans",
                              dead_code_threshold=1.0)
    c.eval_levels = ()
    c.batch_size = 8
    c.num_train_steps = 3000
    c.eval_every_steps = 1000
    return runlocal(c) if parse_arg(arg) else c
