"""Moving MNIST: digits bounce inside the canvas, frames follow the drawn paths, generation is deterministic, and
the builder's train and test clips come from disjoint digit images."""

import numpy as np
import pytest

from vqjax.data import builders, pipeline
from vqjax.data.video import bounce, moving_mnist


def test_bounce_reflects_at_both_borders():
    path = bounce(np.array([1.0]), np.array([-2.0]), 6, 5.0)[:, 0]
    np.testing.assert_allclose(path, [1, 1, 3, 5, 3, 1])               # down to 0 and back, up to 5 and back
    many = bounce(np.random.default_rng(0).uniform(0, 36, (50, 2)), np.full((50, 2), 3.7), 100, 36.0)
    assert many.min() >= 0 and many.max() <= 36


def test_frames_hold_the_digits_at_their_paths():
    digits = np.zeros((3, 28, 28), np.float32)
    digits[:, 10:18, 10:18] = 1.0                                     # an 8x8 square inside each 28x28 digit
    clips = moving_mnist(digits, np.array([4, 5, 6]), 4, num_frames=9, size=64, seed=3)
    assert clips.video.shape == (4, 9, 64, 64, 1) and clips.video.dtype == np.uint8
    assert set(clips.labels.ravel()) <= {4, 5, 6} and clips.labels.shape == (4, 2)
    path = np.rint(bounce(clips.start, clips.velocity, 9, 36.0)).astype(int)
    for n in range(4):
        for t in range(9):
            frame = clips.video[n, t, :, :, 0]
            for d in range(2):
                x, y = path[t, n, d]
                assert (frame[y + 10:y + 18, x + 10:x + 18] == 255).all()
            assert (frame == 255).sum() <= 2 * 64                      # two 8x8 squares (less any overlap)
    speeds = np.linalg.norm(clips.velocity, axis=-1)
    assert speeds.min() >= 2.0 and speeds.max() <= 4.0
    again = moving_mnist(digits, np.array([4, 5, 6]), 4, num_frames=9, size=64, seed=3)
    np.testing.assert_array_equal(again.video, clips.video)
    assert not np.array_equal(moving_mnist(digits, np.array([4, 5, 6]), 4, num_frames=9, seed=4).video,
                              clips.video)
    with pytest.raises(ValueError, match="size .* at least the digit size"):
        moving_mnist(digits, np.array([4, 5, 6]), 1, size=20)


def test_builder_splits_use_disjoint_digits(tmp_path, monkeypatch):
    monkeypatch.setattr(builders.VqjaxMovingMnist, "NUM_CLIPS", {"train": 12, "test": 6})
    data_dir = str(tmp_path / "tfds")
    train = pipeline.get_source("vqjax_moving_mnist", "train", data_dir)
    test = pipeline.get_source("vqjax_moving_mnist", "test", data_dir)
    assert len(train) == 12 and len(test) == 6
    ex = train[0]
    assert ex["video"].shape == (17, 64, 64, 1) and ex["video"].dtype == np.uint8 and ex["video"].max() > 200
    used_train = {int(i) for k in range(12) for i in train[k]["digit_index"]}
    used_test = {int(i) for k in range(6) for i in test[k]["digit_index"]}
    assert not used_train & used_test
    _, labels = builders.mnist_digits()
    held = builders.mnist_test_mask(labels)
    assert all(held[i] for i in used_test) and not any(held[i] for i in used_train)
    assert all(labels[int(i)] == int(lab) for k in range(6) for i, lab in zip(test[k]["digit_index"],
                                                                              test[k]["labels"]))
