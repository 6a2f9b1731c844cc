"""A tokenizer's encode and decode as serialized ``jax.export`` functions (StableHLO), run with jax alone.

    tok.export_compiled("mnist-vq-compiled")              # spec.json, model.safetensors, encode/decode.jaxexport
    ctok = vqjax.tokenizers.load_compiled("mnist-vq-compiled")   # no vqjax.models, no vqjax.nn: jax and numpy
    codes = ctok.encode(batch)                            # the Python tokenizer's codes, on CPU or an accelerator
    batch = ctok.decode(codes)

Each function takes the weights (read from ``model.safetensors`` beside it, checked against the function's own
argument shapes) and a batch; the batch axis is symbolic (any batch size) where the model allows, else the size
given at export. The input checks run inside the exported computation: it returns, beside the codes, the count of
NaN/Inf values and the input's min and max (decode: the codes' min and max), and :class:`CompiledTokenizer`
refuses input as the Python tokenizer does. Inputs of free length are exported at one length: audio as chunks of
``length`` samples (whole frames; at the model's sample rate), time series as ``length`` steps. Functions are
lowered for CPU, CUDA and TPU when this jaxlib can, else for the platform at hand (``compiled.json`` lists them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.tokenizers.base import SPEC_FILE, fingerprint, plain_tree
from vqjax.tokenizers.safe import (
    ArtifactError,
    Limits,
    check_spec,
    flatten,
    folder_file,
    read_json,
    read_safetensors,
    unflatten,
)

__all__ = ["COMPILED_FILE", "CompiledTokenizer", "export_compiled", "load_compiled"]

COMPILED_FILE = "compiled.json"
ENCODE_FILE = "encode.jaxexport"
DECODE_FILE = "decode.jaxexport"
PLATFORMS = ("cpu", "cuda", "tpu")


@dataclasses.dataclass(frozen=True)
class Functions:
    """What one modality exports: ``encode(variables, x) -> (codes, non-finite count, min, max)`` on input of
    ``input_shape`` (``None``: the batch axis), and ``decode(variables, codes) -> (output, min code, max code)`` on
    codes of ``codes_shape``."""

    encode: Callable
    decode: Callable
    input_shape: tuple
    codes_shape: tuple
    input_dtype: Any = jnp.float32


def _checked(x):
    bad = jnp.sum(~jnp.isfinite(x))
    safe = jnp.where(jnp.isfinite(x), x, 0.0)
    return safe, bad, jnp.min(safe), jnp.max(safe)


def functions(tok, length: int | None) -> Functions:
    """The pure encode and decode of ``tok`` (the computation its Python ``encode``/``decode`` run), for export."""
    model, modality = tok.model, tok.modality
    lo, hi = tok.value_range or (-np.inf, np.inf)
    if modality in ("image", "timeseries"):
        shape = tuple(tok.input_shape)
        if modality == "timeseries":
            length = int(length or shape[0])
            if length % tok.hop_length:
                raise ValueError(f"export_compiled: length must be a multiple of {tok.hop_length} samples; got {length}")
            shape = (length, shape[1])

        def encode(v, x):
            safe, bad, xmin, xmax = _checked(x)
            return model.apply(v, safe, method=model.encode).astype(jnp.int32), bad, xmin, xmax

        def decode(v, codes):
            out = model.apply(v, codes, method=model.decode)
            return jnp.clip(out, lo, hi).astype(jnp.float32), jnp.min(codes), jnp.max(codes)

        codes = jax.eval_shape(lambda x: encode(tok.variables, x)[0], jax.ShapeDtypeStruct((1, *shape), jnp.float32))
        return Functions(encode, decode, shape, tuple(codes.shape[1:]))
    if modality == "video":
        def encode(v, x):
            safe, bad, xmin, xmax = _checked(x)
            codes, _ = model.apply(v, safe, None, method=model.encode_stream)
            return codes.astype(jnp.int32), bad, xmin, xmax

        def decode(v, codes):
            frames, _ = model.apply(v, codes, None, method=model.decode_stream)
            return jnp.clip(frames, 0.0, 1.0).astype(jnp.float32), jnp.min(codes), jnp.max(codes)

        shape = tuple(tok.input_shape)
        return Functions(encode, decode, shape, tuple(tok.codes_shape))
    if modality == "audio":
        hop, delay = tok.hop_length, tok.delay
        length = int(length or hop * max(1, round(tok.sample_rate / hop)))
        if length % hop:
            raise ValueError(f"export_compiled: length must be whole frames (a multiple of {hop} samples); got {length}")
        total = -(-(length + delay) // hop)

        def encode(v, x):
            safe, bad, xmin, xmax = _checked(x)
            padded = jnp.pad(safe, ((0, 0), (0, total * hop - length)))[..., None]
            return model.apply(v, padded, None, method=model.encode).astype(jnp.int32), bad, xmin, xmax

        def decode(v, codes):
            wave = jnp.clip(model.apply(v, codes, method=model.decode), -1.0, 1.0)[..., 0]
            return wave[:, delay:].astype(jnp.float32), jnp.min(codes), jnp.max(codes)

        return Functions(encode, decode, (length,), (total, int(tok.codes_shape[-1])))
    raise ValueError(f"export_compiled: a {modality!r} tokenizer maps ids through its table; it has no compiled "
                     f"form (use the tokenizer itself)")


def _export(fn, args, platforms):
    try:
        return jax.export.export(jax.jit(fn), platforms=platforms)(*args), list(platforms)
    except Exception:  # some lowering rule is missing for another platform: export for this one
        here = [jax.default_backend()]
        return jax.export.export(jax.jit(fn), platforms=here)(*args), here


def export_compiled(tok, path: str, *, batch_size: int | None = None, length: int | None = None) -> str:
    """Writes ``tok``'s folder (:meth:`~vqjax.tokenizers.Tokenizer.export`) plus ``encode.jaxexport``,
    ``decode.jaxexport`` and ``compiled.json``. The batch axis is symbolic unless the model refuses it (then
    ``batch_size``, default 1); ``length`` sets the exported length of audio chunks and time series."""
    if tok.model is None:
        raise ValueError(f"export_compiled: a {tok.modality!r} tokenizer has no model to compile")
    fns = functions(tok, length)
    path = tok.export(path)
    variables = plain_tree(tok.variables)
    avals = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), variables)
    out = {"format": "vqjax-compiled/1", "encode": ENCODE_FILE, "decode": DECODE_FILE,
           "input_shape": list(fns.input_shape), "codes_shape": list(fns.codes_shape), "modality": tok.modality}
    exported = {}
    for batch in ("symbolic", int(batch_size or 1)):
        try:
            b = jax.export.symbolic_shape("b")[0] if batch == "symbolic" else batch
            x = jax.ShapeDtypeStruct((b, *fns.input_shape), fns.input_dtype)
            codes = jax.ShapeDtypeStruct((b, *fns.codes_shape), jnp.int32)
            exported["encode"], platforms = _export(fns.encode, (avals, x), PLATFORMS)
            exported["decode"], _ = _export(fns.decode, (avals, codes), platforms)
            out.update(batch=batch, platforms=platforms)
            break
        except Exception:  # the model needs a concrete batch size (shape arithmetic on it): export at one size
            if batch != "symbolic":
                raise
    for key, name in (("encode", ENCODE_FILE), ("decode", DECODE_FILE)):
        with open(os.path.join(path, name + ".tmp"), "wb") as fh:
            fh.write(exported[key].serialize())
        os.replace(os.path.join(path, name + ".tmp"), os.path.join(path, name))
    with open(os.path.join(path, COMPILED_FILE), "w") as fh:
        json.dump(out, fh, indent=1)
    return path


@dataclasses.dataclass(frozen=True)
class CompiledTokenizer:
    """A tokenizer's exported encode and decode with its weights: ``encode(x)`` and ``decode(codes)`` check and
    refuse input as the Python tokenizer does.

    Attributes:
      spec: the folder's spec; variables: the weights; info: ``compiled.json``.
    """

    spec: dict
    variables: dict
    info: dict
    encode_fn: Any
    decode_fn: Any

    @property
    def modality(self) -> str:
        return self.spec["modality"]

    @property
    def vocab_size(self) -> int:
        return int(self.spec["vocab_size"])

    def _batch(self, x, name: str, shape, what: str) -> None:
        batch = self.info["batch"]
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"CompiledTokenizer.{name}: {what} must have shape [B, {', '.join(map(str, shape))}] "
                             f"(as exported); got {tuple(x.shape)}")
        if batch != "symbolic" and x.shape[0] != batch:
            raise ValueError(f"CompiledTokenizer.{name}: this export takes batches of {batch}; got {x.shape[0]}")

    def encode(self, x) -> np.ndarray:
        """int32 codes of a batch (the exported input shape), refusing NaN/Inf and values outside the spec's
        range (audio: [-1, 1])."""
        x = np.asarray(x)
        lo, hi = self.spec["input"].get("range") or (-np.inf, np.inf)
        if x.dtype == np.uint8 and (lo, hi) == (0.0, 1.0):
            x = x.astype(np.float32) / 255.0
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"CompiledTokenizer.encode: input must be floating; got dtype {x.dtype}")
        self._batch(x, "encode", self.info["input_shape"], "input")
        codes, bad, xmin, xmax = self.encode_fn.call(self.variables, jnp.asarray(x, jnp.float32))
        if int(bad):
            raise ValueError(f"CompiledTokenizer.encode: input holds {int(bad)} NaN/Inf value(s)")
        if float(xmin) < lo or float(xmax) > hi:
            raise ValueError(f"CompiledTokenizer.encode: values must lie in [{lo}, {hi}]; got min {float(xmin):g}, "
                             f"max {float(xmax):g}")
        return np.asarray(codes)

    def decode(self, codes) -> np.ndarray:
        """float32 output of int codes (the exported codes shape), each in ``[0, vocab_size)``."""
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"CompiledTokenizer.decode: codes must be integers; got dtype {codes.dtype}")
        self._batch(codes, "decode", self.info["codes_shape"], "codes")
        out, cmin, cmax = self.decode_fn.call(self.variables, jnp.asarray(codes, jnp.int32))
        if int(cmin) < 0 or int(cmax) >= self.vocab_size:
            raise ValueError(f"CompiledTokenizer.decode: codes must lie in [0, {self.vocab_size}); got min "
                             f"{int(cmin)}, max {int(cmax)}")
        return np.asarray(out)


def load_compiled(path: str, *, limits: Limits = Limits()) -> CompiledTokenizer:
    """The compiled tokenizer in ``path`` (:func:`export_compiled`), with jax alone: nothing of
    ``vqjax.models`` or ``vqjax.nn`` is imported. The weights must have the exported functions' argument names,
    shapes and dtypes, and match the spec's fingerprint.

    Raises:
      FileNotFoundError: no compiled export in ``path``; :class:`~vqjax.tokenizers.safe.ArtifactError`: a file
        refused.
    """
    path = os.path.abspath(os.path.expanduser(path))
    info_file = os.path.join(path, COMPILED_FILE)
    if not os.path.exists(info_file):
        raise FileNotFoundError(f"load_compiled: {path!r} holds no {COMPILED_FILE} (write it with "
                                f"tok.export_compiled)")
    spec_file = os.path.join(path, SPEC_FILE)
    spec = check_spec(read_json(spec_file, limits), spec_file, limits, check_model=False)
    info = read_json(info_file, limits, what="compiled")
    fns = []
    for key in ("encode", "decode"):
        file = folder_file(path, info.get(key), info_file, key)
        with open(file, "rb") as fh:
            try:
                fns.append(jax.export.deserialize(bytearray(fh.read())))
            except Exception as err:  # a damaged serialization raises many types: all refused alike
                raise ArtifactError(file, key, f"not a serialized jax.export function ({type(err).__name__})") \
                    from None
    weights = folder_file(path, spec.get("files", {}).get("weights", "model.safetensors"), spec_file,
                          "files.weights")
    args, _ = jax.tree_util.tree_unflatten(fns[0].in_tree, fns[0].in_avals)
    expected = {k: (np.dtype(v.dtype), tuple(v.shape)) for k, v in flatten(args[0]).items()}
    variables = unflatten(read_safetensors(weights, limits, expected))
    tok = CompiledTokenizer(spec, variables, info, fns[0], fns[1])
    want = spec.get("fingerprint")
    if want is not None and fingerprint(tok) != want:
        raise ArtifactError(spec_file, "fingerprint", "does not match the weights: a file was changed or replaced")
    return tok
