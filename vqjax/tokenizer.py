"""A trained tokenizer of any modality as an artifact: ``vqjax.Tokenizer.load(path)``.

    tok = vqjax.Tokenizer.load("runs/mnist_vq")   # a training workdir, or a folder written by tok.export(dir)
    codes = tok.encode(images)                    # checked input -> int32 [B, *tok.codes_shape]
    images = tok.decode(codes)                    # codes in [0, tok.vocab_size) -> [B, *input shape]
    tok.modality, tok.vocab_size, tok.codes_shape, tok.tokens_per_second
    tok.export("artifacts/mnist_vq")              # spec.json + weights.msgpack, loadable without vqjax.train

The folder holds ``spec.json``, a small self-describing spec::

    {"format_version": 1, "modality": "image", "model": {"name": "image_tokenizer", "kwargs": {...}},
     "input": {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]},
     "codes_shape": [7, 7], "vocab_size": 1024, "tokens_per_second": null, "sample_rate": null,
     "frame_rate": null, "weights": {"params": "params", "vq_stats": "vq_stats"}, "step": 2000}

and the weights: ``weights.msgpack`` (flax msgpack of ``{'params', 'vq_stats', ...}``) in an exported folder, or
the latest orbax checkpoint of a training workdir, whose state entries ``spec['weights']`` names (the EMA
parameters when the run kept them). The model is rebuilt by :func:`vqjax.models.model_from_spec` from the spec
alone; nothing of :mod:`vqjax.train` is imported.

Input is refused, never clamped: ``encode`` raises ``ValueError`` for a wrong shape, NaN/Inf, or values outside
the spec's range, and ``TypeError`` for a dtype it has no rule for; ``decode`` raises ``ValueError`` for codes
outside ``[0, vocab_size)``. The checks run inside the same jitted call as the model, so valid input costs one
extra reduction.

Image rule: float images must lie in ``[0, 1]``; ``uint8`` images are divided by 255; other integer and bool
dtypes are refused (an int32 image in 0..255 is ambiguous: convert it to uint8 or scale it to [0, 1] yourself).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError

__all__ = ["Tokenizer", "write_spec", "read_spec", "FORMAT_VERSION", "SPEC_FILE", "WEIGHTS_FILE"]

FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.msgpack"
_REQUIRED = ("modality", "model", "input", "codes_shape", "vocab_size")


def write_spec(path: str, spec: dict) -> str:
    """Writes ``path/spec.json`` (atomically) with ``format_version`` added; returns the file's path."""
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"write_spec: spec needs the fields {missing}; got {sorted(spec)}")
    full = {"format_version": FORMAT_VERSION, "tokens_per_second": None, "sample_rate": None, "frame_rate": None,
            **spec}
    os.makedirs(path, exist_ok=True)
    out = os.path.join(path, SPEC_FILE)
    with open(out + ".tmp", "w") as fh:
        json.dump(full, fh, indent=2)
    os.replace(out + ".tmp", out)
    return out


def read_spec(path: str) -> dict:
    """``path/spec.json``, checked: a known format version and every required field."""
    file = os.path.join(path, SPEC_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"Tokenizer.load: {path!r} holds no {SPEC_FILE}: not a tokenizer folder or a "
                                f"training workdir of a tokenizer task")
    with open(file) as fh:
        spec = json.load(fh)
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"Tokenizer.load: {file} has format_version {version!r}; this vqjax reads "
                         f"{FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ValueError(f"Tokenizer.load: {file} lacks the fields {missing}")
    return spec


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A trained tokenizer: its spec, the model rebuilt from it, and the weights.

    Attributes:
      spec: the artifact's spec (see the module docstring).
      model: the Flax module (``encode``/``decode`` methods), from :func:`vqjax.models.model_from_spec`.
      variables: the weights, ``{'params', 'vq_stats'}``.
      step: the training step of the weights (None when unknown).
      path: the folder it was loaded from (None when built in memory).
    """

    spec: dict
    model: Any
    variables: dict
    step: int | None = None
    path: str | None = None

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
    def image_shape(self) -> tuple[int, ...]:
        return self.input_shape

    @property
    def value_range(self) -> tuple[float, float] | None:
        r = self.spec["input"].get("range")
        return None if r is None else (float(r[0]), float(r[1]))

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens per second of signal where time applies (audio, video, time series); None for images."""
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
    def load(cls, path: str, step: int | None = None) -> "Tokenizer":
        """The tokenizer in ``path``: a folder written by :meth:`export`, or a training workdir (its latest
        checkpoint, or ``step``). A graph tokenizer (``modality='graph'``) loads as a
        :class:`vqjax.graph.GraphTokenizer`, which has the same protocol.

        Raises:
          FileNotFoundError: no spec, no weights or no checkpoint; ValueError: an unknown format version or model.
        """
        path = os.path.abspath(os.path.expanduser(path))
        spec = read_spec(path)
        if spec["modality"] == "graph":                 # NodePiece: a vocabulary and node tokens, no weights
            from vqjax.graph.tokenizer import GraphTokenizer

            return GraphTokenizer.load(path, spec)
        from vqjax.models import model_from_spec

        model = model_from_spec(spec["model"])
        weights_file = os.path.join(path, WEIGHTS_FILE)
        if os.path.exists(weights_file) and step is None:
            import flax.serialization

            with open(weights_file, "rb") as fh:
                variables = flax.serialization.msgpack_restore(fh.read())
            return cls(spec, model, variables, spec.get("step"), path)
        variables, step = _restore_checkpoint(path, spec, step)
        return cls({**spec, "step": step}, model, variables, step, path)

    def export(self, path: str) -> str:
        """Writes ``path/spec.json`` and ``path/weights.msgpack``: everything :meth:`load` needs, and nothing of
        the training run. Returns ``path``."""
        import flax.serialization

        path = os.path.abspath(os.path.expanduser(path))
        spec = {k: v for k, v in self.spec.items() if k != "weights"}
        write_spec(path, {**spec, "step": self.step})
        host = _plain_tree(self.variables)
        out = os.path.join(path, WEIGHTS_FILE)
        with open(out + ".tmp", "wb") as fh:
            fh.write(flax.serialization.msgpack_serialize(host))
        os.replace(out + ".tmp", out)
        return path

    # -- encoding and decoding ---------------------------------------------------------------------------------
    def _prepare(self, x) -> jax.Array:
        name = "Tokenizer.encode"
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        shape = self.input_shape
        if x.ndim == len(shape) and self.modality == "image" and shape[-1] == 1:
            x = x[..., None]
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name}: input must have shape [B, {', '.join(map(str, shape))}]; "
                             f"got {tuple(x.shape)}")
        dtype = np.dtype(x.dtype)
        if dtype == np.uint8 and self.modality == "image" and self.value_range == (0.0, 1.0):
            return jnp.asarray(x).astype(jnp.float32) / 255.0
        if not np.issubdtype(dtype, np.floating):
            rule = " (uint8 images are divided by 255)" if self.modality == "image" else ""
            raise DTypeError(f"{name}: input must be floating{rule}; got dtype {dtype}")
        return jnp.asarray(x, jnp.float32)

    def encode(self, x) -> jax.Array:
        """int32 codes ``[B, *codes_shape]`` of a batch ``[B, *input_shape]`` (see the module docstring's rules).

        Raises:
          ValueError: wrong shape, NaN/Inf, or values outside the spec's range; :class:`vqjax.checks.DTypeError`
            (a TypeError and a ValueError): an unsupported dtype.
        """
        x = self._prepare(x)
        lo, hi = self.value_range or (-np.inf, np.inf)
        codes, bad_count, xmin, xmax = _encode_checked(self.model, self.variables, x)
        if int(bad_count):
            raise ValueError(f"Tokenizer.encode: input holds {int(bad_count)} NaN/Inf value(s)")
        if float(xmin) < lo or float(xmax) > hi:
            raise ValueError(f"Tokenizer.encode: {self.modality} values must lie in [{lo}, {hi}]; got min "
                             f"{float(xmin):g}, max {float(xmax):g}"
                             + (" (images in 0..255 must be uint8, or scaled to [0, 1])"
                                if self.modality == "image" and float(xmax) > hi else ""))
        return codes

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, *input_shape]`` from int codes ``[B, *codes_shape]``, each in ``[0, vocab_size)``.

        Raises:
          ValueError: wrong shape or dtype, or a code outside ``[0, vocab_size)`` (never clamped).
        """
        codes = codes if isinstance(codes, jax.Array) else np.asarray(codes)
        if tuple(codes.shape[1:]) != self.codes_shape or codes.ndim != len(self.codes_shape) + 1 or \
                not np.issubdtype(np.dtype(codes.dtype), np.integer):
            raise ValueError(f"Tokenizer.decode: codes must be integer [B, {', '.join(map(str, self.codes_shape))}]; "
                             f"got {codes.dtype} {tuple(codes.shape)}")
        lo, hi = self.value_range or (-np.inf, np.inf)
        out, cmin, cmax = _decode_checked(self.model, self.variables, jnp.asarray(codes, jnp.int32), lo, hi)
        if int(cmin) < 0 or int(cmax) >= self.vocab_size:
            raise ValueError(f"Tokenizer.decode: codes must lie in [0, {self.vocab_size}); got min {int(cmin)}, "
                             f"max {int(cmax)}")
        return out


def _plain_tree(tree):
    """Nested dicts of numpy arrays (NamedTuples as dicts of their fields), for msgpack."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return {k: _plain_tree(v) for k, v in zip(tree._fields, tree)}
    if isinstance(tree, dict):
        return {k: _plain_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return {str(i): _plain_tree(v) for i, v in enumerate(tree)}
    return np.asarray(tree)


def _restore_checkpoint(path: str, spec: dict, step: int | None):
    import orbax.checkpoint as ocp

    ckpt = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpt):
        raise FileNotFoundError(f"Tokenizer.load: {path!r} has neither {WEIGHTS_FILE} nor checkpoints/")
    with ocp.CheckpointManager(ckpt) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"Tokenizer.load: {path!r} has no checkpoint yet")
        if step not in mgr.all_steps():
            raise FileNotFoundError(f"Tokenizer.load: {path!r} has no checkpoint at step {step}; it has "
                                    f"{sorted(mgr.all_steps())}")
        restored = mgr.restore(step, args=ocp.args.StandardRestore())
    names = spec.get("weights", {"params": "params"})
    variables = {}
    for collection, entry in names.items():
        if entry not in restored:
            raise ValueError(f"Tokenizer.load: checkpoint {step} of {path!r} has no entry {entry!r} (the spec's "
                             f"weights.{collection}); it has {sorted(restored)}")
        variables[collection] = restored[entry]
    return variables, int(step)


@jax.jit(static_argnums=0)
def _encode_checked(model, variables, x):
    bad = jnp.sum(~jnp.isfinite(x))
    safe = jnp.where(jnp.isfinite(x), x, 0.0)
    codes = model.apply(variables, safe, method=model.encode)
    return codes.astype(jnp.int32), bad, jnp.min(safe), jnp.max(safe)


@jax.jit(static_argnums=0)
def _decode_checked(model, variables, codes, lo, hi):
    out = model.apply(variables, codes, method=model.decode)
    return jnp.clip(out, lo, hi).astype(jnp.float32), jnp.min(codes), jnp.max(codes)
