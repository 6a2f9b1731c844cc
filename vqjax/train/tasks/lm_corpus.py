"""The document sources of the ``lm`` task share one shape, :class:`Corpus` (the digit captions of
:mod:`vqjax.train.tasks.lm`, the knowledge-graph text of :mod:`vqjax.train.tasks.lm_graph`, any mixture of token
shards and text in :mod:`vqjax.train.tasks.lm_shards`)."""

from __future__ import annotations

from typing import Callable, NamedTuple

from vqjax.lm import MultimodalVocab

__all__ = ["Corpus"]


class Corpus(NamedTuple):
    """What a document source gives the LM task: its modality tokenizers, extra text for the BPE, the train and
    held-out documents for a vocabulary, the final generation-based evaluation, and run information.

    A streamed source (token shards) gives ``train_stream(vocab, batch_size, process_index, process_count)``, a
    grain ``IterDataset`` of packed training batches, instead of training documents (``documents`` then returns
    no training documents), and ``max_lengths`` for its variable-length modalities."""

    modalities: dict
    text_corpus: list
    documents: Callable[[MultimodalVocab], tuple[list, list]]
    final: Callable[..., dict]
    info: dict
    train_stream: Callable | None = None
    max_lengths: dict | None = None
