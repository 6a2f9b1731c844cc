"""Image augmentation for small bundled data sets: random affine jitter (shift, rotation, scale) about the image
centre, bilinear, in JAX.

    copies = affine_jitter(digits, copies=4, seed=0)      # uint8 [4 * N, 28, 28, 1]: four jittered copies of each

Used where a model would otherwise memorise a few thousand images, e.g. the multimodal LM on 4,500 MNIST training
digits: each copy is a new, plausible digit with the same label.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["affine_jitter", "jitter_transforms"]


@functools.partial(jax.jit, static_argnames=("order",))
def _warp(images: jax.Array, matrices: jax.Array, offsets: jax.Array, order: int = 1) -> jax.Array:
    """``images [N, H, W, C]`` resampled at ``matrices [N, 2, 2] @ (y, x) + offsets [N, 2]`` (zero outside)."""
    h, w = images.shape[1:3]
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                                  indexing="ij"), 0).reshape(2, -1)

    def one(img, m, o):
        coords = m @ grid + o[:, None]
        chans = [jax.scipy.ndimage.map_coordinates(img[..., c], list(coords), order=order, mode="constant",
                                                   cval=0.0) for c in range(img.shape[-1])]
        return jnp.stack(chans, -1).reshape(h, w, -1)

    return jax.vmap(one)(images.astype(jnp.float32), matrices, offsets)


def jitter_transforms(num: int, size: tuple[int, int], *, seed: int, max_shift: float, max_rotation: float,
                      max_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``num`` random affine maps from output to input pixel coordinates, float32 ``matrices [num, 2, 2]`` and
    ``offsets [num, 2]`` (``input = matrix @ (y, x) + offset``): a rotation by up to ``max_rotation`` degrees and a
    scaling within ``1 ± max_scale`` about the centre of an image of ``size``, then a shift by up to ``max_shift``
    pixels per axis."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, num))
    scale = rng.uniform(1 - max_scale, 1 + max_scale, num)
    shift = rng.uniform(-max_shift, max_shift, (num, 2))
    # Output pixel p reads input pixel R(-angle) (p - centre) / scale + centre - shift.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrices = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1).astype(np.float32)
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2], np.float32)
    offsets = (centre - np.einsum("nij,j->ni", matrices, centre) - shift).astype(np.float32)
    return matrices, offsets


def affine_jitter(images: np.ndarray, copies: int, *, seed: int, max_shift: float = 2.0,
                  max_rotation: float = 12.0, max_scale: float = 0.1, batch: int = 1024) -> np.ndarray:
    """``copies`` randomly jittered versions of each image: copy ``k`` of image ``i`` is row ``k * N + i``.

    Each copy is shifted by up to ``max_shift`` pixels on each axis, rotated by up to ``max_rotation`` degrees and
    scaled by a factor within ``1 ± max_scale`` about the image centre, all uniform; pixels from outside the image
    are 0 (the background of MNIST-like digits). Deterministic for ``seed``; the dtype is kept (integers rounded and
    clipped to their range).

    Args:
      images: ``[N, H, W, C]`` or ``[N, H, W]`` array (uint8 or float).
      copies: copies per image (>= 0; 0 gives an empty array).
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"affine_jitter: images must be a non-empty [N, H, W] or [N, H, W, C] array; got shape "
                         f"{images.shape}")
    if not isinstance(copies, (int, np.integer)) or copies < 0:
        raise ValueError(f"affine_jitter: copies must be an int >= 0; got {copies!r}")
    if not (max_shift >= 0 and max_rotation >= 0 and 0 <= max_scale < 1):
        raise ValueError(f"affine_jitter: max_shift and max_rotation must be >= 0 and max_scale in [0, 1); got "
                         f"{max_shift}, {max_rotation}, {max_scale}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise ValueError("affine_jitter: images contain NaN or infinite values")
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    n, h, w = x.shape[:3]
    total = copies * n
    matrices, offsets = jitter_transforms(total, (h, w), seed=seed, max_shift=max_shift,
                                          max_rotation=max_rotation, max_scale=max_scale)
    out = np.empty((total,) + x.shape[1:], x.dtype)
    for s in range(0, total, batch):
        idx = np.arange(s, min(s + batch, total))
        pad = np.resize(idx, min(batch, total))          # every call the same shape: one compilation
        warped = np.asarray(_warp(jnp.asarray(x[pad % n]), jnp.asarray(matrices[pad]), jnp.asarray(offsets[pad])))
        warped = warped[:idx.size]
        if np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(x.dtype)
            warped = np.clip(np.rint(warped), info.min, info.max)
        out[idx] = warped.astype(x.dtype)
    return out[..., 0] if squeeze else out
