"""Layer 7: the bridge to language models.

* :class:`MultimodalVocab` (:mod:`vqjax.lm.vocab`): one id space for text (byte-level BPE or any
  ``tokenizer.json``) and every modality tokenizer's codes, with special tokens, JSON save/load that refuses
  changed tokenizers, and a Hugging Face ``tokenizer.json`` export.
* :mod:`vqjax.lm.text`: BPE training on the bundled text.
"""

from vqjax.lm.text import default_corpus, load_text_tokenizer, train_bpe
from vqjax.lm.vocab import Codes, Invalid, Media, MultimodalVocab, Text, fingerprint

__all__ = ["MultimodalVocab", "Text", "Media", "Codes", "Invalid", "fingerprint", "train_bpe", "load_text_tokenizer",
           "default_corpus"]
