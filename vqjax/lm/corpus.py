"""A mixture of token shards and text as a stream of packed LM training rows, built in grain, never all in memory.

    sets = [ShardSet("speech", "tokens/speech", template="both", weight=1.0),
            ShardSet("image", "tokens/digits", template="caption_codes", weight=0.5)]
    vocab = vocab_for(sets, text_vocab_size=1024)                 # tokenizers from the manifests
    stream = mixture_stream(vocab, sets, [TextSet(None, 0.2)], seq_len=256, batch_size=16, seed=0)
    it = iter(stream)                                             # a grain DatasetIterator: get_state/set_state
    batch = next(it)                                              # {'tokens', 'segment_ids', 'positions', 'weights'}

Each record of a :class:`ShardSet` (:class:`vqjax.data.tokens.TokenShards`) becomes one document by its template:
``caption_codes`` (the caption, then the codes' span), ``codes_caption`` (span, then caption), ``codes`` (the
span alone) or ``both`` (either order, drawn per record from the seed); a record without a caption takes one of its
label's captions (``label_captions``, drawn from the seed) or gives its span alone; a fraction ``uncond_fraction``
of the caption-first documents leave the caption out (for classifier-free guidance). A :class:`LinkSet` makes
documents of links between a shard set's records (``head key <tab> text <tab> tail key`` per line: a knowledge
graph's triples over its entities' tokens): ``[head's span] text [tail's span]``. A :class:`TextSet` gives one document per line of a text file (or per paragraph of the bundled text),
its lines split between training and evaluation by a hash of the line's number. Every source is shuffled (a new
order each epoch), repeated, sliced per process (process ``p`` of ``P`` reads every ``P``-th example), cut between
spans into pieces of at most ``seq_len`` ids (:func:`vqjax.lm.streams.split_document`), mixed by the sets'
weights (``grain.IterDataset.mix``), packed first-fit into rows of ``seq_len``
(``grain.experimental.FirstFitPackIterDataset``: segment ids and restarting positions) and batched; the loss
weights of :func:`vqjax.lm.streams.loss_weights` are computed per row. The iterator's state
(``get_state``/``set_state``, saved with orbax through ``grain.checkpoint``) resumes the stream exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import ClassVar

import grain
import numpy as np

from vqjax.data.tokens import TokenShards
from vqjax.lm.streams import loss_weights, split_document
from vqjax.lm.text import default_corpus
from vqjax.lm.vocab import Codes, MultimodalVocab
from vqjax.tokenizers import Tokenizer, fingerprint

__all__ = [
    "TEMPLATES",
    "LinkLines",
    "LinkSet",
    "ShardSet",
    "TextLines",
    "TextSet",
    "captions_and_lengths",
    "eval_documents",
    "mixture_stream",
    "open_shards",
    "record_caption",
    "record_document",
    "vocab_for",
]

TEMPLATES = ("caption_codes", "codes_caption", "codes", "both")


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """One set of token shards in the mixture.

    Attributes:
      modality: its name in the vocabulary (sets of one tokenizer share it; sets of different tokenizers may not).
      shards: the training shards' folder (``python -m vqjax.tokenize --out``).
      template: 'caption_codes', 'codes_caption', 'codes' or 'both'.
      weight: its sampling weight in the mixture.
      eval_shards: held-out shards of the same tokenizer (None: the set is not evaluated).
      label_captions: captions of each label (``label_captions[y]``: the captions to draw from for records of
        label ``y`` that have no caption of their own; empty: none).
      uncond_fraction: the fraction of caption-first documents that leave the caption out.
    """

    modality: str
    shards: str
    template: str = "both"
    weight: float = 1.0
    eval_shards: str | None = None
    label_captions: tuple[tuple[str, ...], ...] = ()
    uncond_fraction: float = 0.0

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"ShardSet {self.modality!r}: template must be one of {TEMPLATES}; got "
                             f"{self.template!r}")
        if not self.weight > 0:
            raise ValueError(f"ShardSet {self.modality!r}: weight must be > 0; got {self.weight!r}")
        if not 0 <= self.uncond_fraction < 1:
            raise ValueError(f"ShardSet {self.modality!r}: uncond_fraction must lie in [0, 1); got "
                             f"{self.uncond_fraction!r}")
        captions = tuple(tuple(c) for c in self.label_captions)
        if any(not c or not all(isinstance(t, str) and t for t in c) for c in captions):
            raise ValueError(f"ShardSet {self.modality!r}: label_captions must give each label a non-empty list of "
                             f"non-empty captions; got {self.label_captions!r}")
        object.__setattr__(self, "label_captions", captions)


@dataclasses.dataclass(frozen=True)
class LinkSet:
    """Links between the records of a token-shard set, one document each.

    Each non-empty line of ``links`` is ``head key <tab> text <tab> tail key`` (the keys of records in ``shards``)
    and becomes ``[head's span] text [tail's span]``: a knowledge graph's triples over its entities' NodePiece
    tokens, or "bought together" over items' semantic IDs.

    Attributes:
      modality: its name in the vocabulary (the shards' tokenizer).
      shards: the token shards holding every linked record (``python -m vqjax.tokenize``).
      links: the training links file.
      weight: its sampling weight in the mixture.
      eval_links: held-out links between the same records (None: the set is not evaluated).
    """

    modality: str
    shards: str
    links: str
    weight: float = 1.0
    eval_links: str | None = None
    eval_shards: ClassVar[None] = None              # held-out links, not held-out records
    template: ClassVar[str] = "links"

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"LinkSet {self.modality!r}: weight must be > 0; got {self.weight!r}")


@dataclasses.dataclass(frozen=True)
class TextSet:
    """Plain text in the mixture: one document per line of ``path`` (None: the paragraphs of the bundled text,
    :func:`vqjax.lm.text.default_corpus`), a fraction ``eval_fraction`` of the lines held out by a hash of their
    number."""

    path: str | None = None
    weight: float = 1.0
    eval_fraction: float = 0.05

    def __post_init__(self):
        if not self.weight > 0 or not 0 <= self.eval_fraction < 1:
            raise ValueError(f"TextSet: weight must be > 0 and eval_fraction in [0, 1); got {self.weight!r}, "
                             f"{self.eval_fraction!r}")


class TextLines(Sequence):
    """The non-empty lines of a text file as a random-access source (an index of line offsets is kept, the text
    is read on access), or the bundled paragraphs; ``held_out`` selects the evaluation part."""

    def __init__(self, path: str | None, *, eval_fraction: float, held_out: bool):
        self.path = path
        if path is None:
            lines = default_corpus()
            self._lines, offsets = lines, np.arange(len(lines))
        else:
            self._lines = None
            offsets = _line_offsets(path)
        keep = np.asarray([_fraction(f"{path}:{n}") < eval_fraction for n in range(len(offsets))], bool)
        self._offsets = offsets[keep] if held_out else offsets[~keep]

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> str:
        if not -len(self) <= i < len(self):
            raise IndexError(f"TextLines: index {i} out of range for {len(self)} lines")
        at = self._offsets[int(i)]
        if self._lines is not None:
            return self._lines[int(at)]
        with open(self.path, "rb") as fh:
            fh.seek(int(at))
            return fh.readline().decode("utf-8", errors="replace").strip()


def _line_offsets(path: str) -> np.ndarray:
    """int64 byte offsets of the non-empty lines of ``path``."""
    starts, pos = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                starts.append(pos)
            pos += len(line)
    return np.asarray(starts, np.int64)


class LinkLines(Sequence):
    """The links of a :class:`LinkSet` file as a random-access source of ``(head index, text, tail index)`` (the
    records' indices in ``shards``); every line is checked once on opening (three tab-separated fields, known
    keys), and read again on access."""

    def __init__(self, path: str, shards: TokenShards):
        self.path = path
        self._index = {str(shards[i]["key"]): i for i in range(len(shards))}
        starts, pos, n = [], 0, 0
        with open(path, "rb") as fh:                   # one pass: offsets, and every line checked
            for line in fh:
                if line.strip():
                    self._parse(line, n)
                    starts.append(pos)
                    n += 1
                pos += len(line)
        self._offsets = np.asarray(starts, np.int64)

    def _parse(self, raw: bytes, i: int) -> tuple[int, str, int]:
        line = raw.decode("utf-8").rstrip("\r\n")
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{self.path}: link {i} must be 'head key<TAB>text<TAB>tail key'; got {line!r}")
        head, text, tail = fields
        for key in (head, tail):
            if key not in self._index:
                raise ValueError(f"{self.path}: link {i} names key {key!r}, which no record of the shards has")
        return self._index[head], text, self._index[tail]

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> tuple[int, str, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"LinkLines: index {i} out of range for {len(self)} links")
        with open(self.path, "rb") as fh:
            fh.seek(int(self._offsets[int(i)]))
            return self._parse(fh.readline(), int(i) % len(self))


def _fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / float(16 ** 13)


def record_caption(s: ShardSet, record: Mapping, rng: np.random.Generator) -> str | None:
    """The record's caption, else one of its label's ``s.label_captions`` drawn with ``rng``, else None."""
    caption = record.get("caption")
    if caption:
        return caption
    label = record.get("label")
    if s.label_captions and label is not None and 0 <= int(label) < len(s.label_captions):
        options = s.label_captions[int(label)]
        return options[int(rng.integers(len(options)))]
    return None


def record_document(vocab: MultimodalVocab, s: ShardSet, record: Mapping, *, seed: int, index: int) -> np.ndarray:
    """The ids of one record of set ``s`` under its template; the order ('both'), the label caption and the
    unconditional drop are drawn from ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])
    order = int(rng.integers(2))
    caption = record_caption(s, record, rng)
    span = Codes(s.modality, np.asarray(record["codes"]))
    if not caption or s.template == "codes":
        return vocab.encode([span])
    first = s.template == "caption_codes" or (s.template == "both" and order == 0)
    if first and s.uncond_fraction and rng.random() < s.uncond_fraction:
        return vocab.encode([span])
    return vocab.encode([caption, span] if first else [span, caption])


def link_document(vocab: MultimodalVocab, modality: str, shards: TokenShards, link: tuple[int, str, int]
                  ) -> np.ndarray:
    """The ids of one link: the head record's span, the link's text, the tail record's span."""
    head, text, tail = link
    return vocab.encode([Codes(modality, np.asarray(shards[head]["codes"])), text,
                         Codes(modality, np.asarray(shards[tail]["codes"]))])


def open_shards(sets: Sequence[ShardSet | LinkSet], *, verify: bool = False) -> dict[str, tuple[TokenShards, object]]:
    """``{modality: (train shards, tokenizer)}``, the tokenizers loaded from the manifests' paths and checked by
    fingerprint; refuses sets of different tokenizers under one modality name."""
    out: dict[str, tuple[TokenShards, object]] = {}
    for s in sets:
        shards = TokenShards(s.shards, verify=verify)
        tok = Tokenizer.load(shards.tokenizer["path"])
        shards.check_tokenizer(tok, fingerprint(tok), name=f"the tokenizer at {shards.tokenizer['path']!r}")
        if s.eval_shards is not None:
            TokenShards(s.eval_shards, verify=verify).check_tokenizer(tok, fingerprint(tok),
                                                                      name=f"set {s.modality!r}'s tokenizer")
        if s.modality in out and out[s.modality][0].tokenizer["fingerprint"] != shards.tokenizer["fingerprint"]:
            raise ValueError(f"two shard sets named {s.modality!r} come from different tokenizers "
                             f"({out[s.modality][0].folder}, {shards.folder}); give them different modality names")
        out.setdefault(s.modality, (shards, tok))
    return out


def captions_and_lengths(sets: Sequence[ShardSet | LinkSet], *, per_folder: int = 2000
                         ) -> tuple[list[str], dict[str, int]]:
    """Text for the BPE, up to ``per_folder`` pieces per file (evenly spaced): the captions of each set's shard
    folders, its label captions, its links' texts; and each modality's longest record in their manifests (the
    bound of its variable-length spans)."""
    captions: list[str] = []
    lengths: dict[str, int] = {}
    for s in sets:
        if isinstance(s, LinkSet):
            for path in filter(None, (s.links, s.eval_links)):
                links = LinkLines(path, TokenShards(s.shards))
                take = np.linspace(0, len(links) - 1, min(len(links), per_folder)).round().astype(int)
                captions += [links[int(i)][1].strip() for i in take if len(links)]
        else:
            captions += [c for options in s.label_captions for c in options]
        for folder in filter(None, (s.shards, s.eval_shards)):
            shards = TokenShards(folder)
            longest = shards.manifest.get("max_length")
            if longest is not None:
                lengths[s.modality] = max(lengths.get(s.modality, 0), int(longest))
            take = np.linspace(0, len(shards) - 1, min(len(shards), per_folder)).round().astype(int)
            captions += [c for c in (shards[int(i)].get("caption") for i in take) if c]
    return captions, lengths


def vocab_for(sets: Sequence[ShardSet | LinkSet], *, text=None, text_vocab_size: int = 4096,
              text_corpus: Sequence[str] = (), max_captions: int = 2000) -> MultimodalVocab:
    """A :class:`MultimodalVocab` of the sets' tokenizers (variable-length ones bounded by the longest record in
    their manifests), with byte-level BPE trained on the bundled text, ``text_corpus`` and up to
    ``max_captions`` captions of each shard folder (when ``text`` is None; :func:`captions_and_lengths`)."""
    opened = open_shards(sets)
    captions, lengths = captions_and_lengths(sets, per_folder=max_captions)
    return MultimodalVocab.build(text=text, modalities={m: tok for m, (_, tok) in opened.items()},
                                 text_vocab_size=text_vocab_size, text_corpus=list(text_corpus) + captions,
                                 max_lengths=lengths)


class _Pieces(grain.experimental.FlatMapTransform):
    """A document cut between spans into pieces of at most ``seq_len`` ids, each ``{'tokens': ids}``."""

    def __init__(self, vocab, seq_len: int, max_fan_out: int):
        self.vocab, self.seq_len, self.max_fan_out = vocab, seq_len, max_fan_out

    def flat_map(self, element):
        return [{"tokens": p} for p in split_document(element, self.seq_len, self.vocab)]


def _link_maker(vocab, modality, shards, link, index):
    return link_document(vocab, modality, shards, link)


def _record_maker(vocab, s, seed, record, index):
    return record_document(vocab, s, record, seed=seed, index=index)


def _documents(vocab, source_ds: grain.MapDataset, make, *, seed: int, process_index: int, process_count: int,
               seq_len: int, max_fan_out: int, read_threads: int) -> grain.IterDataset:
    ds = source_ds.shuffle(seed=seed).repeat(None)[process_index::process_count]
    ds = ds.map_with_index(lambda i, example: make(example, i))
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=8 * max(1, read_threads))
    return grain.experimental.FlatMapIterDataset(ds.to_iter_dataset(options), _Pieces(vocab, seq_len, max_fan_out))


def mixture_stream(vocab: MultimodalVocab, sets: Sequence[ShardSet | LinkSet], texts: Sequence[TextSet] = (), *,
                   seq_len: int, batch_size: int, seed: int, weights: Mapping[str, float] | None = None,
                   process_index: int = 0, process_count: int = 1, packing_bins: int | None = None,
                   read_threads: int = 2) -> grain.IterDataset:
    """The training rows of the mixture: a grain ``IterDataset`` of batches ``{'tokens', 'segment_ids',
    'positions'}`` int32 and ``'weights'`` float32, each ``[batch_size, seq_len]`` (``batch_size``: this process's
    share of the global batch).

    Args:
      vocab: the vocabulary (:func:`vocab_for`).
      sets: the token-shard sets.
      texts: plain-text sets.
      seq_len: ids per row.
      batch_size: rows per batch of this process.
      seed: shuffling, template orders and packing.
      weights: loss weight per kind (``{'text': w, modality: w}``; missing kinds weigh 1).
      process_index, process_count: this process's slice of every source.
      packing_bins: rows packed at once (default ``batch_size``).
      read_threads: grain threads reading and building documents ahead of the trainer (0: none, and no
        prefetching of the packed batches either).
    """
    if not sets and not texts:
        raise ValueError("mixture_stream: the mixture needs at least one shard set or text set")
    names = ("text",) + vocab.modalities
    unknown = sorted(set(weights or {}) - set(names))
    if unknown:
        raise ValueError(f"mixture_stream: weights has unknown kinds {unknown}; known: {list(names)}")
    kind_weights = np.asarray([float((weights or {}).get(n, 1.0)) for n in names], np.float32)
    for s in sets:
        need = vocab.span_length(s.modality) + 4 if s.modality in vocab.modalities else 0
        if need > seq_len:
            raise ValueError(f"mixture_stream: seq_len ({seq_len}) cannot hold a {s.modality!r} span of up to "
                             f"{vocab.span_length(s.modality)} codes with BOS, begin, end and EOS: raise seq_len to "
                             f">= {need}")
    fan = -(-max([vocab.span_length(m) + 2 for m in vocab.modalities] + [seq_len]) // max(1, seq_len - 2)) + 8
    streams, mix = [], []
    for k, s in enumerate(sets):
        shards = TokenShards(s.shards)
        if s.modality not in vocab.modalities:
            raise ValueError(f"mixture_stream: set {s.modality!r} is not a modality of the vocabulary "
                             f"{list(vocab.modalities)}")
        if isinstance(s, LinkSet):
            source = LinkLines(s.links, shards)
            make = functools.partial(_link_maker, vocab, s.modality, shards)
        else:
            source = shards
            make = functools.partial(_record_maker, vocab, s, seed + 101 * k)
        streams.append(_documents(vocab, grain.MapDataset.source(source), make, seed=seed + 101 * k,
                                  process_index=process_index, process_count=process_count, seq_len=seq_len,
                                  max_fan_out=fan, read_threads=read_threads))
        mix.append(float(s.weight))
    for k, t in enumerate(texts):
        lines = TextLines(t.path, eval_fraction=t.eval_fraction, held_out=False)
        make = lambda line, i: vocab.encode([line])
        streams.append(_documents(vocab, grain.MapDataset.source(lines), make, seed=seed + 7919 * (k + 1),
                                  process_index=process_index, process_count=process_count, seq_len=seq_len,
                                  max_fan_out=fan, read_threads=read_threads))
        mix.append(float(t.weight))
    ds = streams[0] if len(streams) == 1 else grain.IterDataset.mix(streams, mix)
    ds = grain.experimental.FirstFitPackIterDataset(ds, length_struct={"tokens": seq_len},
                                                    num_packing_bins=packing_bins or batch_size, seed=seed,
                                                    shuffle_bins=False)
    kinds = vocab.kind_table()

    def finish(row):
        segment_ids = np.asarray(row["tokens_segment_ids"], np.int32)
        toks = np.where(segment_ids > 0, row["tokens"], vocab.pad_id).astype(np.int32)
        return {"tokens": toks, "segment_ids": segment_ids,
                "positions": np.asarray(row["tokens_positions"], np.int32),
                "weights": loss_weights(toks[None], segment_ids[None], kinds, kind_weights, vocab)[0]}

    ds = ds.map(finish).batch(batch_size, drop_remainder=True)
    return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=2) if read_threads else ds


def eval_documents(vocab: MultimodalVocab, sets: Sequence[ShardSet | LinkSet], texts: Sequence[TextSet] = (), *,
                   max_documents: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """The held-out documents: every record of each set's ``eval_shards`` or every link of its ``eval_links`` (up
    to ``max_documents`` per set, evenly spaced) and each text set's held-out lines, in order (templates' draws
    from ``seed``)."""
    docs = []
    for s in sets:
        if isinstance(s, LinkSet):
            if s.eval_links is None:
                continue
            shards = TokenShards(s.shards)
            links = LinkLines(s.eval_links, shards)
            n = len(links) if max_documents is None else min(len(links), max_documents)
            docs.extend(link_document(vocab, s.modality, shards, links[int(i)])
                        for i in np.linspace(0, len(links) - 1, n).round().astype(int) if len(links))
            continue
        if s.eval_shards is None:
            continue
        shards = TokenShards(s.eval_shards)
        n = len(shards) if max_documents is None else min(len(shards), max_documents)
        for i in np.linspace(0, len(shards) - 1, n).round().astype(int):
            docs.append(record_document(vocab, s, shards[int(i)], seed=seed, index=int(i)))
    for t in texts:
        lines = TextLines(t.path, eval_fraction=t.eval_fraction, held_out=True)
        n = len(lines) if max_documents is None else min(len(lines), max_documents)
        docs.extend(vocab.encode([lines[int(i)]]) for i in np.linspace(0, len(lines) - 1, n).round().astype(int)
                    if len(lines))
    return docs
