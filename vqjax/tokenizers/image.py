"""Image tokenizers (``modality='image'``, from the ``image_tokenizer`` task).

``encode(images)`` takes ``[B, H, W, C]`` (``[B, H, W]`` for one channel) and returns int32 codes
``[B, *codes_shape]``; ``decode(codes)`` returns float32 images in ``[0, 1]``.

Image rule: float images must lie in ``[0, 1]``; ``uint8`` images are divided by 255; other integer and bool
dtypes are refused (an int32 image in 0..255 is ambiguous: convert it to uint8 or scale it to [0, 1] yourself).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.checks import DTypeError
from vqjax.tokenizers.base import Tokenizer, register_tokenizer

__all__ = ["ImageTokenizer"]


@register_tokenizer("image")
class ImageTokenizer(Tokenizer):
    """A 2D image tokenizer artifact: fixed-shape images to a grid of codes and back (see the module docstring)."""

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)`` of one image."""
        return self.input_shape

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
