"""Causal video tokenizers (``modality='video'``, from the ``video_tokenizer`` task): clips of any causal length
and size, chunked encoding and decoding (see :class:`VideoTokenizer`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.tokenizers.base import Tokenizer, check_codes, register_tokenizer

__all__ = ["VideoTokenizer"]


@register_tokenizer("video")
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
        return check_codes(codes, name, ("latent frames", "h", "w"), self.codes_shape[3:], self.vocab_size)

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


@jax.jit(static_argnums=0)
def _video_encode(model, variables, x, state):
    codes, state = model.apply(variables, x, state, method=model.encode_stream)
    return codes.astype(jnp.int32), state


@jax.jit(static_argnums=0)
def _video_decode(model, variables, codes, state):
    frames, state = model.apply(variables, codes, state, method=model.decode_stream)
    return jnp.clip(frames, 0.0, 1.0).astype(jnp.float32), state

