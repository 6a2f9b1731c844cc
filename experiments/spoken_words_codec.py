"""The worked example, step 2 of 4: a speech tokenizer trained on a folder of your own audio files.

The folder is what step 1 writes (eSpeak NG speaking the ten digit words in 8 voices, 5 rates and 5 pitches: 2000
WAV files at 22050 Hz, each with its word in a .txt sidecar), read as ``files:`` data: resampled to 16 kHz, 90% of
the files (by a hash of their path) for training, the rest held out. A causal STFT codec, 50 frames a second, a
residual VQ of 4 levels of 256 codes (1.6 kbps).

    python -c "from vqjax.data.audio import write_spoken_words; write_spoken_words('runs/spoken_words/clips')"
    python -m vqjax.main --config=experiments/spoken_words_codec.py --workdir=runs/spoken_words/codec
    python -m vqjax.tokenize --tokenizer=runs/spoken_words/codec --split='train[:90%]' \\
        --out=runs/spoken_words/tokens_train
    python -m vqjax.tokenize --tokenizer=runs/spoken_words/codec --split='train[90%:]' \\
        --out=runs/spoken_words/tokens_test
    python -m vqjax.main --config=experiments/spoken_words_lm.py --workdir=runs/spoken_words/lm

(``make spoken-words`` runs the four steps.)
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.audio_codec import default_config, runlocal

CLIPS = "runs/spoken_words/clips"


def get_config(arg: str | None = None):
    c = default_config()
    c.dataset = f"files:{CLIPS}"
    c.files.sample_rate = 16000
    c.train_split, c.eval_split = "train[:90%]", "train[90%:]"
    c.crop_seconds = 0.5
    c.eval_seconds = 1.0
    c.model.channels = 128
    c.quantizer_kwargs = dict(num_levels=4, codebook_size=256, codebook_learning="ema", codebook_init="kmeans",
                              dead_code_threshold=1.0)
    c.eval_levels = ()
    c.anchors = ("codec2:1200", "opus:6")
    c.ood_splits = ()
    c.test_max_clips = 100
    c.batch_size = 16
    c.num_train_steps = 2000
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    return runlocal(c) if parse_arg(arg) else c
