"""Layer 7: the bridge to language models.

* :class:`MultimodalVocab` (:mod:`vqjax.lm.vocab`): one id space for text (byte-level BPE or any
  ``tokenizer.json``) and every modality tokenizer's codes, with special tokens, JSON save/load that refuses
  changed tokenizers, and a Hugging Face ``tokenizer.json`` export.
* :mod:`vqjax.lm.text`: BPE training on the bundled text.
* :mod:`vqjax.lm.streams`: interleaved documents packed into fixed-length rows (segment ids, restarting
  positions, per-modality loss weights, spans kept whole), fed through the grain pipeline.
* :class:`DecoderLM` (:mod:`vqjax.lm.model`): RoPE, RMSNorm, SwiGLU, grouped-query attention, KV cache, logically
  partitioned over ``data`` and ``model`` mesh axes.
* :func:`generate` (:mod:`vqjax.lm.generate`): seeded sampling (temperature, top-k, top-p) with a KV cache and
  constrained decoding, so every generated modality span decodes; :func:`span_validity` reports it.
"""

from vqjax.lm.generate import generate, span_validity
from vqjax.lm.model import LOGICAL_RULES, DecoderLM, init_cache
from vqjax.lm.streams import PackStats, pack_documents, packed_batches
from vqjax.lm.text import default_corpus, load_text_tokenizer, train_bpe
from vqjax.lm.vocab import Codes, Invalid, Media, MultimodalVocab, Text, fingerprint

__all__ = ["MultimodalVocab", "Text", "Media", "Codes", "Invalid", "fingerprint", "train_bpe", "load_text_tokenizer",
           "default_corpus", "PackStats", "pack_documents", "packed_batches", "DecoderLM", "LOGICAL_RULES",
           "init_cache", "generate", "span_validity"]
