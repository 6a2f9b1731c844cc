"""Image tokenizers (``modality='image'``, from the ``image_tokenizer`` task).

``encode(images)`` takes ``[B, H, W, C]`` (``[B, H, W]`` for one channel) and returns int32 codes
``[B, *codes_shape]``; ``decode(codes)`` returns float32 images in ``[0, 1]``.

A 1D tokenizer (``spec['token_range'] = [k_min, K]``, ``codes_shape = [None]``, or ``[None, L]`` for
multi-codebook quantizers) writes ordered tokens whose every prefix decodes, so the budget is an argument::

    codes = tok.encode(images, num_tokens=8)          # [B, 8]: the first 8 of the K tokens
    images = tok.decode(codes)                        # any length in the token range
    adaptive = tok.encode_adaptive(images, max_error=1e-3)   # per image the fewest tokens with MSE <= 1e-3
    adaptive.lengths, adaptive.split()                # [B] lengths; one [k_b] array per image
    images = tok.decode(adaptive.codes, lengths=adaptive.lengths)

Image rule: float images must lie in ``[0, 1]``; ``uint8`` images are divided by 255; other integer and bool
dtypes are refused (an int32 image in 0..255 is ambiguous: convert it to uint8 or scale it to [0, 1] yourself).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.tokenizers.base import Tokenizer, register_tokenizer

__all__ = ["ImageTokenizer", "AdaptiveCodes"]


@dataclasses.dataclass(frozen=True)
class AdaptiveCodes:
    """What :meth:`ImageTokenizer.encode_adaptive` returns; it unpacks as ``codes, lengths = ...``.

    Attributes:
      codes: int32 ``[B, K]`` (``[B, K, L]``): image ``b``'s codes in its first ``lengths[b]`` positions, -1 after.
      lengths: int32 ``[B]``: the tokens each image spends.
      errors: float32 ``[B]``: each image's mean squared error decoded from those tokens.
      met: bool ``[B]``: whether the error is within the bound (False: even ``K`` tokens miss it; ``lengths = K``).
    """

    codes: np.ndarray
    lengths: np.ndarray
    errors: np.ndarray
    met: np.ndarray

    def __iter__(self):
        return iter((self.codes, self.lengths))

    def split(self) -> list[np.ndarray]:
        """One int32 array of ``lengths[b]`` codes per image."""
        return [c[:n] for c, n in zip(self.codes, self.lengths)]


@register_tokenizer("image")
class ImageTokenizer(Tokenizer):
    """A 2D image tokenizer artifact: fixed-shape images to a grid of codes and back (see the module docstring)."""

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)`` of one image."""
        return self.input_shape

    @property
    def codes_shape(self) -> tuple:
        """Shape of one image's codes; a 1D tokenizer's starts with None (any length in :attr:`token_range`)."""
        return tuple(None if v is None else int(v) for v in self.spec["codes_shape"])

    @property
    def token_range(self) -> tuple[int, int] | None:
        """``(k_min, K)``: the token counts a 1D tokenizer encodes and decodes; None for a grid tokenizer."""
        tr = self.spec.get("token_range")
        return None if tr is None else (int(tr[0]), int(tr[1]))

    @property
    def length_range(self) -> tuple[int, int] | None:
        """The span lengths :class:`vqjax.lm.MultimodalVocab` allows (the :attr:`token_range`)."""
        return self.token_range

    def _num_tokens(self, name: str, k, *, what: str = "num_tokens") -> int:
        """``k`` checked against the token range (1D tokenizers only)."""
        if self.token_range is None:
            raise ValueError(f"{name}: {what} applies to 1D tokenizers (spec token_range); this one writes a fixed "
                             f"grid of codes {list(self.codes_shape)}")
        lo, hi = self.token_range
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not lo <= k <= hi:
            raise ValueError(f"{name}: {what} must be an int in the trained range [{lo}, {hi}]; got {k!r}")
        return int(k)

    def encode(self, x, *, num_tokens: int | None = None) -> jax.Array:
        """int32 codes ``[B, *codes_shape]`` of ``[B, H, W, C]`` images; a 1D tokenizer's first ``num_tokens``
        (default: all ``K``), ``[B, num_tokens]``.

        Raises:
          ValueError: wrong shape, NaN/Inf or values outside ``[0, 1]``; ``num_tokens`` outside the trained
            range or given to a grid tokenizer. :class:`vqjax.checks.DTypeError`: an unsupported dtype.
        """
        if num_tokens is None:
            return super().encode(x)
        k = self._num_tokens("ImageTokenizer.encode", num_tokens)
        return super().encode(x)[:, :k]

    def encode_adaptive(self, x, *, max_error: float, batch_size: int | None = None) -> AdaptiveCodes:
        """Per image the fewest tokens (of a 1D tokenizer's range) whose decoded mean squared error is at most
        ``max_error`` (a PSNR of ``p`` dB is ``max_error = 10 ** (-p / 10)`` for images in ``[0, 1]``); images that
        even ``K`` tokens leave above it spend ``K`` (``met`` False). One compiled pass decodes every length.

        Raises:
          ValueError: a grid tokenizer, ``max_error`` not a non-negative finite number, or input ``encode``
            refuses.
        """
        name = "ImageTokenizer.encode_adaptive"
        if self.token_range is None:
            raise ValueError(f"{name}: needs a 1D tokenizer (spec token_range); this one writes a fixed grid of "
                             f"codes {list(self.codes_shape)}")
        if isinstance(max_error, bool) or not isinstance(max_error, (int, float, np.floating)) or \
                not np.isfinite(max_error) or max_error < 0:
            raise ValueError(f"{name}: max_error must be a finite number >= 0 (a mean squared error); got "
                             f"{max_error!r}")
        codes = np.asarray(super().encode(x))
        images = np.asarray(self._prepare(x))
        lo, hi = self.token_range
        step = batch_size or len(images)
        lengths, errors = [], []
        for start in range(0, len(images), max(step, 1)):
            n, e = _adaptive_lengths(self.model, self.variables, jnp.asarray(codes[start:start + step]),
                                     jnp.asarray(images[start:start + step]), lo, jnp.float32(max_error))
            lengths.append(np.asarray(n))
            errors.append(np.asarray(e))
        lengths, errors = np.concatenate(lengths), np.concatenate(errors)
        pos = np.arange(hi).reshape((1, hi) + (1,) * (codes.ndim - 2))
        padded = np.where(pos < lengths.reshape((-1, 1) + (1,) * (codes.ndim - 2)), codes, -1).astype(np.int32)
        return AdaptiveCodes(padded, lengths.astype(np.int32), errors.astype(np.float32), errors <= max_error)

    def decode(self, codes, *, lengths=None) -> jax.Array:
        """float32 images ``[B, H, W, C]`` in ``[0, 1]`` from codes ``[B, *codes_shape]``. A 1D tokenizer takes
        ``[B, k]`` codes (``[B, k, L]``) for any ``k`` in its token range; with ``lengths [B]`` each row decodes from
        its first ``lengths[b]`` codes and the rest (e.g. :meth:`encode_adaptive`'s -1 padding) is ignored; an
        :class:`AdaptiveCodes`, or a list of per-image code arrays of different lengths, decodes as such.

        Raises:
          ValueError: wrong shape or dtype, a code outside ``[0, vocab_size)``, a length outside the token range,
            or ``lengths`` given to a grid tokenizer.
        """
        if self.token_range is None:
            if lengths is not None:
                raise ValueError("ImageTokenizer.decode: lengths applies to 1D tokenizers (spec token_range); this "
                                 f"one decodes a fixed grid of codes {list(self.codes_shape)}")
            return super().decode(codes)
        return self._decode_prefixes(codes, lengths)

    def _decode_prefixes(self, codes, lengths) -> jax.Array:
        name = "ImageTokenizer.decode"
        if isinstance(codes, AdaptiveCodes):
            codes, lengths = codes.codes, codes.lengths if lengths is None else lengths
        elif isinstance(codes, (list, tuple)) and lengths is None and codes and \
                all(hasattr(c, "shape") or isinstance(c, (list, tuple)) for c in codes):
            rows = [np.asarray(c) for c in codes]
            if len({r.shape for r in rows}) > 1 and all(r.ndim == 1 + len(self.codes_shape[1:]) for r in rows):
                lengths = np.asarray([len(r) for r in rows])
                longest = int(lengths.max())
                codes = np.stack([np.concatenate([r, np.full((longest - len(r),) + r.shape[1:], -1, r.dtype)])
                                  for r in rows])
        codes = np.asarray(codes)
        tail = self.codes_shape[1:]
        lo, hi = self.token_range
        if codes.ndim != 2 + len(tail) or tuple(codes.shape[2:]) != tail or \
                not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{name}: codes must be integer [B, k{''.join(f', {t}' for t in tail)}] with k in "
                             f"[{lo}, {hi}]; got {codes.dtype} {codes.shape}")
        b, k = codes.shape[:2]
        if lengths is None:
            self._num_tokens(name, k, what="the codes' length k")
            lengths = np.full((b,), k, np.int32)
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (b,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"{name}: lengths must be integer [{b}] (one per row of codes); got {lengths.dtype} "
                                 f"{lengths.shape}")
            if b and (lengths.min() < lo or lengths.max() > min(hi, k)):
                raise ValueError(f"{name}: lengths must lie in the trained range [{lo}, {hi}] and fit the codes' "
                                 f"{k} positions; got min {int(lengths.min())}, max {int(lengths.max())}")
        pos = np.arange(k).reshape((1, k) + (1,) * len(tail))
        used = pos < lengths.reshape((-1, 1) + (1,) * len(tail))
        bad = used & ((codes < 0) | (codes >= self.vocab_size))
        if bad.any():
            got = codes[used]
            raise ValueError(f"{name}: codes must lie in [0, {self.vocab_size}); got min {int(got.min())}, max "
                             f"{int(got.max())}")
        full = np.zeros((b, hi) + tail, np.int32)
        full[:, :k] = np.where(used, codes, 0)
        lo_v, hi_v = self.value_range or (0.0, 1.0)
        return _decode_lengths(self.model, self.variables, jnp.asarray(full), jnp.asarray(lengths, jnp.int32),
                               lo_v, hi_v)

    def _prepare(self, x) -> jax.Array:
        x = x if isinstance(x, jax.Array) else np.asarray(x)
        shape = self.input_shape
        if x.ndim == len(shape) and shape[-1] == 1:
            x = x[..., None]
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"ImageTokenizer.encode: input must have shape [B, {', '.join(map(str, shape))}]; "
                             f"got {tuple(x.shape)}")
        dtype = np.dtype(x.dtype)
        if dtype == np.uint8 and self.value_range == (0.0, 1.0):
            return jnp.asarray(x).astype(jnp.float32) / 255.0
        if not np.issubdtype(dtype, np.floating):
            raise DTypeError(f"ImageTokenizer.encode: input must be floating (uint8 images are divided by 255); got "
                             f"dtype {dtype}")
        return jnp.asarray(x, jnp.float32)

    def _range_hint(self, xmin: float, xmax: float) -> str:
        hi = (self.value_range or (0.0, 1.0))[1]
        return " (images in 0..255 must be uint8, or scaled to [0, 1])" if xmax > hi else ""


@jax.jit(static_argnums=0)
def _decode_lengths(model, variables, codes, lengths, lo, hi):
    """A 1D model's images from each row's first ``lengths[b]`` codes (``codes [B, K, ...]``), clipped."""
    out = model.apply(variables, codes, lengths, method=model.decode)
    return jnp.clip(out, lo, hi).astype(jnp.float32)


@jax.jit(static_argnums=(0, 4))
def _adaptive_lengths(model, variables, codes, images, min_tokens, max_error):
    """Per image the smallest length in ``[min_tokens, K]`` whose decoded MSE is ``<= max_error`` (``K`` where none
    is) and that MSE: every length decoded, one scan over lengths."""
    b, k = codes.shape[:2]

    def mse_at(n):
        out = jnp.clip(model.apply(variables, codes, jnp.full((b,), n, jnp.int32), method=model.decode), 0.0, 1.0)
        return jnp.mean((out - images) ** 2, axis=(1, 2, 3))

    ns = jnp.arange(min_tokens, k + 1, dtype=jnp.int32)
    errors = jax.lax.map(mse_at, ns)                                      # [n, B]
    ok = errors <= max_error
    first = jnp.where(ok.any(0), jnp.argmax(ok, axis=0), len(ns) - 1)
    return ns[first], jnp.take_along_axis(errors, first[None], axis=0)[0]
