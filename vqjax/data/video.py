"""Video data: Moving MNIST generated deterministically from real MNIST digits.

:func:`moving_mnist` places ``num_digits`` digits on a black ``size x size`` canvas and moves each in a straight
line at a constant speed, reflecting off the borders (Srivastava et al. 2015); overlapping digits combine by their
maximum. Everything is drawn from ``seed``, so a clip is a pure function of (digit images, seed, its index).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["MovingDigits", "moving_mnist", "bounce"]


class MovingDigits(NamedTuple):
    """Clips and what moves in them: ``video`` uint8 ``[N, T, size, size, 1]``; per clip and digit the ``labels``
    int32 ``[N, D]``, the source ``digit_index`` int32 ``[N, D]``, the top-left ``start`` and the ``velocity``
    (pixels per frame, x then y) float32 ``[N, D, 2]``."""

    video: np.ndarray
    labels: np.ndarray
    digit_index: np.ndarray
    start: np.ndarray
    velocity: np.ndarray


def bounce(start: np.ndarray, velocity: np.ndarray, num_frames: int, limit: float) -> np.ndarray:
    """Positions ``[num_frames, ..., 2]`` of points moving from ``start`` at ``velocity`` inside ``[0, limit]``,
    reflected at both ends (the path folded into the interval)."""
    t = np.arange(num_frames, dtype=np.float64).reshape((-1,) + (1,) * np.ndim(start))
    raw = np.asarray(start, np.float64) + t * np.asarray(velocity, np.float64)
    period = 2.0 * limit
    folded = np.mod(raw, period)
    return np.where(folded > limit, period - folded, folded)


def moving_mnist(images: np.ndarray, labels: np.ndarray, num_clips: int, *, num_frames: int = 17, size: int = 64,
                 num_digits: int = 2, speed: tuple[float, float] = (2.0, 4.0), seed: int = 0) -> MovingDigits:
    """``num_clips`` Moving MNIST clips from ``images`` (float ``[N, h, w]`` in [0, 1] or uint8) and ``labels``.

    Each clip draws ``num_digits`` digit images, a start position and a direction uniformly, and a speed in
    ``speed`` (pixels per frame); digits bounce off the borders. Raises ``ValueError`` for a canvas smaller than a
    digit or empty input.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"moving_mnist: images must be a non-empty [N, h, w] array; got shape {images.shape}")
    if len(labels) != images.shape[0]:
        raise ValueError(f"moving_mnist: {len(labels)} labels for {images.shape[0]} images")
    h, w = images.shape[1:]
    if size < max(h, w):
        raise ValueError(f"moving_mnist: size ({size}) must be at least the digit size {h}x{w}")
    if num_clips < 0 or num_frames < 1 or num_digits < 1:
        raise ValueError(f"moving_mnist: num_clips >= 0, num_frames >= 1 and num_digits >= 1; got {num_clips}, "
                         f"{num_frames}, {num_digits}")
    pixels = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, images.shape[0], (num_clips, num_digits))
    limit = float(size - max(h, w))
    start = rng.uniform(0.0, limit, (num_clips, num_digits, 2))
    angle = rng.uniform(0.0, 2 * np.pi, (num_clips, num_digits))
    rate = rng.uniform(speed[0], speed[1], (num_clips, num_digits))
    velocity = np.stack([np.cos(angle), np.sin(angle)], -1) * rate[..., None]
    path = np.rint(bounce(start, velocity, num_frames, limit)).astype(np.int64)        # [T, N, D, 2]
    video = np.zeros((num_clips, num_frames, size, size), np.float32)
    for n in range(num_clips):
        for d in range(num_digits):
            digit = pixels[index[n, d]]
            for t in range(num_frames):
                x, y = path[t, n, d]
                patch = video[n, t, y:y + h, x:x + w]
                np.maximum(patch, digit, out=patch)
    return MovingDigits(video=np.round(video * 255.0).astype(np.uint8)[..., None],
                        labels=np.asarray(labels)[index].astype(np.int32), digit_index=index.astype(np.int32),
                        start=start.astype(np.float32), velocity=velocity.astype(np.float32))
