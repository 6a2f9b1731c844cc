"""Moving MNIST: digits bounce inside the canvas, frames follow the drawn paths, generation is deterministic, and
the builder's train and test clips come from disjoint digit images."""

import numpy as np
import pytest
from media_files import write_video

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


def _ramp_video(num_frames, h, w):
    """Frames whose brightness encodes the frame index (smooth inside each frame: codecs keep it)."""
    t = np.arange(num_frames)[:, None, None, None]
    x = np.linspace(0, 60, w)[None, None, :, None]
    return np.broadcast_to(np.clip(3 * t + x, 0, 255), (num_frames, h, w, 3)).astype(np.uint8)


def test_read_video_decodes_every_frame_and_scales(tmp_path):
    from vqjax.data.video import read_video

    path = tmp_path / "ramp.mp4"
    frames = _ramp_video(30, 96, 160)
    write_video(path, frames, rate=12)
    full, rate = read_video(str(path))
    assert full.shape == (30, 96, 160, 3) and full.dtype == np.uint8 and rate == pytest.approx(12)
    assert np.abs(full.astype(float) - frames).mean() < 3.0
    small, _ = read_video(str(path), short_side=48)
    assert small.shape == (30, 48, 80, 3)
    np.testing.assert_allclose(small.mean(axis=(1, 2, 3)), full.mean(axis=(1, 2, 3)), atol=2.0)


def test_segments_hold_out_whole_stretches_of_the_timeline():
    from vqjax.data.video import footage_clips, segment_split

    parts = segment_split(900, 85, 5)
    assert len(parts) == 10 and [p[0] for p in parts].count("test") == 2
    assert parts[2] == ("test", 170, 255) and parts[7] == ("test", 595, 680)
    frames = np.repeat(np.arange(900, dtype=np.int64)[:, None, None, None] % 256, 80, 1)
    frames = np.broadcast_to(frames, (900, 80, 100, 3)).astype(np.uint8)
    index = np.broadcast_to(np.arange(900)[:, None, None, None], (900, 80, 100, 3))
    for split, expected_windows in (("train", 8 * 9), ("test", 2 * 5)):
        clips = list(footage_clips(index, split, size=64, crops=2))
        assert len(clips) == 2 * expected_windows
        for first, (y, x), clip in clips:
            assert clip.shape == (17, 64, 64, 3) and 0 <= y <= 16 and 0 <= x <= 36
            kind = [p for p in parts if p[1] <= first < p[2]][0]
            assert kind[0] == split and first + 17 <= kind[2]         # inside one segment of its own split
            np.testing.assert_array_equal(clip[:, 0, 0, 0], np.arange(first, first + 17))
    test = list(footage_clips(frames, "test", size=64, crops=2))
    assert [c[1] for c in test[:2]] == [(8, 0), (8, 36)]                # spread along the width, centred
    again = list(footage_clips(frames, "train", size=64, seed=0))
    assert [c[1] for c in again] == [c[1] for c in footage_clips(frames, "train", size=64, seed=0)]
    with pytest.raises(ValueError, match="smaller than the crop size 64"):
        list(footage_clips(frames[:, :60], "train"))


def test_video_clips_builder_and_frames_view(tmp_path, monkeypatch):
    path = tmp_path / "ramp.mp4"
    write_video(path, _ramp_video(260, 136, 184))
    monkeypatch.setattr(builders.VqjaxVideoClips, "SOURCES", {"ramp": str(path)})
    train = pipeline.get_source("vqjax_video_clips", "train", str(tmp_path / "tfds"))
    test = pipeline.get_source("vqjax_video_clips", "test", str(tmp_path / "tfds"))
    # 260 frames scaled to 128 x 173: three 85-frame segments (the tail dropped); the third is held out
    assert len(train) == 2 * 9 * 2 and len(test) == 5 * 2
    assert {int(test[i]["start_frame"]) for i in range(len(test))} == {170, 187, 204, 221, 238}
    ex = train[0]
    assert ex["video"].shape == (17, 64, 64, 3) and ex["video"].dtype == np.uint8
    assert ex["source"] in (b"ramp", "ramp") and float(ex["frame_rate"]) == pytest.approx(24)
    frames = pipeline.VideoFrames(train)
    assert len(frames) == 17 * len(train)
    np.testing.assert_array_equal(frames[17 + 5]["image"], np.asarray(train[1]["video"])[5])
    np.testing.assert_array_equal(frames[-1]["image"], np.asarray(train[len(train) - 1]["video"])[16])
    with pytest.raises(IndexError, match="out of range"):
        frames[len(frames)]
    with pytest.raises(ValueError, match="'video' feature"):
        pipeline.VideoFrames([{"image": np.zeros((4, 4, 1))}])
