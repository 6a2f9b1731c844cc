"""The text side of the multimodal vocabulary: byte-level BPE trained with the ``tokenizers`` library, or any
``tokenizer.json`` given by path.

    tok = train_bpe(default_corpus() + captions, vocab_size=2048)    # a tokenizers.Tokenizer
    tok = load_text_tokenizer("path/to/tokenizer.json")

The default corpus is real English prose that ships with every CPython: the help topics of ``pydoc_data``
(about 465k characters), so training needs no download. Training is deterministic for the same texts and size.
"""

from __future__ import annotations

import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = ["train_bpe", "load_text_tokenizer", "default_corpus", "text_tokenizer_json"]


def default_corpus() -> list[str]:
    """Paragraphs of the Python help topics bundled with CPython (``pydoc_data.topics``), in a fixed order."""
    from pydoc_data.topics import topics  # heavy import, loaded only where needed

    paragraphs = []
    for name in sorted(topics):
        paragraphs.extend(p.strip() for p in topics[name].split("\n\n") if p.strip())
    return paragraphs


def train_bpe(texts, vocab_size: int = 4096, *, min_frequency: int = 2):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (an iterable of strings).

    Every byte is in the initial alphabet, so any text encodes (no unknown token); the tokenizer has no special
    tokens of its own (:class:`vqjax.lm.MultimodalVocab` adds them after the text ids).

    Raises:
      ValueError: ``vocab_size`` smaller than the 256 bytes, or no text.
    """

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"train_bpe: vocab_size must be an int >= 256 (the byte alphabet); got {vocab_size!r}")
    texts = [t for t in texts if isinstance(t, str) and t]
    if not texts:
        raise ValueError("train_bpe: texts must hold at least one non-empty string; got none")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_text_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file (or a folder holding one)."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_text_tokenizer: no tokenizer.json at {path!r}")
    return Tokenizer.from_file(path)


def text_tokenizer_json(tok) -> dict:
    """The tokenizer's full ``tokenizer.json`` content as a dict."""
    return json.loads(tok.to_str())
