"""One vocabulary for text and every modality's codes: :class:`MultimodalVocab`.

    vocab = MultimodalVocab.build(text="tokenizer.json", modalities={"image": Tokenizer.load("runs/mnist_vq")})
    ids = vocab.encode(["a handwritten seven", ("image", digit)])      # int32: BOS, text, <begin_image>, 49 codes,
    segments = vocab.decode(ids)                                       #        <end_image>, EOS
    vocab.range("image"), vocab.size, vocab.save("vocab.json"), vocab.export_hf("hf/")

Id layout (contiguous, in this order)::

    [0, T)                      the text tokenizer's own ids (unchanged, so its tokenizer.json keeps working)
    T, T+1, T+2                 PAD, BOS, EOS
    T+3+2i, T+4+2i              begin and end of modality i (in the order the modalities were given)
    range(name_i)               modality i's codes: id = start_i + code, code in [0, tokenizer.vocab_size)

so ids of different modalities can never collide. A modality span is ``begin``, exactly ``prod(codes_shape)``
codes of that modality (the example's codes in C order), then ``end``; :meth:`MultimodalVocab.decode` refuses any
other span (or, with ``strict=False``, returns it as :class:`Invalid`). A tokenizer whose codes have a variable
leading axis (``codes_shape = (None, *frame)``: audio frames, time-series positions) has variable-length spans:
``begin``, a whole number ``n`` of frames (``1 <= n <= max_lengths[name]``, each ``prod(frame)`` codes), ``end``;
a tokenizer that states its own bounds (``length_range = (lo, hi)``: a 1D image tokenizer's token range) allows
``lo <= n <= hi`` (``max_lengths`` may lower ``hi``, never raise it), so every span decodes. Text never produces special or code ids:
the text tokenizer encodes it alone. (The exported Hugging Face tokenizer, whose added tokens are matched in raw
text, would turn the literal string ``<|image_5|>`` into that code's id; vqjax's own ``encode`` does not.)

Segments: a ``str`` or :class:`Text` is text; ``(name, payload)`` or :class:`Media` is an example of modality
``name`` (an image array ``[H, W, C]`` or ``[H, W]``, a node id, ...) that the modality's tokenizer encodes;
:class:`Codes` carries codes already computed (shape ``codes_shape``). ``decode`` gives :class:`Text` and
:class:`Media` (with the decoded ``data`` and the ``codes``).

``save`` writes one JSON file with the text tokenizer, the layout and each modality tokenizer's fingerprint and
path; ``load`` re-opens the tokenizers (from their paths, or as given) and refuses one whose fingerprint, vocab
size or codes shape changed. ``save_pretrained(dir)`` writes a shareable folder (``vocab.json``, each tokenizer in
``tokenizers/<name>/`` or named by its hub repository, a ``README.md``), and ``from_pretrained(name_or_dir)``
opens one from a folder or a model hub, resolving each tokenizer the same way (:mod:`vqjax.tokenizers.hub`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as TextTokenizer

from vqjax.lm.text import default_corpus, load_text_tokenizer, text_tokenizer_json, train_bpe
from vqjax.tokenizers import Tokenizer
from vqjax.tokenizers.base import fingerprint
from vqjax.tokenizers.hub import CARD_FILE, resolve
from vqjax.tokenizers.safe import ArtifactError, Limits, read_json

__all__ = ["VOCAB_FORMAT", "Codes", "Invalid", "Media", "MultimodalVocab", "Text", "fingerprint"]

VOCAB_FORMAT = 1
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SPECIALS = ("pad", "bos", "eos")


@dataclasses.dataclass(frozen=True)
class Text:
    """A text segment."""
    text: str


@dataclasses.dataclass(frozen=True, eq=False)
class Media:
    """An example of modality ``modality``: ``data`` is what its tokenizer encodes (input) or decoded (output);
    ``codes`` are its codes (``codes_shape``) when known."""

    modality: str
    data: Any
    codes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Codes:
    """Pre-computed codes of one example of ``modality``: int array of the tokenizer's ``codes_shape``."""
    modality: str
    codes: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Invalid:
    """A malformed modality span met by ``decode(..., strict=False)``: its ids, where it starts, and why."""
    modality: str | None
    ids: np.ndarray
    start: int
    reason: str


@dataclasses.dataclass(frozen=True)
class _Modality:
    name: str
    tokenizer: Any
    start: int
    vocab_size: int
    codes_shape: tuple[int | None, ...]
    begin: int
    end: int
    max_frames: int | None = None             # variable-length spans: at most this many frames
    min_frames: int = 1                       # ... and at least this many

    @property
    def stop(self) -> int:
        return self.start + self.vocab_size

    @property
    def frame(self) -> int:
        """Codes per step of the variable axis (the whole span for a fixed shape)."""
        return int(math.prod(self.codes_shape[1:])) if self.variable else self.span

    @property
    def variable(self) -> bool:
        return self.codes_shape[0] is None

    @property
    def min_span(self) -> int:
        """The fewest codes in a span (``span`` for a fixed-length one)."""
        return self.min_frames * self.frame if self.variable else self.span

    @property
    def span(self) -> int:
        """Codes in a span (the most, for a variable-length one)."""
        if self.variable:
            return int(self.max_frames) * int(math.prod(self.codes_shape[1:]))
        return int(math.prod(self.codes_shape))


class MultimodalVocab:
    """Text ids, special tokens and one contiguous id range per modality (see the module docstring).

    Build with :meth:`build` or :meth:`load`. Attributes: ``text_tokenizer`` (a ``tokenizers.Tokenizer``),
    ``text_size`` (T), ``pad_id``, ``bos_id``, ``eos_id``, ``size``, ``modalities`` (names in id order).
    """

    def __init__(self, text_tokenizer, modalities: Mapping[str, Any], max_lengths: Mapping[str, int] | None = None):
        self.text_tokenizer = text_tokenizer
        self.text_size = int(text_tokenizer.get_vocab_size(with_added_tokens=True))
        self.pad_id, self.bos_id, self.eos_id = self.text_size, self.text_size + 1, self.text_size + 2
        names = list(modalities)
        for name in names:
            if not isinstance(name, str) or not _NAME.match(name) or name == "text":
                raise ValueError(f"MultimodalVocab: modality names must match [a-z][a-z0-9_]* and not be 'text'; "
                                 f"got {name!r}")
        start = self.text_size + 3 + 2 * len(names)
        self._mods: dict[str, _Modality] = {}
        for i, name in enumerate(names):
            tok = modalities[name]
            for attr in ("vocab_size", "codes_shape", "encode", "decode"):
                if not hasattr(tok, attr):
                    raise TypeError(f"MultimodalVocab: modality {name!r} must be a tokenizer with vocab_size, "
                                    f"codes_shape, encode and decode (a vqjax.Tokenizer); got {type(tok).__name__}")
            size = int(tok.vocab_size)
            shape = tuple(None if s is None else int(s) for s in tok.codes_shape)
            fixed = shape[1:] if shape and shape[0] is None else shape
            if size < 1 or not shape or None in fixed or (fixed and min(fixed) < 1):
                raise ValueError(f"MultimodalVocab: modality {name!r} has vocab_size {size} and codes_shape {shape}; "
                                 "expected both positive (only the first axis may be None)")
            max_frames, min_frames = None, 1
            if shape[0] is None:
                bounds = getattr(tok, "length_range", None)
                max_frames = (max_lengths or {}).get(name)
                if bounds is not None:
                    min_frames = int(bounds[0])
                    if max_frames is None:
                        max_frames = int(bounds[1])
                    elif not isinstance(max_frames, bool) and isinstance(max_frames, (int, np.integer)) and \
                            not min_frames <= max_frames <= int(bounds[1]):
                        raise ValueError(f"MultimodalVocab: max_lengths[{name!r}] must lie in the tokenizer's length "
                                         f"range [{bounds[0]}, {bounds[1]}] (longer spans would not decode); got "
                                         f"{max_frames}")
                if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
                    raise ValueError(f"MultimodalVocab: modality {name!r} has variable-length codes {shape}; "
                                     f"max_lengths[{name!r}] must bound its frames (an int >= 1); got {max_frames!r}")
                max_frames = int(max_frames)
            begin = self.text_size + 3 + 2 * i
            self._mods[name] = _Modality(name, tok, start, size, shape, begin, begin + 1, max_frames, min_frames)
            start += size
        self.size = start

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, text=None, modalities: Mapping[str, Any] | None = None, *, text_vocab_size: int = 4096,
              text_corpus: Sequence[str] = (), max_lengths: Mapping[str, int] | None = None) -> MultimodalVocab:
        """A vocabulary of ``text`` and ``modalities``.

        Args:
          text: a ``tokenizers.Tokenizer``, a path to a ``tokenizer.json`` (or its folder), or None to train
            byte-level BPE of ``text_vocab_size`` on :func:`vqjax.lm.text.default_corpus` plus ``text_corpus``.
          modalities: ``{name: tokenizer}``: :class:`vqjax.Tokenizer` artifacts (image, audio, ...), the graph
            tokenizer, or anything with ``vocab_size``, ``codes_shape``, ``encode`` and ``decode``; ids follow
            this order.
          max_lengths: ``{name: frames}``, the longest span (in frames of the variable axis) of each modality whose
            codes have a variable length (``codes_shape[0] is None``).
        """
        if text is None:
            text = train_bpe(list(default_corpus()) + list(text_corpus), text_vocab_size)
        elif isinstance(text, (str, os.PathLike)):
            text = load_text_tokenizer(os.fspath(text))
        elif not hasattr(text, "encode") or not hasattr(text, "get_vocab_size"):
            raise TypeError(f"MultimodalVocab.build: text must be a tokenizers.Tokenizer, a tokenizer.json path or "
                            f"None; got {type(text).__name__}")
        return cls(text, dict(modalities or {}), max_lengths)

    # -- layout ------------------------------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self._mods)

    def _mod(self, name: str) -> _Modality:
        if name not in self._mods:
            raise KeyError(f"MultimodalVocab: unknown modality {name!r}; known: {list(self._mods)}")
        return self._mods[name]

    def tokenizer(self, name: str):
        return self._mod(name).tokenizer

    def range(self, name: str) -> tuple[int, int]:
        """``(start, stop)`` of modality ``name``'s codes (``'text'``: the text ids ``(0, T)``)."""
        if name == "text":
            return 0, self.text_size
        m = self._mod(name)
        return m.start, m.stop

    def begin_id(self, name: str) -> int:
        return self._mod(name).begin

    def end_id(self, name: str) -> int:
        return self._mod(name).end

    def span_length(self, name: str) -> int:
        """Codes between ``begin`` and ``end``: ``prod(codes_shape)`` (a variable-length modality: the most)."""
        return self._mod(name).span

    def frame_length(self, name: str) -> int:
        """Codes per frame of a variable-length modality (its span is a whole number of frames); the span
        length of a fixed one."""
        return self._mod(name).frame

    def variable(self, name: str) -> bool:
        """Whether modality ``name``'s spans vary in length (``codes_shape[0] is None``)."""
        return self._mod(name).variable

    def max_frames(self, name: str) -> int | None:
        """The most frames of a variable-length modality's span (None for a fixed one)."""
        return self._mod(name).max_frames

    def min_frames(self, name: str) -> int | None:
        """The fewest frames of a variable-length modality's span (None for a fixed one)."""
        m = self._mod(name)
        return m.min_frames if m.variable else None

    def min_span_length(self, name: str) -> int:
        """The fewest codes between ``begin`` and ``end`` (:meth:`span_length` for a fixed-length modality)."""
        return self._mod(name).min_span

    def codes_shape(self, name: str) -> tuple[int | None, ...]:
        return self._mod(name).codes_shape

    def valid_rows(self, name: str) -> np.ndarray | None:
        """int32 ``[n, span_length]``: the only code rows modality ``name``'s tokenizer decodes (its
        ``valid_codes()``, e.g. the graph tokenizer's node token rows), or None when every row decodes."""
        tok = self._mod(name).tokenizer
        if not hasattr(tok, "valid_codes"):
            return None
        rows = np.asarray(tok.valid_codes(), np.int32)
        return rows.reshape(rows.shape[0], -1)

    def token_names(self) -> list[str]:
        """The string of every non-text id, in id order (``<|pad|>``, ..., ``<|image_0|>``, ...)."""
        names = [f"<|{s}|>" for s in _SPECIALS]
        for m in self._mods.values():
            names += [f"<|begin_{m.name}|>", f"<|end_{m.name}|>"]
        for m in self._mods.values():
            names += [f"<|{m.name}_{i}|>" for i in range(m.vocab_size)]
        return names

    def kind_table(self) -> np.ndarray:
        """int32 ``[size]``: 0 for text ids, ``i + 1`` for modality ``i``'s codes and its begin/end tokens, -1 for
        PAD/BOS/EOS (per-modality loss weights index this)."""
        kinds = np.full(self.size, -1, np.int32)
        kinds[: self.text_size] = 0
        for i, m in enumerate(self._mods.values()):
            kinds[m.start:m.stop] = i + 1
            kinds[[m.begin, m.end]] = i + 1
        return kinds

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"MultimodalVocab.encode: text must be a str; got {type(text).__name__}")
        return np.asarray(self.text_tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_media(self, name: str, batch) -> np.ndarray:
        """Codes ``[B, *codes_shape]`` of a batch of modality ``name``'s inputs (one tokenizer call)."""
        return np.asarray(self._mod(name).tokenizer.encode(batch), np.int32)

    def codes_to_ids(self, name: str, codes) -> np.ndarray:
        """``begin, start + codes (C order), end`` for one example's codes (shape ``codes_shape``; a
        variable-length modality: ``[n, *frame]`` with ``1 <= n <= max_frames``)."""
        m = self._mod(name)
        codes = np.asarray(codes)
        shape_ok = (tuple(codes.shape[1:]) == m.codes_shape[1:] and codes.ndim == len(m.codes_shape) and
                    m.min_frames <= codes.shape[0] <= m.max_frames) if m.variable else tuple(codes.shape) == m.codes_shape
        if not np.issubdtype(codes.dtype, np.integer) or not shape_ok:
            want = (f"[{m.min_frames}..{m.max_frames}{''.join(f', {t}' for t in m.codes_shape[1:])}]" if m.variable
                    else str(list(m.codes_shape)))
            raise ValueError(f"MultimodalVocab.encode: codes of {name!r} must be integer {want}; got "
                             f"{codes.dtype} {list(codes.shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= m.vocab_size):
            raise ValueError(f"MultimodalVocab.encode: codes of {name!r} must lie in [0, {m.vocab_size}); got min "
                             f"{int(codes.min())}, max {int(codes.max())}")
        return np.concatenate([[m.begin], codes.reshape(-1).astype(np.int64) + m.start, [m.end]]).astype(np.int32)

    def _one_media(self, name: str, data) -> np.ndarray:
        return self.encode_media(name, (data if hasattr(data, "shape") else np.asarray(data))[None])[0]

    def encode(self, segments, *, bos: bool = True, eos: bool = True) -> np.ndarray:
        """int32 ids of a document: ``[BOS] + each segment's ids + [EOS]``.

        Args:
          segments: a sequence of ``str`` / :class:`Text`, ``(name, payload)`` / :class:`Media`, or :class:`Codes`
            (a lone ``str`` is one text segment).
        """
        if isinstance(segments, (str, Text, Media, Codes)):
            segments = [segments]
        parts = [np.asarray([self.bos_id], np.int32)] if bos else []
        for i, seg in enumerate(segments):
            if isinstance(seg, str):
                parts.append(self.encode_text(seg))
            elif isinstance(seg, Text):
                parts.append(self.encode_text(seg.text))
            elif isinstance(seg, Codes):
                parts.append(self.codes_to_ids(seg.modality, seg.codes))
            elif isinstance(seg, Media) or (isinstance(seg, tuple) and len(seg) == 2 and isinstance(seg[0], str)):
                name, data = (seg.modality, seg.data) if isinstance(seg, Media) else seg
                self._mod(name)
                parts.append(self.codes_to_ids(name, self._one_media(name, data)))
            else:
                raise TypeError(f"MultimodalVocab.encode: segment {i} must be a str, Text, (name, payload), Media or "
                                f"Codes; got {type(seg).__name__}")
        if eos:
            parts.append(np.asarray([self.eos_id], np.int32))
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros((0,), np.int32)

    # -- decoding ----------------------------------------------------------------------------------------------
    def spans(self, ids) -> list[tuple[str, int, int, str | None]]:
        """The document's pieces: ``(kind, start, stop, problem)`` with kind 'text', 'special' or a modality
        name, ``ids[start:stop]`` the piece (a modality piece includes its begin and end), ``problem`` None for
        a well-formed piece or why it is malformed."""
        ids = np.asarray(ids).reshape(-1)
        by_begin = {m.begin: m for m in self._mods.values()}
        out, i, n = [], 0, len(ids)
        while i < n:
            t = int(ids[i])
            if t < 0 or t >= self.size:
                out.append(("special", i, i + 1, f"id {t} outside [0, {self.size})"))
                i += 1
            elif t < self.text_size:
                j = i
                while j < n and 0 <= int(ids[j]) < self.text_size:
                    j += 1
                out.append(("text", i, j, None))
                i = j
            elif t in (self.pad_id, self.bos_id, self.eos_id):
                out.append(("special", i, i + 1, None))
                i += 1
            elif t in by_begin:
                m = by_begin[t]
                j = i + 1
                while j < n and j - i - 1 < m.span and m.start <= int(ids[j]) < m.stop:
                    j += 1
                count = j - i - 1
                whole = count == m.span or (m.variable and count >= m.min_span and count % m.frame == 0)
                if not whole:
                    what = "the ids ended" if j >= n else f"id {int(ids[j])} (not a {m.name} code)"
                    least = f"at least {m.min_span} and " if m.min_span > m.frame else ""
                    want = (f"a whole number of {m.frame}-code frames, {least}at most {m.span}" if m.variable
                            else m.span)
                    out.append((m.name, i, j, f"{m.name} span holds {count} codes (expected {want}) before {what}"))
                    i = j
                elif j >= n or int(ids[j]) != m.end:
                    out.append((m.name, i, j, f"{m.name} span of {m.span} codes is not followed by its end token"))
                    i = j
                else:
                    out.append((m.name, i, j + 1, None))
                    i = j + 1
            else:
                j = i + 1
                while j < n and self.text_size + 3 <= int(ids[j]) and int(ids[j]) not in by_begin:
                    j += 1
                out.append(("special", i, j, f"ids {ids[i:j].tolist()[:4]}... outside any span"))
                i = j
        return out

    def decode(self, ids, *, strict: bool = True) -> list:
        """Segments of ``ids``: :class:`Text` and :class:`Media` (decoded data and codes), PAD/BOS/EOS dropped.

        Raises:
          ValueError (``strict=True``): a malformed span (wrong length, foreign ids inside, missing end token, an
            end or code id outside a span); with ``strict=False`` it is returned as :class:`Invalid` instead.
        """
        ids = np.asarray(ids).reshape(-1)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"MultimodalVocab.decode: ids must be integers; got dtype {ids.dtype}")
        segments = []
        for kind, start, stop, problem in self.spans(ids):
            piece = ids[start:stop]
            if problem is not None:
                if strict:
                    raise ValueError(f"MultimodalVocab.decode: malformed piece at position {start}: {problem}")
                segments.append(Invalid(None if kind == "special" else kind, piece, start, problem))
            elif kind == "text":
                segments.append(Text(self.text_tokenizer.decode(piece.tolist(), skip_special_tokens=False)))
            elif kind != "special":
                m = self._mods[kind]
                shape = (-1, *m.codes_shape[1:]) if m.variable else m.codes_shape
                codes = (piece[1:-1].astype(np.int64) - m.start).astype(np.int32).reshape(shape)
                data = np.asarray(m.tokenizer.decode(codes[None]))[0]
                segments.append(Media(kind, data, codes))
        return segments

    # -- saving, loading, exporting ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        mods = []
        for m in self._mods.values():
            path = getattr(m.tokenizer, "path", None)
            mods.append({"name": m.name, "kind": getattr(m.tokenizer, "modality", None), "start": m.start,
                         "vocab_size": m.vocab_size, "codes_shape": list(m.codes_shape), "begin": m.begin,
                         "max_frames": m.max_frames,
                         "end": m.end, "path": None if path is None else os.path.abspath(path),
                         "fingerprint": fingerprint(m.tokenizer)})
        return {"format": VOCAB_FORMAT, "size": self.size, "text_size": self.text_size,
                "specials": {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id},
                "modalities": mods, "text_tokenizer": text_tokenizer_json(self.text_tokenizer)}

    def save(self, path: str) -> str:
        """Writes the vocabulary as one JSON file (atomically); returns its path."""
        path = os.path.expanduser(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            json.dump(self.to_json(), fh)
        os.replace(path + ".tmp", path)
        return path

    def save_pretrained(self, path: str, *, tokenizer_names: Mapping[str, str] | None = None) -> str:
        """A shareable folder: ``vocab.json``, each modality's tokenizer in ``tokenizers/<name>/``
        (:meth:`vqjax.Tokenizer.save_pretrained`) unless ``tokenizer_names`` gives its hub repository id (or a
        folder) to record instead, and a ``README.md``. Returns ``path``."""
        names = dict(tokenizer_names or {})
        unknown = sorted(set(names) - set(self.modalities))
        if unknown:
            raise ValueError(f"MultimodalVocab.save_pretrained: tokenizer_names has unknown modalities {unknown}; "
                             f"the vocabulary has {list(self.modalities)}")
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(path, exist_ok=True)
        data = self.to_json()
        for m in data["modalities"]:
            if m["name"] in names:
                m["source"] = names[m["name"]]
            else:
                m["source"] = f"tokenizers/{m['name']}"
                self.tokenizer(m["name"]).save_pretrained(os.path.join(path, m["source"]))
            m["path"] = None
        with open(os.path.join(path, "vocab.json.tmp"), "w") as fh:
            json.dump(data, fh)
        os.replace(os.path.join(path, "vocab.json.tmp"), os.path.join(path, "vocab.json"))
        rows = "\n".join(f"| {m['name']} | {m['kind']} | [{m['start']}, {m['start'] + m['vocab_size']}) | "
                         f"{m['codes_shape']} | `{m['source']}` |" for m in data["modalities"])
        with open(os.path.join(path, CARD_FILE), "w") as fh:
            fh.write(f"---\nlibrary_name: vqjax\ntags:\n- vqjax\n- multimodal\n---\n\n# vqjax multimodal "
                     f"vocabulary\n\nOne id space of {self.size} ids: byte-level BPE text ({self.text_size} ids) "
                     f"and each modality's codes.\n\n| modality | kind | ids | codes shape | tokenizer |\n"
                     f"| --- | --- | --- | --- | --- |\n{rows}\n\n```python\nfrom vqjax.lm import MultimodalVocab\n"
                     f"vocab = MultimodalVocab.from_pretrained(PATH_OR_REPO_ID)\n```\n")
        return path

    @classmethod
    def from_pretrained(cls, name_or_dir: str, *, revision: str | None = None,
                        local_files_only: bool | None = None, cache_dir: str | None = None) -> MultimodalVocab:
        """The vocabulary of :meth:`save_pretrained`'s folder, or of a hub repository (as
        :meth:`vqjax.Tokenizer.from_pretrained` resolves it); each tokenizer from its folder inside, or by its
        recorded hub name, checked by fingerprint.

        Raises:
          :class:`~vqjax.tokenizers.safe.ArtifactError`: a malformed ``vocab.json`` or a tokenizer source that
          leaves the folder; ValueError: a tokenizer that changed since the vocabulary was saved.
        """
        folder = resolve(name_or_dir, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir)
        file = os.path.join(folder, "vocab.json")
        saved = read_json(file, Limits(max_spec_bytes=256 << 20), what="vocab")
        toks = {}
        for m in saved.get("modalities", []):
            source = m.get("source")
            if not isinstance(source, str) or not source:
                raise ArtifactError(file, f"modalities.{m.get('name')}.source", f"must name the tokenizer's folder "
                                                                                  f"or hub repository; got {source!r}")
            inside = os.path.realpath(os.path.join(folder, source))
            if source.startswith("tokenizers/"):
                if os.path.commonpath([inside, os.path.realpath(folder)]) != os.path.realpath(folder):
                    raise ArtifactError(file, f"modalities.{m['name']}.source", f"{source!r} leaves the folder")
                toks[m["name"]] = Tokenizer.load(inside)
            else:
                toks[m["name"]] = Tokenizer.from_pretrained(source, local_files_only=local_files_only,
                                                            cache_dir=cache_dir)
        return cls.load(file, modalities=toks)

    @classmethod
    def load(cls, path: str, modalities: Mapping[str, Any] | None = None) -> MultimodalVocab:
        """The vocabulary saved at ``path``. Modality tokenizers come from ``modalities`` when given there, else
        from the paths recorded at save time (``vqjax.Tokenizer.load``).

        Raises:
          ValueError: a modality tokenizer whose fingerprint, vocab size or codes shape differs from the saved one
            (its codes would mean something else), or a layout that does not rebuild identically.
        """

        with open(os.path.expanduser(path)) as fh:
            saved = json.load(fh)
        if saved.get("format") != VOCAB_FORMAT:
            raise ValueError(f"MultimodalVocab.load: {path} has format {saved.get('format')!r}; expected "
                             f"{VOCAB_FORMAT}")
        given = dict(modalities or {})
        unknown = sorted(set(given) - {m["name"] for m in saved["modalities"]})
        if unknown:
            raise ValueError(f"MultimodalVocab.load: modalities {unknown} are not in the saved vocabulary "
                             f"({[m['name'] for m in saved['modalities']]})")
        toks = {}
        for m in saved["modalities"]:
            tok = given.get(m["name"])
            if tok is None:
                if m["path"] is None:
                    raise ValueError(f"MultimodalVocab.load: modality {m['name']!r} was saved without a path; pass "
                                     f"it in modalities=")

                tok = Tokenizer.load(m["path"])
            found = (int(tok.vocab_size), [None if s is None else int(s) for s in tok.codes_shape], fingerprint(tok))
            want = (m["vocab_size"], m["codes_shape"], m["fingerprint"])
            if found != want:
                what = ["vocab_size", "codes_shape", "fingerprint (weights or spec)"]
                changed = [w for w, a, b in zip(what, found, want) if a != b]
                raise ValueError(f"MultimodalVocab.load: the {m['name']!r} tokenizer changed since the vocabulary "
                                 f"was saved ({', '.join(changed)} differ); its codes would no longer mean the same")
            toks[m["name"]] = tok
        vocab = cls(TextTokenizer.from_str(json.dumps(saved["text_tokenizer"])), toks,
                    {m["name"]: m["max_frames"] for m in saved["modalities"] if m.get("max_frames")})
        if vocab.size != saved["size"] or vocab.text_size != saved["text_size"]:
            raise ValueError(f"MultimodalVocab.load: the layout rebuilt with size {vocab.size}; saved {saved['size']}")
        return vocab

    def export_hf(self, directory: str) -> str:
        """Writes ``directory/tokenizer.json``: the text tokenizer with every special and code token added at its
        vqjax id, so ``tokenizers.Tokenizer.from_file`` (or transformers' ``PreTrainedTokenizerFast``) gives the
        same ids for the same text and knows all ``size`` ids. Returns the file's path."""

        tok = TextTokenizer.from_str(self.text_tokenizer.to_str())
        names = self.token_names()
        tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
        for expect, name in ((self.text_size, names[0]), (self.size - 1, names[-1])):
            if tok.token_to_id(name) != expect:
                raise RuntimeError(f"MultimodalVocab.export_hf: {name} got id {tok.token_to_id(name)}, expected "
                                   f"{expect} (the text tokenizer already holds one of the added token strings?)")
        os.makedirs(directory, exist_ok=True)
        out = os.path.join(directory, "tokenizer.json")
        tok.save(out)
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as fh:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<|pad|>", "bos_token": "<|bos|>",
                       "eos_token": "<|eos|>", "model_max_length": 1 << 30}, fh, indent=2)
        return out

    def __repr__(self) -> str:
        mods = ", ".join(f"{m.name}=[{m.start}, {m.stop})" for m in self._mods.values())
        return f"MultimodalVocab(size={self.size}, text=[0, {self.text_size}), {mods})"
