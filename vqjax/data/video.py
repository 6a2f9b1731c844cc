"""Video data: Moving MNIST generated deterministically from real MNIST digits, and clips of real footage.

:func:`moving_mnist` places ``num_digits`` digits on a black ``size x size`` canvas and moves each in a straight
line at a constant speed, reflecting off the borders (Srivastava et al. 2015); overlapping digits combine by their
maximum. Everything is drawn from ``seed``, so a clip is a pure function of (digit images, seed, its index).

:func:`read_video` decodes a video file with PyAV and scales its frames; :func:`footage_clips` cuts a decoded video
into fixed-size clips, holding out whole segments of its timeline for test (:func:`segment_split`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from PIL import Image

__all__ = ["MovingDigits", "moving_mnist", "bounce", "FOOTAGE", "footage_sources", "read_video", "segment_split",
           "footage_clips"]

# Real footage that ships in packages: the iscc-samples demo clip (pip) and opencv-doc's sample videos (Debian;
# its tree.avi is left out: PyAV decodes 68 of its 444 frames, too few for a held-out segment).
OPENCV_VIDEOS = "/usr/share/doc/opencv-doc/examples/data"
FOOTAGE = {"iscc_demo": ("iscc_samples", "demo.mp4"), "opencv_vtest": (OPENCV_VIDEOS, "vtest.avi"),
           "opencv_megamind": (OPENCV_VIDEOS, "Megamind.avi")}


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


def footage_sources() -> dict[str, str]:
    """The files of :data:`FOOTAGE` present on this machine, by name (iscc-samples installed, opencv-doc's
    files where they are)."""

    found = {}
    for name, (where, filename) in FOOTAGE.items():
        if where == "iscc_samples":
            try:
                import iscc_samples  # optional dependency
            except ImportError:
                continue
            paths = [str(p) for p in iscc_samples.videos() if p.name == filename]
            if paths:
                found[name] = paths[0]
        elif os.path.exists(os.path.join(where, filename)):
            found[name] = os.path.join(where, filename)
    return found


def read_video(path: str, short_side: int | None = None) -> tuple[np.ndarray, float]:
    """All frames of a video file as uint8 ``[T, H, W, 3]`` (RGB) and its frame rate, decoded with PyAV; with
    ``short_side`` each frame is resized (area averaging) so that its shorter side has that many pixels."""
    try:
        import av  # optional dependency
    except ImportError as err:
        raise ImportError("reading video files needs PyAV: pip install 'vqjax[video]'") from err

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        for frame in container.decode(stream):
            img = frame.to_image()
            if short_side is not None:
                scale = short_side / min(img.size)
                size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
                img = img.resize(size, Image.Resampling.BOX)
            frames.append(np.asarray(img.convert("RGB"), np.uint8))
    if not frames:
        raise ValueError(f"read_video: no frames decoded from {path!r}")
    return np.stack(frames), rate


def segment_split(num_frames: int, segment: int, test_every: int, test_offset: int = 2) -> list[tuple[str, int, int]]:
    """The timeline cut into whole segments of ``segment`` frames (a shorter tail dropped), each ``(split, start,
    end)``: segment ``k`` is ``'test'`` when ``k % test_every == test_offset``, else ``'train'``; test segments are
    spread over the video and nothing of them is ever in train."""
    if segment < 1 or test_every < 2 or not 0 <= test_offset < test_every:
        raise ValueError(f"segment_split: segment >= 1, test_every >= 2 and 0 <= test_offset < test_every; got "
                         f"{segment}, {test_every}, {test_offset}")
    return [("test" if k % test_every == test_offset else "train", k * segment, (k + 1) * segment)
            for k in range(num_frames // segment)]


def footage_clips(frames: np.ndarray, split: str, *, num_frames: int = 17, size: int = 64, segment: int = 85,
                  test_every: int = 5, train_stride: int = 8, crops: int = 2, seed: int = 0):
    """Clips ``uint8 [num_frames, size, size, 3]`` of ``split`` cut from ``frames [T, H, W, 3]``, yielded with their
    first frame and the crop's top-left ``(y, x)``.

    Windows never cross a segment of :func:`segment_split`. In ``'train'`` segments, windows start every
    ``train_stride`` frames and each gives ``crops`` crops at positions drawn from ``seed``; in ``'test'``
    segments, windows do not overlap and the ``crops`` crops are spread evenly along the longer side, centred on
    the shorter.
    """
    t, h, w = frames.shape[:3]
    if h < size or w < size:
        raise ValueError(f"footage_clips: frames of {h}x{w} are smaller than the crop size {size}")
    if split not in ("train", "test"):
        raise ValueError(f"footage_clips: split must be 'train' or 'test'; got {split!r}")
    rng = np.random.default_rng(seed)
    stride = train_stride if split == "train" else num_frames
    for part, start, end in segment_split(t, segment, test_every):
        if part != split:
            continue
        for first in range(start, end - num_frames + 1, stride):
            if split == "train":
                spots = zip(rng.integers(0, h - size + 1, crops), rng.integers(0, w - size + 1, crops))
            else:
                along = np.linspace(0, (w if w >= h else h) - size, crops).round().astype(int)
                middle = ((h if w >= h else w) - size) // 2
                spots = [(middle, a) if w >= h else (a, middle) for a in along]
            for y, x in spots:
                yield first, (int(y), int(x)), frames[first:first + num_frames, y:y + size, x:x + size]
