"""affine_jitter: each copy is the affine warp its transform describes (against scipy.ndimage as the reference),
no jitter is the identity, deterministic for a seed, dtype kept, bad input refused."""

import numpy as np
import pytest
from scipy import ndimage

from vqjax.data import mnist_digits
from vqjax.data.augment import affine_jitter, jitter_transforms


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist_digits()
    return np.rint(images[::500] * 255).astype(np.uint8).reshape(-1, 28, 28, 1), labels[::500]


def test_each_copy_is_the_warp_of_its_transform(digits):
    images, _ = digits
    x = images.astype(np.float32) / 255
    copies = 3
    out = affine_jitter(x, copies, seed=4, max_shift=2.5, max_rotation=20, max_scale=0.15)
    matrices, offsets = jitter_transforms(copies * len(x), (28, 28), seed=4, max_shift=2.5, max_rotation=20,
                                          max_scale=0.15)
    assert out.shape == (copies * len(x), 28, 28, 1) and out.dtype == np.float32
    for k in range(copies * len(x)):
        ref = ndimage.affine_transform(x[k % len(x), ..., 0], matrices[k], offsets[k], order=1, mode="constant",
                                       cval=0.0)
        np.testing.assert_allclose(out[k, ..., 0], ref, atol=1e-5)
    # The jitter moves the digits (not the identity) but keeps their ink roughly (scale 1 ± 0.15).
    moved = np.abs(out - np.tile(x, (copies, 1, 1, 1))).mean(axis=(1, 2, 3))
    assert (moved > 0.01).all()
    ink = out.sum(axis=(1, 2, 3)) / np.tile(x, (copies, 1, 1, 1)).sum(axis=(1, 2, 3))
    assert ((ink > 0.7) & (ink < 1.4)).all()


def test_no_jitter_is_the_identity_and_seeds_are_deterministic(digits):
    images, _ = digits
    same = affine_jitter(images, 2, seed=0, max_shift=0, max_rotation=0, max_scale=0)
    np.testing.assert_array_equal(same, np.concatenate([images, images]))
    a, b = affine_jitter(images, 2, seed=1), affine_jitter(images, 2, seed=1)
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, affine_jitter(images, 2, seed=2))
    assert affine_jitter(images[..., 0], 1, seed=1).shape == (len(images), 28, 28)       # [N, H, W] kept
    assert affine_jitter(images, 0, seed=1).shape == (0, 28, 28, 1)


def test_bad_input_is_refused(digits):
    images, _ = digits
    with pytest.raises(ValueError, match="copies must be an int >= 0; got -1"):
        affine_jitter(images, -1, seed=0)
    with pytest.raises(ValueError, match=r"images must be a non-empty \[N, H, W\].*got shape \(28, 28\)"):
        affine_jitter(images[0, ..., 0], 1, seed=0)
    with pytest.raises(ValueError, match="max_scale in"):
        affine_jitter(images, 1, seed=0, max_scale=1.5)
    bad = images.astype(np.float32)
    bad[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        affine_jitter(bad, 1, seed=0)
