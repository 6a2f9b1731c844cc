"""Input: a tfds data source by name, read through grain.

``dataset`` names are either a bundled builder (:data:`BUNDLED`: ``vqjax_mnist``, ``vqjax_photo_crops``,
``vqjax_opencv_digits``, ``vqjax_speech``, ``vqjax_moving_mnist``, ``vqjax_video_clips``, ``vqjax_timeseries/<set>``;
prepared into ``data_dir`` on first use from data that ships in packages), ``tfds:NAME`` for any tfds dataset already
prepared in ``data_dir`` (nothing is downloaded at run time), or ``files:PATH_OR_GLOB`` for a folder of a user's own
images, audio, video or time-series files (:mod:`vqjax.data.files`). ``features`` maps the names the tasks read
(``image``, ``audio``, ``video``, ``signal``, ``caption``, ``label``, ...) to a dataset's own feature names, so any
prepared tfds dataset serves every modality (librispeech: ``{'audio': 'speech', 'caption': 'text'}``).

Training batches come from a grain ``MapDataset``: shuffled with a new order every epoch, repeated forever,
sharded per process (process ``p`` of ``P`` reads examples ``p, p + P, ...``), batched, and indexable by step, so a
resumed run reads exactly the batches an uninterrupted run would have read; a random transform (a crop, say) draws
from a generator seeded by (seed, step, position in the global batch), so it is resumed exactly too. Worker
processes (``worker_count > 0``) prefetch batches in parallel. Images come out as float32 ``[B, H, W, C]`` in
``[0, 1]`` unless a transform says otherwise.
"""

from __future__ import annotations

import collections.abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from vqjax.data import builders, files

__all__ = [
    "BUNDLED",
    "VideoFrames",
    "check_dataset_name",
    "eval_batches",
    "get_source",
    "get_splits",
    "image_shape",
    "train_batches",
    "with_features",
]

TIMESERIES_SETS = ("basic_motions", "gun_point", "pickup_gesture", "japanese_vowels", "daphnet", "eeg_scp1",
                   "pusher_actions")
BUNDLED = ("vqjax_mnist", "vqjax_photo_crops", "vqjax_opencv_digits", "vqjax_speech", "vqjax_moving_mnist",
           "vqjax_video_clips") + tuple(f"vqjax_timeseries/{name}" for name in TIMESERIES_SETS)


def check_dataset_name(dataset: str) -> str:
    """Validates a dataset name: a bundled builder, ``tfds:NAME`` or ``files:PATH_OR_GLOB``."""
    if not isinstance(dataset, str) or not (dataset in BUNDLED or (dataset.startswith(("tfds:", "files:")) and
                                                                    len(dataset.split(":", 1)[1]) > 0)):
        raise ValueError(f"dataset must be one of {BUNDLED}, 'tfds:NAME' (a tfds dataset prepared in data_dir) or "
                         f"'files:PATH_OR_GLOB' (a folder of your own files); got {dataset!r}")
    return dataset


def get_source(dataset: str, split: str, data_dir: str, *, features: Mapping[str, str] | None = None,
               files_options: Mapping[str, Any] | None = None) -> Sequence[dict[str, Any]]:
    """A random-access source of examples (dicts of numpy arrays) for ``split`` of ``dataset`` (a tfds split
    expression: ``'train'``, ``'train+train_synthetic'``, ``'train[:90%]'``; for ``files:`` datasets, percent
    slices of ``'train'`` by a stable hash of each file's path).

    Bundled builders are prepared into ``data_dir`` (array_record) the first time; ``tfds:NAME`` must already be
    there; ``files:`` datasets are indexed into ``data_dir`` on first use (:func:`vqjax.data.files.file_source`,
    with ``files_options``). ``features`` renames features (see the module docstring).

    Raises ``ValueError`` for an unknown name, split or feature and ``FileNotFoundError`` for a missing tfds
    dataset.
    """
    check_dataset_name(dataset)
    if dataset.startswith("files:"):
        return with_features(files.file_source(dataset[len("files:"):], split, data_dir=data_dir,
                                               options=files_options), features, dataset)
    import tensorflow_datasets as tfds  # heavy import, loaded only where needed

    if dataset in BUNDLED:

        name, _, builder_config = dataset.partition("/")
        builder = builders.BUILDERS[name](config=builder_config or None, data_dir=data_dir,
                                          file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare()
    else:
        name = dataset[len("tfds:"):]
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as err:
            raise ValueError(f"dataset {dataset!r}: tfds has no dataset named {name!r}") from err
        if builder.is_prepared():
            _check_split(dataset, split, builder.info.splits)
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except (NotImplementedError, AssertionError, FileNotFoundError) as err:
            raise FileNotFoundError(f"dataset {dataset!r} is not prepared as array_record in data_dir={data_dir!r}; "
                                    f"vqjax never downloads at run time: prepare it there first (tfds build {name} "
                                    f"--data_dir={data_dir} --file_format=array_record)") from err
        return with_features(source, features, dataset, _sample_rates(builder.info.features))
    _check_split(dataset, split, builder.info.splits)
    return with_features(builder.as_data_source(split=split), features, dataset)


def _sample_rates(info_features) -> dict[str, int]:
    """The sample rates tfds ``Audio`` features state in the dataset's info (``{feature: rate}``)."""
    out = {}
    for name, feature in getattr(info_features, "items", list)():
        rate = getattr(feature, "sample_rate", None)
        if rate:
            out[name] = int(rate)
    return out


class _Renamed(collections.abc.Sequence):
    """A source whose examples carry the features under the names the tasks read (see :func:`with_features`)."""

    def __init__(self, source, features: dict[str, str], rates: dict[str, int]):
        self._source, self._features, self._rates = source, features, rates

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i):
        example = dict(self._source[i])
        out = {k: v for k, v in example.items() if k not in self._features.values()}
        for ours, theirs in self._features.items():
            out[ours] = example[theirs]
            if ours == "audio" and "sample_rate" not in example and theirs in self._rates:
                out["sample_rate"] = np.int32(self._rates[theirs])
        if "caption" in out and isinstance(out["caption"], bytes):
            out["caption"] = out["caption"].decode("utf-8")
        return out


def with_features(source, features: Mapping[str, str] | None, dataset: str, rates: dict[str, int] | None = None):
    """``source`` with ``features`` (``{name the tasks read: the dataset's feature}``) renamed; an audio feature
    without a ``sample_rate`` beside it takes the rate tfds states for it. Refuses a feature the dataset lacks,
    naming those it has."""
    features = {str(k): str(v) for k, v in dict(features or {}).items()}
    if not features:
        return source
    if len(source):
        have = set(source[0])
        missing = sorted(set(features.values()) - have)
        if missing:
            raise ValueError(f"config.features maps to {missing}, which dataset {dataset!r} lacks; its features are "
                             f"{sorted(have)}")
    return _Renamed(source, features, rates or {})


def _check_split(dataset: str, split: str, known) -> None:
    """Refuses a split expression naming a split the dataset lacks (``'train+train_synthetic'`` and slices such as
    ``'train[:10%]'`` are tfds split expressions; each part's name must exist)."""
    names = [part.strip().split("[", 1)[0] for part in split.split("+")]
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"dataset {dataset!r} has splits {sorted(known)}; got split={split!r}")


def get_splits(dataset: str, splits: Sequence[str], data_dir: str, *, features: Mapping[str, str] | None = None,
               files_options: Mapping[str, Any] | None = None) -> list[Sequence[dict[str, Any]]]:
    """:func:`get_source` of each of ``splits``, refusing an empty one (``ValueError`` naming the split and the
    config fields that chose it) before any training starts."""
    sources = [get_source(dataset, split, data_dir, features=features, files_options=files_options)
               for split in splits]
    for split, source in zip(splits, sources):
        if len(source) == 0:
            raise ValueError(f"split {split!r} of dataset {dataset!r} is empty; training needs examples in "
                             f"config.train_split and config.eval_split")
    return sources


def image_shape(source: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
    """``(H, W, C)`` of the source's ``image`` feature (a rank-2 image gets C = 1)."""
    image = np.asarray(source[0]["image"])
    return tuple(image.shape) if image.ndim == 3 else tuple(image.shape) + (1,)


class VideoFrames(collections.abc.Sequence):
    """The frames of a source of clips as a source of images: example ``i`` is ``{'image': video[t]}`` of clip
    ``i // T``, frame ``i % T`` (clips ``[T, H, W, C]`` in the ``video`` feature, all of one length). Nothing is
    copied: each read decodes its clip. An image tokenizer trained on it sees every frame of the clips a video
    tokenizer trains on, and is applied frame by frame to the same test clips."""

    def __init__(self, source: Sequence[dict[str, Any]]):
        if len(source) == 0:
            raise ValueError("VideoFrames: the source of clips is empty")
        first = source[0]
        if "video" not in first:
            raise ValueError(f"VideoFrames: examples need a 'video' feature [T, H, W, C]; got features {sorted(first)}")
        shape = np.asarray(first["video"]).shape
        if len(shape) != 4:
            raise ValueError(f"VideoFrames: the 'video' feature must be [T, H, W, C]; got shape {shape}")
        self._source = source
        self.frames_per_clip = int(shape[0])

    def __len__(self) -> int:
        return len(self._source) * self.frames_per_clip

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"VideoFrames: index {index} out of range for {len(self)} frames")
        clip, frame = divmod(int(index) % len(self), self.frames_per_clip)
        return {"image": np.asarray(self._source[clip]["video"])[frame]}


def _to_float(example: dict[str, Any]) -> dict[str, np.ndarray]:
    image = np.asarray(example["image"])
    if image.ndim == 2:
        image = image[..., None]
    scale = 1.0 / 255.0 if image.dtype == np.uint8 else 1.0
    out = {"image": image.astype(np.float32) * scale}
    if "label" in example:
        out["label"] = np.int64(example["label"])
    return out


def train_batches(source: Sequence[dict[str, Any]], *, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1, worker_count: int = 0,
                  transform: Callable[[dict], dict] | None = None,
                  random_transform: Callable[[dict, np.random.Generator], dict] | None = None) -> Iterator[dict]:
    """Endless shuffled training batches ``{'image': float32 [batch_size // process_count, H, W, C]}`` (with
    ``'label'`` int64 when the source has labels).

    Every process draws the same global order (one shuffle of the whole source per epoch, keyed by ``seed``) and
    reads the contiguous slice ``[p * B / P, (p + 1) * B / P)`` of each global batch, so the global batch, in
    order, is the same whatever the number of processes.

    Args:
      source: random-access examples (:func:`get_source`).
      batch_size: the global batch size (divisible by ``process_count``).
      seed: shuffle seed; epoch ``e`` uses a new order derived from it.
      start_step: first batch to read (resume: the step the checkpoint was saved at).
      process_index, process_count: this process's slice of every global batch.
      worker_count: grain worker processes (0 reads in this process).
      transform: applied to each example before stacking (default: images to float32 in [0, 1]).
      random_transform: instead of ``transform``, ``(example, rng) -> example`` with a numpy generator seeded by
        ``(seed, step, position in the global batch)``: the same draws whatever the process count, and on resume.
    """
    if transform is not None and random_transform is not None:
        raise ValueError("train_batches: pass transform or random_transform, not both")
    if batch_size % process_count:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the process count ({process_count})")
    per = batch_size // process_count
    first = process_index * per
    if random_transform is None:
        fixed = transform or _to_float
        one = lambda step, slot, i: fixed(source[i])
    else:
        one = lambda step, slot, i: random_transform(source[i], np.random.default_rng([seed, step, slot]))
    ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(None).batch(batch_size, drop_remainder=True)
    ds = ds.map_with_index(lambda step, ids: (step, ids))[start_step:]
    ds = ds.map(lambda item: _stack([one(item[0], first + j, int(i))
                                     for j, i in enumerate(np.asarray(item[1])[first:first + per])]))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():      # grain's workers read absl flags; outside an absl app use defaults
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it)


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def eval_batches(source: Sequence[dict[str, Any]], *, batch_size: int, max_examples: int | None = None,
                 process_index: int = 0, process_count: int = 1,
                 transform: Callable[[dict], dict] | None = None) -> Iterator[dict]:
    """One pass over the source in order: ``{'image', 'mask'}`` batches of a fixed size (with ``'label'`` when the
    source has labels; other fields with ``transform``, applied to each example); the last one is padded
    (repeating its final example) and ``mask`` (float32 ``[B]``) is 0 on the padding. Process ``p`` of ``P`` reads
    the contiguous slice ``p`` of every global batch."""
    transform = transform or _to_float
    if batch_size % process_count:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the process count ({process_count})")
    total = len(source) if max_examples is None else min(len(source), max_examples)
    per = batch_size // process_count
    for start in range(0, total, batch_size):
        idx = np.arange(start, min(start + batch_size, total))[process_index * per:(process_index + 1) * per]
        mask = np.ones(per, np.float32)
        mask[idx.size:] = 0.0
        idx = np.concatenate([idx, np.full(per - idx.size, idx[-1] if idx.size else total - 1)])
        yield {**_stack([transform(source[int(i)]) for i in idx]), "mask": mask}
