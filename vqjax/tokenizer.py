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

Audio (``modality='audio'``) loads as :class:`AudioTokenizer`: signals of any length, a stated sample rate,
codes ``[B, frames, levels]`` (see its docstring for its rules). Video (``modality='video'``) loads as
:class:`VideoTokenizer`: clips of any causal length and size, and chunked encoding. Time series
(``modality='timeseries'``) load as :class:`TimeSeriesTokenizer`: raw multichannel signals of any length that is a
multiple of the hop, normalised by the statistics the spec carries. Catalogue items (``modality='item'``) load as
:class:`SemanticIdTokenizer`: item ids to their semantic-ID tuples and back, and new items given IDs from their
content.
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

__all__ = ["Tokenizer", "AudioTokenizer", "VideoTokenizer", "TimeSeriesTokenizer", "SemanticIdTokenizer", "write_spec", "read_spec", "FORMAT_VERSION", "SPEC_FILE",
           "WEIGHTS_FILE"]

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

        if spec["modality"] == "item" and not issubclass(cls, SemanticIdTokenizer):
            cls = SemanticIdTokenizer
        if spec["modality"] == "audio" and not issubclass(cls, AudioTokenizer):
            cls = AudioTokenizer
        if spec["modality"] == "video" and not issubclass(cls, VideoTokenizer):
            cls = VideoTokenizer
        if spec["modality"] == "timeseries" and not issubclass(cls, TimeSeriesTokenizer):
            cls = TimeSeriesTokenizer
        model = model_from_spec(spec["model"])
        weights_file = os.path.join(path, WEIGHTS_FILE)
        if os.path.exists(weights_file) and step is None:
            import flax.serialization

            with open(weights_file, "rb") as fh:
                variables = flax.serialization.msgpack_restore(fh.read())
            return cls(spec, model, variables, spec.get("step"), path)._with_files(path)
        variables, step = _restore_checkpoint(path, spec, step)
        return cls({**spec, "step": step}, model, variables, step, path)._with_files(path)

    def _with_files(self, path: str) -> "Tokenizer":
        """The tokenizer with whatever else its folder holds besides spec and weights (a hook for subclasses)."""
        return self

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
        self._export_files(path)
        return path

    def _export_files(self, path: str) -> None:
        """Writes whatever else :meth:`_with_files` reads (a hook for subclasses)."""

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
        if dtype == np.uint8 and self.modality in ("image", "video") and self.value_range == (0.0, 1.0):
            return jnp.asarray(x).astype(jnp.float32) / 255.0
        if not np.issubdtype(dtype, np.floating):
            rule = f" (uint8 {self.modality}s are divided by 255)" if self.modality in ("image", "video") else ""
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


class AudioTokenizer(Tokenizer):
    """A speech or audio codec's tokenizer (``modality='audio'``, from the ``audio_codec`` task).

    ``encode(x, sample_rate=...)`` takes a batch of mono signals ``[B, T]`` or ``[B, T, 1]`` of any length ``T``
    and returns int32 codes ``[B, frames, levels]``, ``frames = ceil((T + delay) / hop_length)`` (the signal
    zero-padded to whole frames, and past the decoder's :attr:`delay`); ``decode(codes)`` returns float32
    ``[B, frames * hop_length - delay]`` in [-1, 1], sample ``n`` the estimate of input sample ``n``. The model
    learnt on signals high-passed at ``spec['highpass_hz']`` and loudness-normalised to ``spec['loudness_db']``
    (:func:`vqjax.data.audio.highpass`, :func:`vqjax.data.audio.normalize_loudness`); ``encode`` takes the
    samples as given, so prepare other recordings the same way for the quality it was judged at. The rules:

    * ``sample_rate`` is required; a rate other than the model's is resampled (polyphase, exact for rational
      ratios) before encoding, so the codes always describe the model's rate;
    * float samples must lie in [-1, 1]; int16 PCM is divided by 32767; other dtypes, stereo ``[B, T, 2]``, empty
      signals, signals shorter than one frame and NaN/Inf are refused with a ``ValueError``;
    * ``lengths [B]`` (samples) encodes a padded batch of signals of different lengths: example ``b``'s codes are
      exactly those of encoding ``x[b, :lengths[b]]`` alone, and its frames past ``ceil(lengths[b] / hop)`` are
      ``-1``. A causal model encodes the batch in one call (its frames never see what follows); a non-causal one
      encodes each group of equal frame count at that length;
    * ``num_levels`` keeps a residual codec's first levels (a lower bitrate); ``decode`` accepts fewer levels than
      the model has, and ``-1`` frames (padding, as ``encode`` returns them) decode to silence.

    Streaming (causal models): ``encode_chunk(x, state, sample_rate=...)`` and ``decode_chunk(codes, state)`` carry
    the encoder's and decoder's state from chunk to chunk (``state=None`` starts a signal); chunks of whole frames
    give exactly the codes and samples of the whole signal. ``decode_chunk`` returns the decoder's samples as they
    come, lagging the input by :attr:`delay` (``decode`` drops those first ``delay`` samples).
    """

    @property
    def codes_shape(self) -> tuple:
        """``(None, levels)``: any number of frames."""
        return tuple(None if v is None else int(v) for v in self.spec["codes_shape"])

    @property
    def input_shape(self) -> tuple:
        return tuple(None if v is None else int(v) for v in self.spec["input"]["shape"])

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        return int(self.model.hop_length)

    @property
    def kbps(self) -> float:
        """Bitrate of the full codes: ``frame_rate * levels * log2(vocab_size) / 1000``."""
        return float(self.spec["kbps"])

    @property
    def num_levels(self) -> int | None:
        """A residual codec's levels (None for a single quantizer)."""
        return self.model.num_levels

    @property
    def delay(self) -> int:
        """Samples by which the decoder's raw output lags the input (0 but for a causal inverse-STFT decoder)."""
        return int(self.model.delay)

    def _signals(self, x, sample_rate) -> np.ndarray:
        name = "AudioTokenizer.encode"
        if sample_rate is None:
            raise ValueError(f"{name}: sample_rate is required (this model reads {self.sample_rate} Hz; other rates "
                             f"are resampled)")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"{name}: sample_rate must be a positive int; got {sample_rate!r}")
        x = np.asarray(x)
        if x.ndim == 3:
            if x.shape[-1] != 1:
                raise ValueError(f"{name}: this model is mono; got {x.shape[-1]} channels in shape {x.shape} "
                                 f"(mix down first, e.g. x.mean(-1))")
            x = x[..., 0]
        if x.ndim != 2:
            raise ValueError(f"{name}: x must be a batch of mono signals [B, T] or [B, T, 1]; got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: x is empty (shape {x.shape})")
        if x.dtype == np.int16:
            x = x.astype(np.float32) / np.float32(32767.0)
        elif not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{name}: samples must be floating in [-1, 1] or int16 PCM; got dtype {x.dtype}")
        x = x.astype(np.float32)
        bad = int(np.sum(~np.isfinite(x)))
        if bad:
            raise ValueError(f"{name}: the signal holds {bad} NaN/Inf sample(s)")
        top = float(np.max(np.abs(x)))
        if top > 1.0:
            raise ValueError(f"{name}: samples must lie in [-1, 1]; got a peak of {top:g}")
        if int(sample_rate) != self.sample_rate:
            from vqjax.data.audio import resample

            x = resample(x.T, int(sample_rate), int(self.sample_rate)).T
        return x

    def encode(self, x, *, sample_rate: int | None = None, num_levels: int | None = None, lengths=None
               ) -> jax.Array:
        """int32 codes ``[B, frames, levels]`` (see the class docstring for the rules)."""
        name = "AudioTokenizer.encode"
        rate_in = sample_rate
        x = self._signals(x, sample_rate)
        b, t = x.shape
        hop = self.hop_length
        if lengths is None:
            lengths = np.full(b, t, np.int64)
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (b,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"{name}: lengths must be {b} ints (one per signal); got {lengths!r}")
            if int(rate_in) != self.sample_rate:
                lengths = np.ceil(lengths * self.sample_rate / int(rate_in)).astype(np.int64)
            if lengths.min() < 1 or lengths.max() > t:
                raise ValueError(f"{name}: lengths must lie in [1, {t}] (the padded length); got {lengths.tolist()}")
        if lengths.min() < hop:
            raise ValueError(f"{name}: signals must hold at least one frame ({hop} samples = "
                             f"{1000 * hop / self.sample_rate:g} ms at {self.sample_rate} Hz); got "
                             f"{int(lengths.min())} samples")
        levels = self.num_levels
        if num_levels is not None and (levels is None or not 1 <= num_levels <= levels):
            raise ValueError(f"{name}: num_levels must lie in [1, {levels}] for this codec; got {num_levels}"
                             if levels is not None else f"{name}: num_levels needs a residual codec")
        frames = -(-(lengths + self.delay) // hop)
        total = int(-(-(t + self.delay) // hop))
        causal = bool(getattr(self.model.encoder, "causal", True))
        groups = [np.arange(b)] if causal else [np.flatnonzero(frames == f) for f in np.unique(frames)]
        out = None
        for idx in groups:
            f = total if causal else int(frames[idx[0]])
            chunk = np.zeros((idx.size, f * hop, 1), np.float32)
            n = min(t, f * hop)
            chunk[:, :n, 0] = x[idx, :n]
            if not causal:                    # each signal alone: zeros after its own length, as encoded alone
                chunk[np.arange(f * hop)[None, :] >= lengths[idx][:, None]] = 0.0
            codes = np.asarray(_audio_encode(self.model, self.variables, jnp.asarray(chunk), num_levels))
            if out is None:
                out = np.full((b, total) + codes.shape[2:], -1, np.int32)
            out[idx, :f] = codes
        keep = np.arange(total)[None, :] < frames[:, None]
        out[~keep] = -1
        return jnp.asarray(out)

    def _streaming(self, name: str) -> None:
        if not bool(getattr(self.model.encoder, "causal", False)):
            raise ValueError(f"AudioTokenizer.{name}: streaming needs a causal model; this one was trained with "
                             f"causal=False")

    def encode_chunk(self, x, state=None, *, sample_rate: int | None = None, num_levels: int | None = None):
        """``(codes [B, frames, levels], state)`` of the next chunk ``x [B, T]`` of a signal, ``T`` a multiple of
        the hop length, at the model's ``sample_rate`` (chunks are not resampled: a resampler has state too)."""
        self._streaming("encode_chunk")
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"AudioTokenizer.encode_chunk: chunks must be at the model's rate {self.sample_rate} Hz; "
                             f"got {sample_rate} (resample the whole signal first)")
        x = self._signals(x, self.sample_rate)
        if x.shape[1] % self.hop_length:
            raise ValueError(f"AudioTokenizer.encode_chunk: a chunk must hold whole frames (a multiple of "
                             f"{self.hop_length} samples); got {x.shape[1]}")
        codes, state = _audio_encode_chunk(self.model, self.variables, jnp.asarray(x[..., None]), state, num_levels)
        return codes, state

    def decode_chunk(self, codes, state=None):
        """``(samples [B, frames * hop_length], state)`` of the next chunk of codes (``state=None`` starts a
        signal); codes as for :meth:`decode`, without padding frames."""
        self._streaming("decode_chunk")
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer) or codes.shape[1] == 0:
            raise ValueError(f"AudioTokenizer.decode_chunk: codes must be integer [B, frames, levels]; got "
                             f"{codes.dtype} {codes.shape}")
        if codes.min() < 0 or codes.max() >= self.vocab_size:
            raise ValueError(f"AudioTokenizer.decode_chunk: codes must lie in [0, {self.vocab_size}); got min "
                             f"{int(codes.min())}, max {int(codes.max())}")
        wave, state = _audio_decode_chunk(self.model, self.variables, jnp.asarray(codes, jnp.int32), state)
        return wave[..., 0], state

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, frames * hop_length]`` in [-1, 1] from codes ``[B, frames, levels']`` (``levels' <=``
        the model's); ``-1`` frames are silence. Raises ``ValueError`` for a code outside ``[0, vocab_size)``
        that is not a whole ``-1`` frame, or a wrong shape."""
        name = "AudioTokenizer.decode"
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer) or codes.shape[1] == 0:
            raise ValueError(f"{name}: codes must be integer [B, frames, levels]; got {codes.dtype} {codes.shape}")
        levels = self.codes_shape[-1]
        if not 1 <= codes.shape[2] <= levels:
            raise ValueError(f"{name}: codes must have between 1 and {levels} levels; got {codes.shape[2]}")
        pad = np.all(codes == -1, axis=2)
        real = codes[~pad]
        if real.size and (real.min() < 0 or real.max() >= self.vocab_size):
            raise ValueError(f"{name}: codes must lie in [0, {self.vocab_size}) (or be whole -1 padding frames); "
                             f"got min {int(real.min())}, max {int(real.max())}")
        safe = np.where(pad[..., None], 0, codes).astype(np.int32)
        wave = np.asarray(_audio_decode(self.model, self.variables, jnp.asarray(safe)))[..., 0]
        wave = wave * np.repeat(~pad, self.hop_length, axis=1)
        return jnp.asarray(wave[:, self.delay:], jnp.float32)


@jax.jit(static_argnums=(0, 3))
def _audio_encode(model, variables, x, num_levels):
    return model.apply(variables, x, num_levels, method=model.encode).astype(jnp.int32)


@jax.jit(static_argnums=(0, 4))
def _audio_encode_chunk(model, variables, x, state, num_levels):
    codes, state = model.apply(variables, x, state, num_levels, method=model.encode_stream)
    return codes.astype(jnp.int32), state


@jax.jit(static_argnums=0)
def _audio_decode_chunk(model, variables, codes, state):
    wave, state = model.apply(variables, codes, state, method=model.decode_stream)
    return jnp.clip(wave, -1.0, 1.0).astype(jnp.float32), state


@jax.jit(static_argnums=0)
def _audio_decode(model, variables, codes):
    return jnp.clip(model.apply(variables, codes, method=model.decode), -1.0, 1.0).astype(jnp.float32)


class VideoTokenizer(Tokenizer):
    """A causal video tokenizer (``modality='video'``, from the ``video_tokenizer`` task).

    ``encode(x)`` takes clips ``[B, T, H, W, C]`` with ``T = 1 + s n`` frames (``s`` = :attr:`temporal_stride`:
    the first frame alone, then whole groups of ``s``; a single image is ``T = 1``), ``H`` and ``W`` multiples of
    :attr:`spatial_stride` and the trained number of channels, and returns int32 codes ``[B, 1 + n, H / f, W / f]``
    (plus a levels axis for multi-codebook quantizers); ``decode(codes)`` returns float32 clips in ``[0, 1]``.
    Float clips must lie in ``[0, 1]``; uint8 clips are divided by 255; other dtypes, a wrong layout or size and
    NaN/Inf are refused with a ``ValueError``. :attr:`frame_rate` is the rate the tokenizer was trained at.

    ``encode_chunk(x, state)`` and ``decode_chunk(codes, state)`` carry the causal state from chunk to chunk
    (``state=None`` starts a clip: ``1 + s a`` frames, later chunks ``s b``): the chunks' codes and frames are the
    whole clip's.
    """

    @property
    def temporal_stride(self) -> int:
        return int(self.model.temporal_stride)

    @property
    def spatial_stride(self) -> int:
        return int(self.model.spatial_stride)

    def _clips(self, x, name: str, first: bool = True) -> jax.Array:
        x = np.asarray(x)
        channels = int(self.spec["input"]["shape"][-1])
        if x.ndim != 5 or x.shape[-1] != channels:
            raise ValueError(f"{name}: clips must be [B, frames, height, width, {channels}]; got shape {x.shape}")
        t, h, w = x.shape[1:4]
        s, f = self.temporal_stride, self.spatial_stride
        if x.shape[0] == 0 or t == 0:
            raise ValueError(f"{name}: x is empty (shape {x.shape})")
        if first and (t - 1) % s:
            raise ValueError(f"{name}: a clip (or a first chunk) must hold 1 + {s} * n frames (the first frame on its "
                             f"own, then groups of {s}); got {t}")
        if not first and t % s:
            raise ValueError(f"{name}: a later chunk must hold a multiple of {s} frames; got {t}")
        if h % f or w % f:
            raise ValueError(f"{name}: height and width must be multiples of {f} (the spatial downsampling); got "
                             f"{h}x{w}")
        if x.dtype == np.uint8:
            return jnp.asarray(x, jnp.float32) / 255.0
        if not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{name}: clips must be floating in [0, 1] or uint8; got dtype {x.dtype}")
        x = x.astype(np.float32)
        bad = int(np.sum(~np.isfinite(x)))
        if bad:
            raise ValueError(f"{name}: the clip holds {bad} NaN/Inf value(s)")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"{name}: values must lie in [0, 1]; got min {x.min():g}, max {x.max():g} (clips in "
                             f"0..255 must be uint8)")
        return jnp.asarray(x)

    def _codes(self, codes, name: str) -> jax.Array:
        return _checked_codes(codes, name, ("latent frames", "h", "w"), self.codes_shape[3:], self.vocab_size)

    def encode(self, x) -> jax.Array:
        """int32 codes of clips (see the class docstring for the rules)."""
        return _video_encode(self.model, self.variables, self._clips(x, "VideoTokenizer.encode"), None)[0]

    def decode(self, codes) -> jax.Array:
        """float32 clips ``[B, 1 + s n, H, W, C]`` in ``[0, 1]`` from codes ``[B, 1 + n, h, w(, levels)]``."""
        return _video_decode(self.model, self.variables, self._codes(codes, "VideoTokenizer.decode"), None)[0]

    def encode_chunk(self, x, state=None):
        """``(codes, state)`` of the next chunk of a clip (``state=None``: its first chunk, ``1 + s a`` frames)."""
        clips = self._clips(x, "VideoTokenizer.encode_chunk", first=state is None)
        return _video_encode(self.model, self.variables, clips, state)

    def decode_chunk(self, codes, state=None):
        """``(frames, state)`` of the next chunk of codes (``state=None``: a clip's first chunk)."""
        return _video_decode(self.model, self.variables, self._codes(codes, "VideoTokenizer.decode_chunk"), state)


def _checked_codes(codes, name: str, axes: tuple, tail: tuple, vocab_size: int) -> jax.Array:
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


@jax.jit(static_argnums=0)
def _video_encode(model, variables, x, state):
    codes, state = model.apply(variables, x, state, method=model.encode_stream)
    return codes.astype(jnp.int32), state


@jax.jit(static_argnums=0)
def _video_decode(model, variables, codes, state):
    frames, state = model.apply(variables, codes, state, method=model.decode_stream)
    return jnp.clip(frames, 0.0, 1.0).astype(jnp.float32), state


class TimeSeriesTokenizer(Tokenizer):
    """A multichannel time-series tokenizer (``modality='timeseries'``, from the ``sequence_tokenizer`` task).

    ``encode(x)`` takes raw float signals ``[B, T, C]`` (``[B, T]`` for one channel) in the units of the training
    data: ``C`` must be the trained :attr:`channels`, ``T`` a positive multiple of :attr:`hop_length`; the
    per-channel normalisation recorded in the spec (``spec['normalization']``) is applied inside the model. It
    returns int32 codes ``[B, T / hop(, levels)]`` (a multi-scale model: ``[B, sum_s T / (hop s)]``);
    ``decode(codes)`` returns float32 ``[B, T, C]`` in raw units. Non-floating dtypes, a wrong channel count, a
    length that is not a whole number of frames (too short included), empty input and NaN/Inf are refused with a
    ``ValueError``; codes outside ``[0, vocab_size)`` too.
    """

    @property
    def channels(self) -> int:
        return int(self.spec["input"]["shape"][-1])

    @property
    def channel_names(self) -> list[str]:
        return list(self.spec.get("channels") or [f"ch {i}" for i in range(self.channels)])

    @property
    def normalization(self) -> dict:
        """``{'mean': [C], 'scale': [C]}``: ``encode`` reads ``(x - mean) / scale``."""
        return dict(self.spec["normalization"])

    @property
    def hop_length(self) -> int:
        """Samples per code position (times the largest temporal scale of a multi-scale model)."""
        return int(self.model.hop_length) * max(getattr(self.model.quantizer, "scales", (1,)))

    def encode(self, x) -> jax.Array:
        """int32 codes of raw signals (see the class docstring for the rules)."""
        name = "TimeSeriesTokenizer.encode"
        x = np.asarray(x)
        if x.ndim == 2 and self.channels == 1:
            x = x[..., None]
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"{name}: signals must be [B, T, {self.channels}] ({self.channels} channels: "
                             f"{', '.join(self.channel_names)}); got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: x is empty (shape {x.shape})")
        if x.shape[1] % self.hop_length:
            raise ValueError(f"{name}: the length T ({x.shape[1]}) must be a positive multiple of {self.hop_length} "
                             f"samples (one code position); pad or crop the signal")
        if not np.issubdtype(x.dtype, np.floating):
            raise DTypeError(f"{name}: signals must be floating; got dtype {x.dtype}")
        codes, bad, _, _ = _encode_checked(self.model, self.variables, jnp.asarray(x, jnp.float32))
        if int(bad):
            raise ValueError(f"{name}: the signals hold {int(bad)} NaN/Inf value(s)")
        return codes

    def decode(self, codes) -> jax.Array:
        """float32 ``[B, T, C]`` raw signals from codes ``[B, positions(, levels)]``."""
        codes = _checked_codes(codes, "TimeSeriesTokenizer.decode", ("positions",), self.codes_shape[1:],
                               self.vocab_size)
        scales = getattr(self.model.quantizer, "scales", None)
        if scales is not None:
            self.model.quantizer.frames_for(codes.shape[1])         # raises for a count of no whole frames
        out, _, _ = _decode_checked(self.model, self.variables, codes, -np.inf, np.inf)
        return out


ITEM_IDS_FILE = "item_ids.npz"


@dataclasses.dataclass(frozen=True)
class SemanticIdTokenizer(Tokenizer):
    """Semantic IDs of a catalogue's items (``modality='item'``, from the ``semantic_ids`` task).

    ``encode(item_ids)`` -> int32 ``item_ids.shape + (L',)``: each item's code tuple (the RQ-VAE's levels, plus
    TIGER's disambiguation level with ``collisions='extra_level'``); ``decode(codes)`` -> the items, refusing a tuple
    that names none; :meth:`valid_codes` the tuples that exist (a generative recommender or a language model is
    constrained to them). Every tuple names exactly one item. ``add_items(titles, years, genres)`` gives new items
    IDs from their content (and the collaborative vectors the content predicts) through the trained RQ-VAE, without
    retraining and without changing any existing ID; it returns a new tokenizer.

    Besides the spec and weights the folder holds ``item_ids.npz`` (the codes of every item, and the step they were
    computed at) and ``featurizer.{json,npz}`` (:class:`vqjax.models.semantic_ids.ItemFeaturizer`).

    Attributes:
      item_codes: int32 ``[N, L']``.
      featurizer: the :class:`~vqjax.models.semantic_ids.ItemFeaturizer`.
    """

    item_codes: np.ndarray | None = None
    featurizer: Any = None

    @property
    def num_items(self) -> int:
        return int(self.item_codes.shape[0])

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Codes per level (the disambiguation level last, when there is one)."""
        return tuple(int(k) for k in self.spec["level_sizes"])

    def _with_files(self, path: str) -> "SemanticIdTokenizer":
        from vqjax.models.semantic_ids import ItemFeaturizer

        file = os.path.join(path, ITEM_IDS_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"SemanticIdTokenizer.load: {path!r} has no {ITEM_IDS_FILE} (the semantic_ids "
                                    f"run writes it when training ends)")
        with np.load(file) as data:
            codes = data["codes"].astype(np.int32)
        return dataclasses.replace(self, item_codes=codes, featurizer=ItemFeaturizer.load(path))

    def _export_files(self, path: str) -> None:
        write_item_ids(path, self.item_codes, self.step)
        self.featurizer.save(path)

    def encode(self, item_ids) -> np.ndarray:
        """int32 codes ``item_ids.shape + (L',)`` of items ``item_ids`` (ints in ``[0, num_items)``).

        Raises:
          TypeError: non-integer ids; ValueError: an id outside the catalogue.
        """
        ids = np.asarray(item_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"SemanticIdTokenizer.encode: item ids must be integers; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_items):
            bad = ids[(ids < 0) | (ids >= self.num_items)]
            raise ValueError(f"SemanticIdTokenizer.encode: item ids must lie in [0, {self.num_items}); got "
                             f"{bad.size} unknown id(s), e.g. {int(bad.flat[0])}")
        return self.item_codes[ids]

    def decode(self, codes) -> np.ndarray:
        """int64 item ids ``codes.shape[:-1]`` of code tuples ``codes [..., L']``.

        Raises:
          ValueError: a wrong shape or dtype, a code outside ``[0, vocab_size)``, or a tuple that is no item's.
        """
        c = np.asarray(codes)
        width = self.codes_shape[0]
        if not np.issubdtype(c.dtype, np.integer) or c.ndim < 1 or c.shape[-1] != width:
            raise ValueError(f"SemanticIdTokenizer.decode: codes must be integer [..., {width}]; got {c.dtype} "
                             f"{c.shape}")
        if c.size and (c.min() < 0 or c.max() >= self.vocab_size):
            raise ValueError(f"SemanticIdTokenizer.decode: codes must lie in [0, {self.vocab_size}); got min "
                             f"{int(c.min())}, max {int(c.max())}")
        table = self._table()
        flat = np.ascontiguousarray(c.reshape(-1, width).astype(np.int32))
        out = np.asarray([table.get(row.tobytes(), -1) for row in flat], np.int64)
        if (out < 0).any():
            raise ValueError(f"SemanticIdTokenizer.decode: {int((out < 0).sum())} tuple(s) name no item, e.g. "
                             f"{flat[np.argmax(out < 0)].tolist()}")
        return out.reshape(c.shape[:-1])

    def valid_codes(self) -> np.ndarray:
        """int32 ``[N, L']``: every item's tuple (the only rows :meth:`decode` accepts)."""
        return self.item_codes

    def _table(self) -> dict:
        cache = self.__dict__.get("_rows")
        if cache is None:
            cache = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(self.item_codes))}
            object.__setattr__(self, "_rows", cache)
        return cache

    def add_items(self, titles, years, genres) -> "SemanticIdTokenizer":
        """A tokenizer whose catalogue also holds the new items (ids ``num_items ..``), IDs from their content.

        Args:
          titles: the new items' titles; years: release years (0 when unknown); genres: each item's genre names.

        Raises:
          ValueError: lists of different lengths, or an item whose group has no free code left.
        """
        from vqjax.models.semantic_ids import assign_new, item_terms

        titles, years, genres = list(titles), list(years), list(genres)
        if not (len(titles) == len(years) == len(genres)) or not titles:
            raise ValueError(f"SemanticIdTokenizer.add_items: titles, years and genres must be non-empty lists of "
                             f"one length; got {len(titles)}, {len(years)}, {len(genres)}")
        docs = [item_terms(str(t), int(y), list(g)) for t, y, g in zip(titles, years, genres)]
        feats = jnp.asarray(self.featurizer.features(docs))
        prefixes = np.asarray(_item_apply(self.model, self.variables, feats, "encode"))
        mode = self.spec["collisions"]
        costs = np.asarray(_item_apply(self.model, self.variables, feats, "last_level_costs")) \
            if mode == "balanced" else None
        new = assign_new(self.item_codes, prefixes, mode, size=self.level_sizes[-1], costs=costs)
        codes = np.concatenate([self.item_codes, new])
        spec = {**self.spec, "input": {**self.spec["input"], "range": [0, int(codes.shape[0]) - 1]},
                "num_items": int(codes.shape[0])}
        out = dataclasses.replace(self, spec=spec, item_codes=codes, path=None)
        out.__dict__.pop("_rows", None)
        return out


@jax.jit(static_argnums=(0, 3))
def _item_apply(model, variables, x, method):
    return model.apply(variables, x, method=getattr(model, method))


def write_item_ids(path: str, codes: np.ndarray, step: int | None) -> str:
    """Writes ``path/item_ids.npz`` (the catalogue's codes and the step of the weights they came from)."""
    os.makedirs(path, exist_ok=True)
    out = os.path.join(path, ITEM_IDS_FILE)
    with open(out + ".tmp", "wb") as fh:
        np.savez(fh, codes=np.asarray(codes, np.int32), step=np.int64(-1 if step is None else step))
    os.replace(out + ".tmp", out)
    return out
