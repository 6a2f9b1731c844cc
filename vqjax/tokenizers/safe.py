"""Checks that make a tokenizer folder safe to load when a stranger wrote it.

Loading never runs code from the files: the spec is JSON, the weights are safetensors (a JSON header and raw
little-endian arrays; never pickle), tables are safetensors or JSON, and the model is rebuilt only from a name in
vqjax's registry (:data:`vqjax.models.registry.MODELS`) with arguments checked against its builder's annotations.
Everything refused raises :class:`ArtifactError` (a ``ValueError``) naming the file and the field:

* a spec that is not a JSON object, is larger than :attr:`Limits.max_spec_bytes`, or has a format version newer
  than this library's (older versions are migrated, :func:`migrate`);
* an unknown field, a field of the wrong type, an unknown modality or model, an unknown, missing or mistyped
  constructor argument (quantizer arguments included);
* sizes beyond :class:`Limits` before anything is allocated: integers, list lengths, repeated layers, and the
  parameter count of the model the spec asks for (from ``jax.eval_shape``, which allocates nothing);
* file names that leave the folder (absolute paths, ``..``, links pointing out);
* a weights file whose header is malformed or larger than :attr:`Limits.max_header_bytes`, whose offsets do not
  tile the file, or whose names, shapes or dtypes differ from the model's;
* a table that disagrees with the spec, and a fingerprint that does not match the weights (checked by the
  loaders in :mod:`vqjax.tokenizers.base`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import struct
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

__all__ = [
    "FORMAT_VERSION",
    "ArtifactError",
    "Limits",
    "check_kwargs",
    "check_spec",
    "check_weights",
    "flatten",
    "folder_file",
    "migrate",
    "read_json",
    "read_npz",
    "read_safetensors",
    "safetensors_header",
    "unflatten",
    "write_safetensors",
]

FORMAT_VERSION = 2
SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                      "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U32": np.uint32, "U64": np.uint64,
                      "BOOL": np.bool_}


class ArtifactError(ValueError):
    """A tokenizer folder refused: ``file`` and ``field`` say where, the message says what and why."""

    def __init__(self, file: str, field: str, message: str):
        super().__init__(f"{file}: {field}: {message}")
        self.file, self.field = file, field


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a spec may ask for before it is refused (the defaults admit every model vqjax trains, by far).

    Attributes:
      max_params: parameters of the model (counted from shapes, nothing allocated).
      max_spec_bytes: size of ``spec.json`` and of a JSON table.
      max_header_bytes: size of a safetensors header.
      max_int: any integer in the spec.
      max_list: any list in the spec.
      max_repeats: a count of repeated layers or levels (``num_res_blocks``, ``num_levels``, ...).
      max_depth: nesting of the spec's JSON.
    """

    max_params: int = 4_000_000_000
    max_spec_bytes: int = 1 << 20
    max_header_bytes: int = 64 << 20
    max_int: int = 1 << 30
    max_list: int = 4096
    max_repeats: int = 64
    max_depth: int = 8


# Constructor arguments that count repeated layers or levels (ints), and lists with a layer per item.
REPEATS = ("num_res_blocks", "num_levels", "num_layers", "num_blocks", "depth", "num_codebooks", "num_groups",
           "num_heads", "envelope_levels", "strides", "channel_mult", "temporal_down", "hidden", "levels")

# Every spec field: the modalities that may have it (None: any) and its JSON type.
_NUM = (int, float)
FIELDS: dict[str, tuple[tuple[str, ...] | None, Any]] = {
    "format_version": (None, int), "modality": (None, str), "model": (None, dict), "input": (None, dict),
    "codes_shape": (None, list), "vocab_size": (None, int), "tokens_per_second": (None, (*_NUM, type(None))),
    "sample_rate": (None, (*_NUM, type(None))), "frame_rate": (None, (*_NUM, type(None))),
    "step": (None, (int, type(None))), "weights": (None, dict), "dataset": (None, (str, type(None))),
    "files": (None, dict), "fingerprint": (None, str), "card": (None, dict),
    "kbps": (("audio",), _NUM), "loudness_db": (("audio",), (*_NUM, type(None))),
    "highpass_hz": (("audio",), (*_NUM, type(None))), "bits_per_pixel": (("video",), (*_NUM, type(None))),
    "channels": (("timeseries",), list), "normalization": (("timeseries",), dict),
    "level_sizes": (("item",), list), "collisions": (("item",), str), "num_items": (("item",), int),
    "features": (("item",), (dict, list, str, type(None))), "split": (("item",), dict),
    "num_nodes": (("graph",), int), "token_range": (("image",), list),
}
REQUIRED = ("modality", "model", "input", "codes_shape", "vocab_size")
FILE_FIELDS = ("weights", "table")
MODALITIES = ("image", "audio", "video", "timeseries", "item", "graph")


def read_json(path: str, limits: Limits, *, what: str = "spec") -> dict:
    """The JSON object in ``path``, refused when larger than ``limits.max_spec_bytes``, not JSON or not an
    object."""
    size = os.path.getsize(path)
    if size > limits.max_spec_bytes:
        raise ArtifactError(path, what, f"{size} bytes, more than the limit of {limits.max_spec_bytes}")
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ArtifactError(path, what, f"not valid JSON ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(value, dict):
        raise ArtifactError(path, what, f"must be a JSON object; got {type(value).__name__}")
    return value


def migrate(spec: dict, file: str) -> dict:
    """``spec`` of an older format version as the current one (version 1: weights in ``weights.msgpack``, no
    fingerprint); refuses a version newer than this library's."""
    version = spec.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArtifactError(file, "format_version", f"must be an int; got {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(file, "format_version", f"{version} is newer than this vqjax reads ({FORMAT_VERSION}): "
                                                    f"upgrade vqjax")
    if version < 1:
        raise ArtifactError(file, "format_version", f"must be >= 1; got {version}")
    if version == 1:          # weights.msgpack in an exported folder (found by the loader), no fingerprint
        spec = {**spec, "format_version": 2}
    return spec


def _check_json(value, file: str, field: str, limits: Limits, depth: int = 0) -> None:
    """Bounds on any JSON value: nesting, integers, list lengths, string lengths, finite numbers."""
    if depth > limits.max_depth:
        raise ArtifactError(file, field, f"nested deeper than {limits.max_depth} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > limits.max_int:
            raise ArtifactError(file, field, f"{value} is beyond the limit of {limits.max_int}")
    elif isinstance(value, float):
        if not np.isfinite(value):
            raise ArtifactError(file, field, f"must be finite; got {value}")
    elif isinstance(value, str):
        if len(value) > 10_000:
            raise ArtifactError(file, field, f"a string of {len(value)} characters (limit 10000)")
    elif isinstance(value, list):
        if len(value) > limits.max_list:
            raise ArtifactError(file, field, f"a list of {len(value)} items (limit {limits.max_list})")
        for i, v in enumerate(value):
            _check_json(v, file, f"{field}[{i}]", limits, depth + 1)
    elif isinstance(value, dict):
        if len(value) > limits.max_list:
            raise ArtifactError(file, field, f"an object of {len(value)} keys (limit {limits.max_list})")
        for k, v in value.items():
            _check_json(v, file, f"{field}.{k}", limits, depth + 1)
    else:
        raise ArtifactError(file, field, f"unexpected value of type {type(value).__name__}")


def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _shape(value, file: str, field: str, *, allow_none: bool) -> None:
    if not isinstance(value, list) or not all((v is None and allow_none) or
                                              (_is(v, int) and v >= 0) for v in value):
        raise ArtifactError(file, field, f"must be a list of non-negative ints{' or null' if allow_none else ''}; "
                                         f"got {value!r}")


def check_spec(spec: dict, file: str, limits: Limits = Limits(), *, check_model: bool = True,
               modalities: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """The spec migrated to the current format and checked field by field (the model's arguments included, by
    :func:`check_kwargs`, unless ``check_model`` is False: a compiled export runs without the model code);
    returns it. ``modalities`` adds registered modalities beyond the built-in ones, each with its own spec fields
    (``{name: {field: JSON type}}``)."""
    spec = migrate(spec, file)
    _check_json(spec, file, "spec", limits)
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise ArtifactError(file, missing[0], f"missing (the spec needs {list(REQUIRED)})")
    modality = spec["modality"]
    extra = dict(modalities or {})
    known = list(MODALITIES) + sorted(set(extra) - set(MODALITIES))
    if modality not in known:
        raise ArtifactError(file, "modality", f"must be one of {known}; got {modality!r}")
    fields = {**FIELDS, **{k: ((modality,), t) for k, t in extra.get(modality, {}).items()}}
    for key, value in spec.items():
        if key not in fields:
            raise ArtifactError(file, key, f"unknown field (known: {sorted(fields)})")
        where, types = fields[key]
        if where is not None and modality not in where:
            raise ArtifactError(file, key, f"is a field of {list(where)} tokenizers, not of {modality!r} ones")
        if not _is(value, types):
            raise ArtifactError(file, key, f"must be of type {_names(types)}; got {type(value).__name__}")
    if spec["vocab_size"] < 1:
        raise ArtifactError(file, "vocab_size", f"must be >= 1; got {spec['vocab_size']}")
    _shape(spec["codes_shape"], file, "codes_shape", allow_none=True)
    if "token_range" in spec:
        tr, shape = spec["token_range"], spec["codes_shape"]
        if not (len(tr) == 2 and all(_is(v, int) for v in tr) and 1 <= tr[0] <= tr[1] <= limits.max_int):
            raise ArtifactError(file, "token_range", f"must be [min, max] ints with 1 <= min <= max; got {tr!r}")
        if not shape or shape[0] is not None:
            raise ArtifactError(file, "token_range", f"bounds codes of a variable length, whose codes_shape starts "
                                                     f"with null; got codes_shape {shape!r}")
    inp = spec["input"]
    unknown = sorted(set(inp) - {"shape", "dtype", "range"})
    if unknown or "shape" not in inp:
        raise ArtifactError(file, "input", f"must hold 'shape' and optionally 'dtype' and 'range'; got {sorted(inp)}")
    _shape(inp["shape"], file, "input.shape", allow_none=True)
    if "dtype" in inp and inp["dtype"] not in ("float32", "int64", "int32", "uint8"):
        raise ArtifactError(file, "input.dtype", f"must be float32, int64, int32 or uint8; got {inp['dtype']!r}")
    rng = inp.get("range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and all(_is(v, _NUM) for v in rng)
                                and rng[0] <= rng[1]):
        raise ArtifactError(file, "input.range", f"must be [low, high] numbers or null; got {rng!r}")
    files = spec.get("files", {})
    for key, name in files.items():
        if key not in FILE_FIELDS or not isinstance(name, str):
            raise ArtifactError(file, f"files.{key}", f"must be one of {list(FILE_FIELDS)} naming a file; got "
                                                      f"{name!r}")
    weights = spec.get("weights", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in weights.items()):
        raise ArtifactError(file, "weights", f"must map collections to checkpoint entries; got {weights!r}")
    model = spec["model"]
    if set(model) - {"name", "kwargs"} or not isinstance(model.get("name"), str) or \
            not isinstance(model.get("kwargs", {}), dict):
        raise ArtifactError(file, "model", f"must be {{'name': str, 'kwargs': {{...}}}}; got {sorted(model)}")
    if modality == "graph":
        if model["name"] != "nodepiece" or model.get("kwargs"):
            raise ArtifactError(file, "model", f"a graph tokenizer's model is {{'name': 'nodepiece'}}; got {model!r}")
    elif check_model:
        check_kwargs(model["name"], model.get("kwargs", {}), file, limits)
    return spec


def _names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " | ".join("null" if t is type(None) else t.__name__ for t in types)


def check_kwargs(name: str, kwargs: Mapping[str, Any], file: str, limits: Limits = Limits()) -> None:
    """Refuses a model name outside vqjax's registry, and constructor arguments that its builder does not take,
    that it needs and lacks, whose type differs from the builder's annotation, or whose repeat counts exceed
    ``limits.max_repeats`` (the quantizer's arguments checked against its module's fields)."""
    # heavy import: the model code (a compiled export runs without it)
    from vqjax.models.quantizers import QUANTIZERS
    from vqjax.models.registry import MODELS  # heavy import: the model code

    if name not in MODELS:
        raise ArtifactError(file, "model.name", f"must be one of vqjax's models {sorted(MODELS)}; got {name!r}")
    builder = MODELS[name]
    hints = typing.get_type_hints(builder)
    params = inspect.signature(builder).parameters
    _check_arguments(kwargs, {k: hints.get(k, Any) for k in params},
                     {k for k, p in params.items() if p.default is inspect.Parameter.empty},
                     file, "model.kwargs", limits)
    quantizer = kwargs.get("quantizer")
    if quantizer is not None:
        if quantizer not in QUANTIZERS:
            raise ArtifactError(file, "model.kwargs.quantizer", f"must be one of {sorted(QUANTIZERS)}; got "
                                                                f"{quantizer!r}")
        cls = QUANTIZERS[quantizer]
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("parent", "name", "dim")}
        qhints = typing.get_type_hints(cls)
        required = {k for k, f in fields.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        _check_arguments(kwargs.get("quantizer_kwargs") or {}, {k: qhints.get(k, Any) for k in fields}, required,
                         file, "model.kwargs.quantizer_kwargs", limits)


def _check_arguments(kwargs, hints: dict, required: set, file: str, where: str, limits: Limits) -> None:
    if not isinstance(kwargs, Mapping):
        raise ArtifactError(file, where, f"must be an object; got {type(kwargs).__name__}")
    for key in kwargs:
        if key not in hints:
            raise ArtifactError(file, f"{where}.{key}", f"unknown argument (known: {sorted(hints)})")
    for key in sorted(required):
        if key not in kwargs:
            raise ArtifactError(file, f"{where}.{key}", "missing (a required argument)")
    for key, value in kwargs.items():
        if not _matches(value, hints[key]):
            raise ArtifactError(file, f"{where}.{key}", f"must be {_describe(hints[key])}; got {value!r}")
        n = value if _is(value, int) else len(value) if isinstance(value, list) else 0
        if key in REPEATS and n > limits.max_repeats:
            raise ArtifactError(file, f"{where}.{key}", f"{n} repeated layers or levels (limit "
                                                        f"{limits.max_repeats})")


def _matches(value, hint) -> bool:
    """Whether the JSON ``value`` fits the annotation ``hint`` (ints, floats, bools, strings, sequences,
    mappings, unions, Literal, Any)."""
    if hint is Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is(value, int)
    if hint is float:
        return _is(value, _NUM)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        return isinstance(value, dict) and (not args or all(_matches(v, args[1]) for v in value.values()))
    return not isinstance(value, (dict, list))       # another annotation (a class): a JSON scalar at most


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def read_npz(path: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file, read without pickle; a damaged file, an object array or a
    missing name is refused naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data]
            if missing:
                raise ArtifactError(path, missing[0], f"missing (the file holds {sorted(data.files)})")
            return {n: np.asarray(data[n]) for n in names}
    except ArtifactError:
        raise
    except Exception as err:  # zip, header and pickle refusals of numpy come as many types: all refused alike
        raise ArtifactError(path, "arrays", f"not readable as plain arrays ({type(err).__name__}: "
                                            f"{str(err)[:200]})") from None


def folder_file(folder: str, name: str, file: str, field: str) -> str:
    """``folder/name`` for a file name the spec gives, refused when it leaves the folder (an absolute path,
    ``..``, a separator, or a link that resolves outside; in a hub cache snapshot, links into the repository's
    own ``blobs`` are its layout)."""
    if not isinstance(name, str) or not name or name in (".", "..") or os.path.isabs(name) or "/" in name or \
            "\\" in name or "\x00" in name:
        raise ArtifactError(file, field, f"must be a plain file name inside the folder; got {name!r}")
    path = os.path.join(folder, name)
    real, root = os.path.realpath(path), os.path.realpath(folder)
    allowed = [root]
    storage = os.path.dirname(os.path.dirname(root))
    if os.path.basename(os.path.dirname(root)) == "snapshots" and os.path.isdir(os.path.join(storage, "blobs")):
        allowed.append(os.path.join(storage, "blobs"))      # a hub cache snapshot links to its repository's blobs
    if not any(os.path.commonpath([real, a]) == a for a in allowed):
        raise ArtifactError(file, field, f"{name!r} resolves outside the folder (to {real!r})")
    return path


# -- safetensors --------------------------------------------------------------------------------------------------
def flatten(tree, prefix: str = "") -> dict[str, Any]:
    """``{'params/encoder/conv/kernel': leaf, ...}`` of nested dicts (NamedTuples by field name, lists and tuples
    by index, as :func:`vqjax.tokenizers.base.plain_tree` names them)."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        tree = dict(zip(tree._fields, tree))
    elif isinstance(tree, (list, tuple)):
        tree = {str(i): v for i, v in enumerate(tree)}
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if "/" in str(k):
                raise ValueError(f"flatten: key {k!r} under {prefix!r} holds '/'")
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def unflatten(flat: Mapping[str, Any]) -> dict:
    """The nested dicts of :func:`flatten`'s output."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def write_safetensors(path: str, tree, metadata: Mapping[str, str] | None = None) -> str:
    """Writes the flattened ``tree`` to ``path`` (atomically); returns ``path``."""
    flat = {k: np.asarray(v, order="C") for k, v in flatten(tree).items()}     # 0-d arrays stay 0-d
    save_file(flat, path + ".tmp", metadata=dict(metadata or {}))
    os.replace(path + ".tmp", path)
    return path


def safetensors_header(path: str, limits: Limits = Limits()) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors file's header, read and checked before any array: its
    length within the file and ``limits.max_header_bytes``, JSON entries of known dtypes and non-negative shapes
    whose byte ranges tile the data exactly."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ArtifactError(path, "header", f"the file has {size} bytes: not a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(limits.max_header_bytes, size - 8):
            raise ArtifactError(path, "header", f"claims {length} bytes (file {size} bytes, limit "
                                                f"{limits.max_header_bytes})")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ArtifactError(path, "header", f"not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise ArtifactError(path, "header", "must be a JSON object")
    out, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES or \
                not isinstance(entry.get("shape"), list) or not isinstance(entry.get("data_offsets"), list):
            raise ArtifactError(path, name, f"must be {{dtype in {sorted(SAFETENSORS_DTYPES)}, shape, "
                                            f"data_offsets}}; got {entry!r}")
        shape = entry["shape"]
        if not all(_is(s, int) and 0 <= s <= limits.max_int for s in shape) or len(shape) > 8:
            raise ArtifactError(path, f"{name}.shape", f"must be at most 8 non-negative ints; got {shape!r}")
        offsets = entry["data_offsets"]
        dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if len(offsets) != 2 or not all(_is(o, int) for o in offsets) or offsets[1] - offsets[0] != nbytes or \
                offsets[0] < 0:
            raise ArtifactError(path, f"{name}.data_offsets", f"{offsets!r} do not hold {nbytes} bytes of "
                                                              f"{dtype} {shape}")
        spans.append((offsets[0], offsets[1]))
        out[name] = (dtype, tuple(shape))
    at = 0
    for start, stop in sorted(spans):
        if start != at:
            raise ArtifactError(path, "data_offsets", f"the arrays do not tile the data (a gap or overlap at byte "
                                                      f"{start}, expected {at})")
        at = stop
    if at != size - 8 - length:
        raise ArtifactError(path, "data_offsets", f"the arrays cover {at} bytes; the file holds {size - 8 - length}")
    return out


def check_weights(header: Mapping[str, tuple], expected: Mapping[str, tuple], file: str) -> None:
    """Refuses weights whose names, shapes or dtypes differ from the model's (``{name: (dtype, shape)}``)."""
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise ArtifactError(file, (missing or extra)[0], f"the weights lack {missing[:5]} and hold unknown "
                                                         f"{extra[:5]} (of {len(expected)} the model has)")
    for name, (dtype, shape) in expected.items():
        got_dtype, got_shape = header[name]
        if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
            raise ArtifactError(file, name, f"{np.dtype(got_dtype)} {tuple(got_shape)}; the model has "
                                            f"{np.dtype(dtype)} {tuple(shape)}")


def read_safetensors(path: str, limits: Limits = Limits(),
                     expected: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """The flat arrays of ``path``, its header checked first (:func:`safetensors_header`, and against
    ``expected`` when given)."""
    header = safetensors_header(path, limits)
    if expected is not None:
        check_weights(header, expected, path)
    return load_file(path)
