"""The document sources of the ``lm`` task share one shape, :class:`Corpus` (the digit captions of
:mod:`vqjax.train.tasks.lm`, the knowledge-graph text of :mod:`vqjax.train.tasks.lm_graph`)."""

from __future__ import annotations

from typing import Callable, NamedTuple

from vqjax.lm import MultimodalVocab

__all__ = ["Corpus"]


class Corpus(NamedTuple):
    """What a document source gives the LM task: its modality tokenizers, extra text for the BPE, the train and
    held-out documents for a vocabulary, the final generation-based evaluation, and run information."""

    modalities: dict
    text_corpus: list
    documents: Callable[[MultimodalVocab], tuple[list, list]]
    final: Callable[..., dict]
    info: dict
