"""Interleaved documents into packed fixed-length training rows.

A document is the ids of :meth:`vqjax.lm.MultimodalVocab.encode` (BOS, text and media spans in any order, EOS).
:func:`pack_documents` places whole documents into rows of ``seq_len`` ids (best fit among the open rows, in
document order), so a row holds several documents told apart by ``segment_ids`` (1, 2, ... within the row; 0 is
padding) with ``positions`` restarting at 0 for each. A document longer than a row is cut between spans, never
inside a modality span (its ``begin ... end``) unless ``split_spans=True``; each piece then packs as a document of
its own. A single span longer than a row is refused unless ``split_spans=True``.

``weights[t]`` is the loss weight of predicting ``tokens[t + 1]`` from ``tokens[: t + 1]``: the weight of the
target's kind (text, or the modality its code or begin/end token belongs to; EOS counts as text), and 0 where the
target is padding, starts another document, or is BOS/PAD. :class:`PackStats` reports the packing efficiency
(fraction of non-pad ids).

:func:`packed_batches` feeds the rows through the grain pipeline of :func:`vqjax.data.pipeline.train_batches`
(one global shuffle per epoch, each process's contiguous slice, resumable at a step).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np

from vqjax.data.pipeline import eval_batches, train_batches

__all__ = ["PackStats", "pack_documents", "loss_weights", "cut_points", "split_document", "packed_batches", "packed_eval_batches"]


@dataclasses.dataclass(frozen=True)
class PackStats:
    """``rows``, ``documents`` (pieces after cutting), ``cut`` (documents that were cut), ``tokens`` (non-pad ids)
    and ``efficiency`` = tokens / (rows * seq_len)."""

    rows: int
    documents: int
    cut: int
    tokens: int
    efficiency: float


def cut_points(ids: np.ndarray, vocab) -> np.ndarray:
    """bool ``[len(ids) + 1]``: where the document may be cut (True at 0 and at the end; False inside a modality
    span, from just after its begin token to just before its end token, both included)."""
    ok = np.ones(len(ids) + 1, bool)
    for kind, start, stop, _ in vocab.spans(ids):
        if kind not in ("text", "special"):
            ok[start + 1:stop] = False
    return ok


def split_document(ids: np.ndarray, seq_len: int, vocab, split_spans: bool = False) -> list[np.ndarray]:
    """``ids`` cut into pieces of at most ``seq_len`` ids, each cut at the last place allowed before the limit
    (between spans; anywhere with ``split_spans``). Raises ``ValueError`` for a span longer than ``seq_len``
    without ``split_spans``."""
    ids = np.asarray(ids)
    if len(ids) <= seq_len:
        return [ids]
    ok = np.ones(len(ids) + 1, bool) if split_spans else cut_points(ids, vocab)
    pieces, start = [], 0
    while len(ids) - start > seq_len:
        allowed = np.nonzero(ok[start + 1:start + seq_len + 1])[0]
        if not allowed.size:
            raise ValueError(f"pack_documents: a modality span at position {start} is longer than seq_len = "
                             f"{seq_len} and cannot be cut; raise seq_len or pass split_spans=True")
        cut = start + 1 + int(allowed[-1])
        pieces.append(ids[start:cut])
        start = cut
    pieces.append(ids[start:])
    return pieces


def loss_weights(tokens: np.ndarray, segment_ids: np.ndarray, kinds: np.ndarray, kind_weights: np.ndarray,
                 vocab) -> np.ndarray:
    """float32 weights of each next-token target (see the module docstring); ``kinds`` is
    ``vocab.kind_table()`` and ``kind_weights[k]`` the weight of kind ``k`` (0 text, ``i + 1`` modality ``i``)."""
    nxt = np.roll(tokens, -1, axis=-1)
    same = (np.roll(segment_ids, -1, axis=-1) == segment_ids) & (segment_ids > 0)
    same[..., -1] = False
    kind = kinds[nxt]
    w = np.where(kind >= 0, kind_weights[np.maximum(kind, 0)], 0.0)
    w = np.where(nxt == vocab.eos_id, kind_weights[0], w)
    return np.where(same, w, 0.0).astype(np.float32)


def pack_documents(documents: Sequence[np.ndarray], seq_len: int, vocab, *,
                   weights: Mapping[str, float] | None = None, split_spans: bool = False, open_rows: int = 64
                   ) -> tuple[dict[str, np.ndarray], PackStats]:
    """Packs ``documents`` (int id arrays) into rows of ``seq_len``.

    Args:
      documents: ids of each document (:meth:`MultimodalVocab.encode`).
      seq_len: ids per row.
      vocab: the :class:`~vqjax.lm.MultimodalVocab` (span boundaries, kinds, PAD).
      weights: loss weight per kind, ``{'text': w, modality: w}``; missing kinds weigh 1.
      split_spans: allow cuts inside modality spans.
      open_rows: rows still open for best-fit placement (older rows are closed as they fall behind).

    Returns:
      ``({'tokens', 'segment_ids', 'positions'} int32 and 'weights' float32, each [rows, seq_len]), PackStats``.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"pack_documents: seq_len must be an int >= 2; got {seq_len!r}")
    weights = dict(weights or {})
    names = ("text",) + vocab.modalities
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"pack_documents: weights has unknown kinds {unknown}; known: {list(names)}")
    kind_weights = np.asarray([float(weights.get(n, 1.0)) for n in names], np.float32)
    pieces, cut = [], 0
    for i, doc in enumerate(documents):
        doc = np.asarray(doc)
        if doc.ndim != 1 or not np.issubdtype(doc.dtype, np.integer) or not doc.size:
            raise ValueError(f"pack_documents: document {i} must be a non-empty 1-D integer array; got "
                             f"{doc.dtype} {doc.shape}")
        if doc.min() < 0 or doc.max() >= vocab.size:
            raise ValueError(f"pack_documents: document {i} holds ids outside [0, {vocab.size})")
        parts = split_document(doc.astype(np.int32), seq_len, vocab, split_spans)
        cut += len(parts) > 1
        pieces.extend(parts)

    rows: list[list[np.ndarray]] = []
    free: list[int] = []
    first_open = 0
    for piece in pieces:
        best = -1
        for r in range(first_open, len(rows)):
            if free[r] >= len(piece) and (best < 0 or free[r] < free[best]):
                best = r
        if best < 0:
            rows.append([])
            free.append(seq_len)
            best = len(rows) - 1
            first_open = max(first_open, len(rows) - open_rows)
        rows[best].append(piece)
        free[best] -= len(piece)

    n = len(rows)
    tokens = np.full((n, seq_len), vocab.pad_id, np.int32)
    segment_ids = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    for r, row in enumerate(rows):
        at = 0
        for s, piece in enumerate(row):
            tokens[r, at:at + len(piece)] = piece
            segment_ids[r, at:at + len(piece)] = s + 1
            positions[r, at:at + len(piece)] = np.arange(len(piece))
            at += len(piece)
    w = loss_weights(tokens, segment_ids, vocab.kind_table(), kind_weights, vocab)
    used = int((segment_ids > 0).sum())
    stats = PackStats(n, len(pieces), cut, used, used / max(1, n * seq_len))
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions, "weights": w}, stats


def packed_batches(rows: Mapping[str, np.ndarray], *, batch_size: int, seed: int, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Endless shuffled batches of packed rows through the grain pipeline (:func:`vqjax.data.train_batches`):
    ``{'tokens', 'segment_ids', 'positions', 'weights'}`` of ``[batch_size // process_count, seq_len]``."""

    count = len(rows["tokens"])
    if count < batch_size:
        raise ValueError(f"packed_batches: {count} packed rows cannot fill a batch of {batch_size}")
    source = _Rows(rows, count)
    return train_batches(source, batch_size=batch_size, seed=seed, start_step=start_step, process_index=process_index,
                         process_count=process_count, transform=lambda ex: ex)


def packed_eval_batches(rows: Mapping[str, np.ndarray], *, batch_size: int, process_index: int = 0,
                        process_count: int = 1) -> Iterator[dict]:
    """One pass over the packed rows in order, in batches of ``batch_size // process_count`` rows per process
    (:func:`vqjax.data.pipeline.eval_batches`); the last batch is padded with rows whose ``weights`` are 0."""

    for batch in eval_batches(_Rows(rows, len(rows["tokens"])), batch_size=batch_size, process_index=process_index,
                              process_count=process_count, transform=lambda ex: ex):
        mask = batch.pop("mask")
        yield {**batch, "weights": batch["weights"] * mask[:, None]}


@dataclasses.dataclass(frozen=True)
class _Rows(Sequence):
    arrays: Mapping[str, np.ndarray]
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.arrays.items()}
