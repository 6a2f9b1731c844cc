"""The tokenizer artifact's protocol: spec, registry by modality, load and export, input and code checks.

    tok = vqjax.Tokenizer.load("runs/mnist_vq")   # a training workdir, or a folder written by tok.export(dir)
    codes = tok.encode(batch)                     # checked input -> int32 [B, *tok.codes_shape]
    batch = tok.decode(codes)                     # codes in [0, tok.vocab_size) -> [B, *input shape]
    tok.modality, tok.vocab_size, tok.codes_shape, tok.tokens_per_second
    tok.export("artifacts/mnist_vq")              # spec.json + model.safetensors, loadable without vqjax.train

A tokenizer folder holds ``spec.json``, a small self-describing spec::

    {"format_version": 2, "modality": "image", "model": {"name": "image_tokenizer", "kwargs": {...}},
     "input": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]},
     "codes_shape": [7, 7], "vocab_size": 1024, "tokens_per_second": null, "sample_rate": null,
     "frame_rate": null, "step": 2000, "files": {"weights": "model.safetensors"}, "fingerprint": "9a3d..."}

and the weights: ``model.safetensors`` (the flattened ``{'params', 'vq_stats'}`` trees, ``params/encoder/...``,
the codebook statistics included) in an exported folder, or the latest orbax checkpoint of a training workdir,
whose state entries ``spec['weights']`` names (the EMA parameters when the run kept them). Folders of format
version 1 (``weights.msgpack``, flax msgpack) still load. The model is rebuilt by
:func:`vqjax.models.model_from_spec` from the spec alone; nothing of :mod:`vqjax.train` is imported.

Loading is safe for folders from strangers (:mod:`vqjax.tokenizers.safe`): no code runs from the files, the spec
and the weights' header are checked field by field before anything is allocated, the weights must have the
model's names, shapes and dtypes, and the spec's ``fingerprint`` must match what was loaded; every refusal is an
:class:`~vqjax.tokenizers.safe.ArtifactError` naming the file and the field.

Each modality has one class in its own module (``image``, ``audio``, ``video``, ``timeseries``, ``items``,
``graph``), registered under the spec's ``modality`` with :func:`register_tokenizer` and imported on first use
(:func:`tokenizer_class`). ``Tokenizer.load(path)`` returns the class the spec names; a modality class's own
``load`` refuses another modality's artifact, naming both. ``Tokenizer(spec, model, variables)`` built in memory
is likewise an instance of the spec's modality class.

Input is refused, never clamped: ``encode`` raises ``ValueError`` for a wrong shape, NaN/Inf, or values outside
the spec's range, and ``TypeError`` for a dtype it has no rule for; ``decode`` raises ``ValueError`` for codes
outside ``[0, vocab_size)``. The checks of fixed-shape input run inside the same jitted call as the model, so
valid input costs one extra reduction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.tokenizers.hub import CARD_FILE, card_info, model_card, push_folder, resolve
from vqjax.tokenizers.safe import (
    FORMAT_VERSION,
    ArtifactError,
    Limits,
    check_spec,
    check_weights,
    flatten,
    folder_file,
    read_json,
    read_safetensors,
    unflatten,
    write_safetensors,
)

__all__ = [
    "FORMAT_VERSION",
    "LEGACY_WEIGHTS_FILE",
    "MODALITIES",
    "SPEC_FILE",
    "WEIGHTS_FILE",
    "Tokenizer",
    "check_codes",
    "decode_rows",
    "fingerprint",
    "plain_tree",
    "read_spec",
    "register_tokenizer",
    "row_table",
    "tokenizer_class",
    "write_spec",
]

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "weights.msgpack"           # format version 1
_REQUIRED = ("modality", "model", "input", "codes_shape", "vocab_size")

# The built-in modalities and the module that registers each one's class (imported on first use).
MODALITIES = {"image": "vqjax.tokenizers.image", "audio": "vqjax.tokenizers.audio",
              "video": "vqjax.tokenizers.video", "timeseries": "vqjax.tokenizers.timeseries",
              "item": "vqjax.tokenizers.items", "graph": "vqjax.tokenizers.graph"}
_CLASSES: dict[str, type] = {}


def register_tokenizer(modality: str) -> Callable[[type], type]:
    """Class decorator: registers a :class:`Tokenizer` subclass for the spec's ``modality`` (once per name)."""

    def register(cls: type) -> type:
        if modality in _CLASSES:
            raise ValueError(f"register_tokenizer: modality {modality!r} already has {_CLASSES[modality].__name__}")
        cls.MODALITY = modality
        _CLASSES[modality] = cls
        return cls

    return register


def tokenizer_class(modality: str) -> type:
    """The class registered for ``modality`` (built-in modules are imported here on first use).

    Raises:
      ValueError: a modality nothing registers, listing the known ones.
    """
    if modality not in _CLASSES and modality in MODALITIES:
        importlib.import_module(MODALITIES[modality])
    if modality not in _CLASSES:
        raise ValueError(f"tokenizer modality must be one of {sorted(set(MODALITIES) | set(_CLASSES))}; got "
                         f"{modality!r}")
    return _CLASSES[modality]


def write_spec(path: str, spec: dict) -> str:
    """Writes ``path/spec.json`` (atomically) with the current ``format_version``; returns the file's path."""
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"write_spec: spec needs the fields {missing}; got {sorted(spec)}")
    full = full_spec(spec)
    os.makedirs(path, exist_ok=True)
    out = os.path.join(path, SPEC_FILE)
    with open(out + ".tmp", "w") as fh:
        json.dump(full, fh, indent=2)
    os.replace(out + ".tmp", out)
    return out


def full_spec(spec: dict) -> dict:
    """``spec`` as :func:`write_spec` writes it: the rates None where absent, the current format version."""
    return {"tokens_per_second": None, "sample_rate": None, "frame_rate": None, **spec,
            "format_version": FORMAT_VERSION}


def read_spec(path: str, limits: Limits = Limits()) -> dict:
    """``path/spec.json``, checked field by field and migrated to the current format version
    (:func:`vqjax.tokenizers.safe.check_spec`).

    Raises:
      FileNotFoundError: no spec; :class:`~vqjax.tokenizers.safe.ArtifactError`: a spec refused.
    """
    file = os.path.join(path, SPEC_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"Tokenizer.load: {path!r} holds no {SPEC_FILE}: not a tokenizer folder or a "
                                f"training workdir of a tokenizer task")
    registered = {m: dict(getattr(c, "SPEC_FIELDS", {})) for m, c in _CLASSES.items() if m not in MODALITIES}
    return check_spec(read_json(file, limits), file, limits, modalities=registered)


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A trained tokenizer: its spec, the model rebuilt from it, and the weights.

    The base class holds what every modality shares: the spec's fields, loading (dispatching on the spec's
    modality) and exporting, and the fixed-shape ``encode``/``decode`` of float arrays; each modality's class
    adds its own input rules.

    Attributes:
      spec: the artifact's spec (see the module docstring).
      model: the Flax module (``encode``/``decode`` methods), from :func:`vqjax.models.model_from_spec`; None for
        tokenizers without weights (graph).
      variables: the weights, ``{'params', 'vq_stats'}``.
      step: the training step of the weights (None when unknown).
      path: the folder it was loaded from (None when built in memory).
    """

    spec: dict
    model: Any = None
    variables: dict | None = None
    step: int | None = None
    path: str | None = None

    MODALITY: ClassVar[str | None] = None
    # A registered modality's own spec fields beyond the shared ones: ``{field: JSON type(s)}`` (checked on load).
    SPEC_FIELDS: ClassVar[dict] = {}

    def __new__(cls, spec=None, *args, **kwargs):
        # vqjax.Tokenizer(spec, ...) built in memory becomes the spec's modality class, as Tokenizer.load does.
        if cls is Tokenizer and isinstance(spec, dict) and "modality" in spec:
            cls = tokenizer_class(spec["modality"])
        return object.__new__(cls)

    # -- what the spec says ------------------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        return self.spec["modality"]

    @property
    def vocab_size(self) -> int:
        """Distinct values of one token; codes lie in ``[0, vocab_size)``."""
        return int(self.spec["vocab_size"])

    @property
    def codes_shape(self) -> tuple[int, ...]:
        """Shape of the codes of one example (``(h, w)``, or ``(h, w, L)`` for multi-codebook quantizers)."""
        return tuple(int(v) for v in self.spec["codes_shape"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (``(H, W, C)`` for images)."""
        return tuple(int(v) for v in self.spec["input"]["shape"])

    @property
    def value_range(self) -> tuple[float, float] | None:
        r = self.spec["input"].get("range")
        return None if r is None else (float(r[0]), float(r[1]))

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens per second of signal where time applies (audio, video, time series); None otherwise."""
        t = self.spec.get("tokens_per_second")
        return None if t is None else float(t)

    @property
    def sample_rate(self) -> float | None:
        return self.spec.get("sample_rate")

    @property
    def frame_rate(self) -> float | None:
        return self.spec.get("frame_rate")

    # -- loading and exporting ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, step: int | None = None, *, limits: Limits = Limits()) -> Tokenizer:
        """The tokenizer in ``path``: a folder written by :meth:`export` (or :meth:`save_pretrained`), or a
        training workdir (its latest checkpoint, or ``step``), as the class its spec's modality registers.

        Args:
          limits: what the folder may ask for (:class:`~vqjax.tokenizers.safe.Limits`: parameters, sizes).

        Raises:
          FileNotFoundError: no spec, no weights or no checkpoint; :class:`~vqjax.tokenizers.safe.ArtifactError`
            (a ValueError): a spec, weights or table refused, naming the file and the field; ValueError: (called on
            a modality's class) an artifact of another modality.
        """
        path = os.path.abspath(os.path.expanduser(path))
        spec = read_spec(path, limits)
        target = tokenizer_class(spec["modality"])
        if not issubclass(target, cls):
            raise ValueError(f"{cls.__name__}.load: {os.path.join(path, SPEC_FILE)} holds a {spec['modality']!r} "
                             f"tokenizer ({target.__name__}); {cls.__name__} loads {cls.MODALITY!r} tokenizers "
                             f"(vqjax.Tokenizer.load loads any)")
        tok = target._load_folder(path, spec, step, limits)
        check_fingerprint(tok, os.path.join(path, SPEC_FILE))
        return tok

    @classmethod
    def _load_folder(cls, path: str, spec: dict, step: int | None, limits: Limits) -> Tokenizer:
        """The model rebuilt from the spec and its weights (exported safetensors or msgpack, or the workdir's
        checkpoint), the weights checked against the model's names, shapes and dtypes."""
        # heavy import: the model code (a compiled export runs without it)
        from vqjax.models import model_from_spec

        spec_file = os.path.join(path, SPEC_FILE)
        try:
            model = model_from_spec(spec["model"])
        except Exception as err:  # a builder refusing its (type-checked) arguments: refused, whatever it raised
            raise ArtifactError(spec_file, "model", f"cannot be built: {type(err).__name__}: {err}") from None
        shell = cls(spec, model, None, None, path)
        name = spec.get("files", {}).get("weights")
        if name is None:
            name = WEIGHTS_FILE if os.path.exists(os.path.join(path, WEIGHTS_FILE)) else LEGACY_WEIGHTS_FILE
        weights_file = folder_file(path, name, spec_file, "files.weights")
        if step is None and os.path.exists(weights_file):
            expected = shell._expected_weights(limits, spec_file)
            if name.endswith(".msgpack"):
                variables = _read_msgpack(weights_file, expected)
            else:
                variables = unflatten(read_safetensors(weights_file, limits, expected))
            return cls(spec, model, variables, spec.get("step"), path)._with_files(path)
        if "files" in spec and "weights" in spec["files"]:
            raise FileNotFoundError(f"Tokenizer.load: {path!r} has no {name} (the spec's files.weights)")
        variables, step = _restore_checkpoint(path, spec, step)
        return cls({**spec, "step": step}, model, variables, step, path)._with_files(path)

    def _example_input(self) -> jax.ShapeDtypeStruct:
        """A batch of one example of the input's shape (the weights' structure is computed from it); subclasses
        whose input has free axes override it."""
        return jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32)

    def _expected_weights(self, limits: Limits, file: str) -> dict[str, tuple]:
        """``{flat name: (dtype, shape)}`` of the model's variables (``jax.eval_shape``: nothing allocated),
        refused beyond ``limits.max_params``."""
        keys = {"params": jax.random.key(0), "vq": jax.random.key(1), "dropout": jax.random.key(2)}
        try:
            example = self._example_input()
            shapes = jax.eval_shape(lambda x: self.model.init(keys, x, train=False), example)
        except Exception as err:  # a model the spec's arguments cannot build: refused, whatever flax raised
            raise ArtifactError(file, "model", f"cannot be built from its arguments: {type(err).__name__}: "
                                               f"{str(err)[:300]}") from None
        flat = {k: (np.dtype(v.dtype), tuple(v.shape)) for k, v in flatten(
            {c: shapes[c] for c in shapes if c in ("params", "vq_stats")}).items()}
        count = sum(int(np.prod(s, dtype=object)) for _, s in flat.values())
        if count > limits.max_params:
            raise ArtifactError(file, "model", f"asks for {count:,} parameters, more than the limit of "
                                               f"{limits.max_params:,}")
        return flat

    def _with_files(self, path: str) -> Tokenizer:
        """The tokenizer with whatever else its folder holds besides spec and weights (a hook for subclasses)."""
        return self

    def export(self, path: str) -> str:
        """Writes ``path/spec.json`` (with the tokenizer's fingerprint) and ``path/model.safetensors``:
        everything :meth:`load` needs, and nothing of the training run. Returns ``path``."""
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(path, exist_ok=True)
        write_safetensors(os.path.join(path, WEIGHTS_FILE), plain_tree(self.variables))
        self._write_spec(path, {"weights": WEIGHTS_FILE, **(self._export_files(path) or {})})
        return path

    def export_compiled(self, path: str, *, batch_size: int | None = None, length: int | None = None) -> str:
        """Writes :meth:`export`'s folder plus encode and decode as serialized ``jax.export`` functions, which
        :func:`vqjax.tokenizers.load_compiled` runs with jax alone (:mod:`vqjax.tokenizers.compiled`; ``length``:
        the exported length of audio chunks and time series). Returns ``path``."""
        # heavy import: jax.export's lowering and serialization, needed only to export
        from vqjax.tokenizers.compiled import export_compiled

        return export_compiled(self, path, batch_size=batch_size, length=length)

    # -- sharing: hub layout ----------------------------------------------------------------------------------
    def save_pretrained(self, path: str, *, name: str | None = None) -> str:
        """Writes what :meth:`export` writes plus a model card, ``README.md`` (modality, rates, vocabulary,
        training data and the run's final metrics; :mod:`vqjax.tokenizers.hub`), the layout a model hub expects.
        ``name`` titles the card (e.g. the repository id). Returns ``path``."""
        card = card_info(self.spec, self.path, self.step)
        tok = dataclasses.replace(self, spec={**self.spec, "card": card}) if card else self
        path = tok.export(path)
        with open(os.path.join(path, CARD_FILE), "w") as fh:
            fh.write(model_card(read_spec(path), name=name))
        return path

    @classmethod
    def from_pretrained(cls, name_or_dir: str, *, revision: str | None = None,
                        local_files_only: bool | None = None, cache_dir: str | None = None,
                        limits: Limits = Limits()) -> Tokenizer:
        """The tokenizer in a folder, or in a hub repository (``'org/name'``, at ``revision``) through
        ``huggingface_hub``'s cache; downloads only with ``local_files_only=False`` or ``VQJAX_HUB_DOWNLOAD=1``
        (:func:`vqjax.tokenizers.hub.resolve`). Loaded as :meth:`load` does, every file checked."""
        folder = resolve(name_or_dir, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir)
        return cls.load(folder, limits=limits)

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | None = None, commit_message: str = "Upload vqjax tokenizer") -> str:
        """Uploads :meth:`save_pretrained`'s folder to the hub repository ``repo_id`` (created when missing);
        returns the commit's URL."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, name=repo_id)
            return push_folder(folder, repo_id, revision=revision, private=private, token=token,
                               commit_message=commit_message)

    def _write_spec(self, path: str, files: dict) -> None:
        """Writes the spec of an exported folder: its files and the fingerprint of what it holds."""
        spec = full_spec({**{k: v for k, v in self.spec.items() if k not in ("weights", "files", "fingerprint")},
                          "step": self.step, "files": files})
        write_spec(path, {**spec, "fingerprint": fingerprint(dataclasses.replace(self, spec=spec))})

    def _export_files(self, path: str) -> dict | None:
        """Writes whatever else :meth:`_with_files` reads and returns the spec's ``files`` entries of it (a hook
        for subclasses)."""

    def _row_table(self, rows: np.ndarray) -> dict[bytes, int]:
        """:func:`row_table` of ``rows`` (the item or node table), built on first use and kept."""
        cache = self.__dict__.get("_rows")
        if cache is None:
            cache = row_table(rows)
            object.__setattr__(self, "_rows", cache)
        return cache

    # -- fixed-shape encoding and decoding ---------------------------------------------------------------------
    def _prepare(self, x) -> jax.Array:
        """The batch as float32 ``[B, *input_shape]``; subclasses add their dtype and layout rules."""
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        shape = self.input_shape
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{type(self).__name__}.encode: input must have shape [B, {', '.join(map(str, shape))}]"
                             f"; got {tuple(x.shape)}")
        if not np.issubdtype(np.dtype(x.dtype), np.floating):
            raise DTypeError(f"{type(self).__name__}.encode: input must be floating; got dtype {x.dtype}")
        return jnp.asarray(x, jnp.float32)

    def _range_hint(self, xmin: float, xmax: float) -> str:
        """Advice appended to an out-of-range error (a hook for subclasses)."""
        return ""

    def encode(self, x) -> jax.Array:
        """int32 codes ``[B, *codes_shape]`` of a batch ``[B, *input_shape]``.

        Raises:
          ValueError: wrong shape, NaN/Inf, or values outside the spec's range; :class:`vqjax.checks.DTypeError`
            (a TypeError and a ValueError): an unsupported dtype.
        """
        x = self._prepare(x)
        lo, hi = self.value_range or (-np.inf, np.inf)
        codes, bad_count, xmin, xmax = encode_checked(self.model, self.variables, x)
        if int(bad_count):
            raise ValueError(f"{type(self).__name__}.encode: input holds {int(bad_count)} NaN/Inf value(s)")
        if float(xmin) < lo or float(xmax) > hi:
            raise ValueError(f"{type(self).__name__}.encode: {self.modality} values must lie in [{lo}, {hi}]; got "
                             f"min {float(xmin):g}, max {float(xmax):g}" + self._range_hint(float(xmin), float(xmax)))
        return codes

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, *input_shape]``, clipped to the spec's range, from int codes ``[B, *codes_shape]``, each
        in ``[0, vocab_size)``.

        Raises:
          ValueError: wrong shape or dtype, or a code outside ``[0, vocab_size)`` (never clamped).
        """
        name = f"{type(self).__name__}.decode"
        codes = codes if isinstance(codes, jax.Array) else np.asarray(codes)
        if tuple(codes.shape[1:]) != self.codes_shape or codes.ndim != len(self.codes_shape) + 1 or \
                not np.issubdtype(np.dtype(codes.dtype), np.integer):
            raise ValueError(f"{name}: codes must be integer [B, {', '.join(map(str, self.codes_shape))}]; "
                             f"got {codes.dtype} {tuple(codes.shape)}")
        lo, hi = self.value_range or (-np.inf, np.inf)
        out, cmin, cmax = decode_checked(self.model, self.variables, jnp.asarray(codes, jnp.int32), lo, hi)
        if int(cmin) < 0 or int(cmax) >= self.vocab_size:
            raise ValueError(f"{name}: codes must lie in [0, {self.vocab_size}); got min {int(cmin)}, max {int(cmax)}")
        return out


def check_codes(codes, name: str, axes: tuple, tail: tuple, vocab_size: int) -> jax.Array:
    """int32 ``codes [B, *axes, *tail]`` (each of ``axes`` non-empty, any size), refused with a ``ValueError``
    for another layout, a non-integer dtype or a code outside ``[0, vocab_size)``."""
    codes = np.asarray(codes)
    lead = 1 + len(axes)
    if codes.ndim != lead + len(tail) or tuple(codes.shape[lead:]) != tuple(tail) or 0 in codes.shape[1:lead] or \
            not np.issubdtype(codes.dtype, np.integer):
        layout = ", ".join(("B",) + tuple(axes) + tuple(map(str, tail)))
        raise ValueError(f"{name}: codes must be integer [{layout}]; got {codes.dtype} {codes.shape}")
    if codes.min() < 0 or codes.max() >= vocab_size:
        raise ValueError(f"{name}: codes must lie in [0, {vocab_size}); got min {int(codes.min())}, max "
                         f"{int(codes.max())}")
    return jnp.asarray(codes, jnp.int32)


def row_table(rows: np.ndarray) -> dict[bytes, int]:
    """``{row bytes: index}`` of int32 ``rows [N, W]``, the first index where rows repeat."""
    table: dict[bytes, int] = {}
    for i, row in enumerate(np.ascontiguousarray(np.asarray(rows, np.int32))):
        table.setdefault(row.tobytes(), i)
    return table


def decode_rows(table: dict[bytes, int], codes, *, width: int, vocab_size: int, name: str, missing: str
                ) -> np.ndarray:
    """int64 indices ``codes.shape[:-1]`` of the rows ``codes [..., W]`` in ``table`` (:func:`row_table`): the
    decode of tokenizers whose codes name table entries (catalogue items, graph nodes).

    Raises:
      ValueError: a non-integer dtype or another row width, a code outside ``[0, vocab_size)``, or a row the
        table does not hold (``'{name}: n {missing}'``, with the first such row).
    """
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer) or c.ndim < 1 or c.shape[-1] != width:
        raise ValueError(f"{name}: codes must be integer [..., {width}]; got {c.dtype} {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= vocab_size):
        raise ValueError(f"{name}: codes must lie in [0, {vocab_size}); got min {int(c.min())}, max {int(c.max())}")
    flat = np.ascontiguousarray(c.reshape(-1, width).astype(np.int32))
    out = np.asarray([table.get(row.tobytes(), -1) for row in flat], np.int64)
    if (out < 0).any():
        raise ValueError(f"{name}: {int((out < 0).sum())} {missing}, e.g. "
                         f"{flat[np.argmax(out < 0)].tolist()}")
    return out.reshape(c.shape[:-1])


def check_fingerprint(tok, file: str) -> None:
    """Refuses a tokenizer whose spec's ``fingerprint`` differs from what was loaded (weights or tables changed
    after the spec was written)."""
    want = tok.spec.get("fingerprint")
    if want is not None and fingerprint(tok) != want:
        raise ArtifactError(file, "fingerprint", f"{want[:16]}... does not match the loaded weights and tables "
                                                 f"({fingerprint(tok)[:16]}...): a file was changed or replaced")


# Spec fields that describe the files, not what the tokenizer computes.
_NOT_FINGERPRINTED = ("step", "weights", "format_version", "files", "fingerprint", "card")


def fingerprint(tokenizer) -> str:
    """sha256 of what a modality tokenizer computes: its spec (without the training step, file names and model
    card) and its weights, token tables or item IDs. Equal for a training workdir and the folder it was exported
    to."""
    h = hashlib.sha256()
    # the rates :func:`write_spec` adds as None, so that a tokenizer built in memory and its export agree
    spec = {"tokens_per_second": None, "sample_rate": None, "frame_rate": None, **getattr(tokenizer, "spec", {})}
    spec = {k: v for k, v in spec.items() if k not in _NOT_FINGERPRINTED}
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    arrays = []
    if getattr(tokenizer, "variables", None) is not None:
        arrays = _flat_arrays(plain_tree(tokenizer.variables))
    elif getattr(tokenizer, "node_tokens", None) is not None:      # a graph: no weights, its tokens
        h.update(json.dumps(dataclasses.asdict(tokenizer.vocab), sort_keys=True, default=_jsonable).encode())
        arrays = [("tokens", tokenizer.node_tokens.tokens), ("distances", tokenizer.node_tokens.distances)]
    if getattr(tokenizer, "item_codes", None) is not None:            # semantic IDs: the catalogue's tuples
        arrays.append(("item_codes", tokenizer.item_codes))
    for key, arr in arrays:
        arr = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _jsonable(v):
    return np.asarray(v).tolist()


def _flat_arrays(tree, prefix=""):
    if isinstance(tree, dict):
        out = []
        for k in sorted(tree):
            out.extend(_flat_arrays(tree[k], f"{prefix}/{k}"))
        return out
    return [(prefix, tree)]


def plain_tree(tree):
    """Nested dicts of numpy arrays (NamedTuples as dicts of their fields), for msgpack."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return {k: plain_tree(v) for k, v in zip(tree._fields, tree)}
    if isinstance(tree, dict):
        return {k: plain_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return {str(i): plain_tree(v) for i, v in enumerate(tree)}
    return np.asarray(tree)


def _read_msgpack(path: str, expected: dict[str, tuple]) -> dict:
    """The variables of a format-1 ``weights.msgpack`` (flax msgpack: arrays and dicts, no code), checked against
    the model's names, shapes and dtypes."""
    with open(path, "rb") as fh:
        try:
            variables = flax.serialization.msgpack_restore(fh.read())
        except Exception as err:  # msgpack raises many types for damaged bytes: all refused alike
            raise ArtifactError(path, "weights", f"not a flax msgpack file ({type(err).__name__}: {err})") from None
    if not isinstance(variables, dict):
        raise ArtifactError(path, "weights", "must hold a mapping of collections")
    flat = flatten(variables)
    check_weights({k: (np.asarray(v).dtype, np.asarray(v).shape) for k, v in flat.items()}, expected, path)
    return variables


def _restore_checkpoint(path: str, spec: dict, step: int | None):
    """The spec's weight entries of a training workdir's checkpoint (latest, or ``step``) and that step."""
    import orbax.checkpoint as ocp  # heavy import, needed only to read a training workdir

    ckpt = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpt):
        raise FileNotFoundError(f"Tokenizer.load: {path!r} has neither {WEIGHTS_FILE} nor checkpoints/")
    with ocp.CheckpointManager(ckpt, item_handlers=ocp.StandardCheckpointHandler()) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"Tokenizer.load: {path!r} has no checkpoint yet")
        if step not in mgr.all_steps():
            raise FileNotFoundError(f"Tokenizer.load: {path!r} has no checkpoint at step {step}; it has "
                                    f"{sorted(mgr.all_steps())}")
        # Whatever mesh the run trained on (8 devices, FSDP-sharded), the arrays come back whole on this process's
        # first device: a tokenizer trained on a pod loads on a laptop.
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                              mgr.item_metadata(step))
        restored = mgr.restore(step, args=ocp.args.StandardRestore(target))
    names = spec.get("weights", {"params": "params"})
    variables = {}
    for collection, entry in names.items():
        if entry not in restored:
            raise ValueError(f"Tokenizer.load: checkpoint {step} of {path!r} has no entry {entry!r} (the spec's "
                             f"weights.{collection}); it has {sorted(restored)}")
        variables[collection] = restored[entry]
    return variables, int(step)


@jax.jit(static_argnums=0)
def encode_checked(model, variables, x):
    """The model's int32 codes of ``x`` (NaN/Inf zeroed), the count of non-finite values, and the finite min/max."""
    bad = jnp.sum(~jnp.isfinite(x))
    safe = jnp.where(jnp.isfinite(x), x, 0.0)
    codes = model.apply(variables, safe, method=model.encode)
    return codes.astype(jnp.int32), bad, jnp.min(safe), jnp.max(safe)


@jax.jit(static_argnums=0)
def decode_checked(model, variables, codes, lo, hi):
    """The model's float32 decode of ``codes`` clipped to ``[lo, hi]``, and the codes' min and max."""
    out = model.apply(variables, codes, method=model.decode)
    return jnp.clip(out, lo, hi).astype(jnp.float32), jnp.min(codes), jnp.max(codes)
