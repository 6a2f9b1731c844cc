"""The document sources of the ``lm`` task share one shape, :class:`Corpus`, made by
:func:`vqjax.train.tasks.lm_shards.corpus_from_sets` for any mixture of token shards, links and text (and for the
recipes on top of it: the digit captions of :mod:`vqjax.train.tasks.lm`, the knowledge-graph text of
:mod:`vqjax.train.tasks.lm_graph`)."""

from __future__ import annotations

from typing import Callable, NamedTuple

from vqjax.lm import MultimodalVocab

__all__ = ["Corpus"]


class Corpus(NamedTuple):
    """What a document source gives the LM task: its modality tokenizers, text for the BPE, the held-out
    documents for a vocabulary, the final generation-based evaluation, run information, the training stream
    ``train_stream(vocab, batch_size, process_index, process_count)`` (a grain ``IterDataset`` of packed training
    batches, whose state the checkpoints keep) and ``max_lengths`` of its variable-length modalities."""

    modalities: dict
    text_corpus: list
    eval_documents: Callable[[MultimodalVocab], list]
    final: Callable[..., dict]
    info: dict
    train_stream: Callable
    max_lengths: dict
