"""The worked example, step 4 of 4: an LM that reads and writes speech and text in one stream, trained on the token
shards of step 3 (the spoken-word codec's codes of each clip, with its transcript) and a little plain text.

Each training clip becomes one document, its word then its speech span or its speech span then its word (drawn
per record), so the same model transcribes (speech → word) and speaks (word → speech). Judged on the held-out
clips: bits per token per kind, the fraction of generated speech spans that decode (written as WAV files under
``generated/speech``), and how often its transcript of a held-out clip is exactly the word spoken.

    python -m vqjax.main --config=experiments/spoken_words_lm.py --workdir=runs/spoken_words/lm

See ``experiments/spoken_words_codec.py`` for steps 1 to 3.
"""

from vqjax.train.config import parse_arg
from vqjax.train.tasks.lm import default_config, runlocal

TOKENS = "runs/spoken_words"


def get_config(arg: str | None = None):
    c = default_config()
    c.documents = "shards"
    c.corpus = {"speech": dict(shards=f"{TOKENS}/tokens_train", eval_shards=f"{TOKENS}/tokens_test", template="both",
                               weight=1.0),
                "prose": dict(text="", weight=0.1, eval_fraction=0.02)}
    c.weights = {"text": 1.0, "speech": 1.0}
    c.text_vocab_size = 512
    c.seq_len = 256
    c.batch_size = 16
    c.eval_batch_size = 16
    c.model.dim, c.model.num_layers, c.model.num_heads, c.model.num_kv_heads, c.model.mlp_dim = 128, 3, 4, 2, 384
    c.max_eval_documents = 200
    c.generation.num_examples = 100
    c.num_train_steps = 1200
    c.eval_every_steps = 300
    c.optimizer.learning_rate = 2e-3
    return runlocal(c) if parse_arg(arg) else c
