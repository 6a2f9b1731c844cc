"""Layer 5: data. Bundled real data that loads with no network (``docs/data.md``), tfds builders and grain pipelines."""

from vqjax.data.bundled import PHOTOS, mnist_digits, photo_patches

__all__ = ["PHOTOS", "photo_patches", "mnist_digits"]
