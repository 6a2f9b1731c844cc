"""Time-series sources: held-out segments never overlap training windows, resampling keeps the ends, the scripted
Pusher episodes are deterministic per seed, aeon's sets load with their own splits, and the tfds builder serves
them by config name."""

import numpy as np
import pytest

from vqjax.data import timeseries


def test_segment_windows_hold_out_whole_stretches():
    recording = np.arange(2000, dtype=np.float32)[:, None].repeat(2, axis=1)
    train, train_starts = timeseries.segment_windows(recording, "train", window=40, hop=10)
    test, test_starts = timeseries.segment_windows(recording, "test", window=40, hop=10)
    assert train.shape[1:] == (40, 2) and test.shape[1:] == (40, 2)
    seen = {int(v) for w in train[:, :, 0] for v in w}
    held = {int(v) for w in test[:, :, 0] for v in w}
    assert not seen & held                                       # no held-out sample is ever trained on
    assert 0.1 < len(held) / 2000 < 0.25                          # one stretch in five
    np.testing.assert_array_equal(test[:, 0, 0], test_starts)
    with pytest.raises(ValueError, match="split must be one of"):
        timeseries.segment_windows(recording, "valid", window=40, hop=10)


def test_resample_length_keeps_the_ends():
    x = np.stack([np.linspace(0, 1, 7), np.linspace(5, -5, 7)], axis=1)
    y = timeseries.resample_length(x, 32)
    assert y.shape == (32, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y[[0, -1]], x[[0, -1]], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0], np.linspace(0, 1, 32), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="T >= 2"):
        timeseries.resample_length(x[:1], 4)


def test_pusher_episodes_are_deterministic_per_seed():
    pytest.importorskip("mujoco", reason="needs the vqjax[timeseries] extra")
    a, b, c = (timeseries.pusher_episode(s, steps=40) for s in (3, 3, 4))
    assert a.shape == (40, 7) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.abs(a).max() <= 2.0 and np.abs(a).mean() > 0.05          # torques within bounds, not idle
    assert np.abs(np.diff(a, axis=0)).mean() < np.abs(a).mean()          # smooth: steps smaller than values
    episodes = timeseries.pusher_actions("test", episodes={"test": 2})
    assert episodes.signals.shape == (2, 100, 7) and episodes.sample_rate == 20.0
    assert episodes.groups == ["episode/1000000", "episode/1000001"]
    assert episodes.channels == timeseries.CHANNELS["pusher_actions"]


def test_aeon_sets_keep_their_own_splits():
    pytest.importorskip("aeon", reason="needs the vqjax[timeseries] extra")
    train, test = (timeseries.load_set("basic_motions", s) for s in ("train", "test"))
    assert train.signals.shape == (40, 100, 6) and test.signals.shape == (40, 100, 6)
    assert train.classes == ("badminton", "running", "standing", "walking") and set(test.labels) == {0, 1, 2, 3}
    vowels = timeseries.load_set("japanese_vowels", "train")          # variable lengths resampled to 32
    assert vowels.signals.shape == (270, 32, 12) and vowels.classes[:3] == ("1", "2", "3")
    with pytest.raises(ValueError, match="time-series set must be one of"):
        timeseries.load_set("walking", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        timeseries.load_set("basic_motions", "valid")


def test_the_builder_serves_a_set_by_config_name(tmp_path):
    pytest.importorskip("aeon", reason="needs the vqjax[timeseries] extra")
    from vqjax.data import pipeline

    source = pipeline.get_source("vqjax_timeseries/basic_motions", "test", str(tmp_path))
    assert len(source) == 40
    example = source[0]
    assert example["signal"].shape == (100, 6) and example["signal"].dtype == np.float32
    assert example["sample_rate"] == 10.0 and 0 <= example["label"] < 4
    with pytest.raises(ValueError, match="dataset must be one of"):
        pipeline.check_dataset_name("vqjax_timeseries/walking")
