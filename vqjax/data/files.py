"""A user's own files as a dataset: ``config.dataset = 'files:PATH_OR_GLOB'``.

``PATH_OR_GLOB`` is a folder (every file below it with a known extension) or a glob (``/data/speech/**/*.wav``;
``**`` matches any depth). The modality comes from the extensions (:data:`EXTENSIONS`) or from
``FileOptions.modality``; one dataset holds one modality. What each modality's examples hold:

============ =================================================================================================
modality     example
============ =================================================================================================
image        ``image`` uint8 ``[H, W, C]`` (PNG, JPEG, WebP, BMP; resized or centre-cropped to ``image_size``)
audio        ``audio`` float32 ``[T]`` mono in [-1, 1], ``sample_rate`` int32 (WAV, FLAC, OGG, MP3; resampled to
             ``sample_rate`` when given; files recorded below it are refused: upsampling adds no content)
video        ``video`` uint8 ``[clip_frames, H, W, C]``, ``frame_rate`` float32 (MP4, WebM, AVI, MOV, MKV through
             PyAV): each file gives ``floor(frames / clip_frames)`` clips at ``frame_rate`` (nearest frames)
timeseries   ``signal`` float32 ``[T, C]``, ``label`` int64, ``sample_rate`` float32 (CSV, NPY, Parquet; channels
             by column name with ``columns``)
============ =================================================================================================

Every example also holds ``key`` (the file's path relative to the dataset's root, ``#k`` for the k-th clip of a
video) and, when there is one, ``caption`` (the text of a ``.txt`` sidecar beside the file, or of the
``captions`` manifest: a CSV or JSONL with a ``file`` column and a ``text`` or ``caption`` column, optionally
``label``) and ``label``.

Splits are stable: each file's split position is a hash of its relative path, a number in [0, 1), and a split
expression selects positions: ``train`` is every file, ``train[:95%]`` the files below 0.95, ``train[95%:]`` the
rest, ``+`` joins parts. Adding files never moves an old one to another split.

Indexing: the first use reads every file's header (size, image size and mode, sample rate and duration, frame
count and rate, columns and rows) with a progress bar and keeps the facts in ``data_dir/files_index/``; later uses
read only new or changed files. Files whose header cannot be read, or whose facts do not fit the options (an image
of another size when no ``image_size`` is set, audio below ``sample_rate``, a video shorter than one clip, a table
without the ``columns``), are reported (path and reason, and a count) and skipped; a dataset with nothing
readable is refused with a ``ValueError``. Examples are decoded when read (in grain's workers during training), so
a dataset larger than memory works; ``cache=True`` keeps the decoded examples of a split in an array_record file
for small datasets. A file that fails at decoding is reported the same way: :meth:`FileSource.read` returns None
for it, and indexing the source (``source[i]``, what training reads) gives the next readable example instead.
"""

from __future__ import annotations

import collections.abc
import csv
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vqjax.models.audio.dsp import resample, to_mono

__all__ = [
    "EXTENSIONS",
    "FileIndex",
    "FileOptions",
    "FileSource",
    "check_options",
    "file_source",
    "index_files",
    "read_header",
    "select_split",
    "split_position",
]

EXTENSIONS = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "audio": (".wav", ".flac", ".ogg", ".mp3"),
    "video": (".mp4", ".webm", ".avi", ".mov", ".mkv"),
    "timeseries": (".csv", ".npy", ".parquet"),
}
INDEX_VERSION = 1
_LOG = logging.getLogger("vqjax.data")
_SLICE = re.compile(r"^\s*train\s*(?:\[\s*(?:(\d+(?:\.\d+)?)%)?\s*:\s*(?:(\d+(?:\.\d+)?)%)?\s*\])?\s*$")


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """How a folder of files becomes examples (``config.files`` in the tasks).

    Attributes:
      modality: 'image', 'audio', 'video' or 'timeseries'; None takes it from the files' extensions.
      image_size: ``(height, width)`` images (and video frames) are brought to; None keeps the dataset's one size.
      resize: 'resize' (scale to ``image_size``, aspect not kept) or 'crop' (scale the shorter side, centre crop).
      channels: 1 (grey) or 3 (RGB); None: 1 when every image is grey, else 3.
      sample_rate: audio: the rate every clip is resampled to (files below it are refused); time series: the
        rate stated in the examples. None keeps each file's rate.
      min_seconds: audio shorter than this is refused at indexing.
      clip_frames: video: frames per clip.
      frame_rate: video: the clips' frame rate (frames picked nearest in time); None keeps each file's rate.
      columns: time series: the channels, by column name (CSV/Parquet); None takes every numeric column.
      captions: a CSV or JSONL manifest mapping files (``file``) to ``text``/``caption`` and ``label``.
      cache: keep the decoded examples of a split in an array_record file (for small datasets).
    """

    modality: str | None = None
    image_size: tuple[int, int] | None = None
    resize: str = "resize"
    channels: int | None = None
    sample_rate: int | None = None
    min_seconds: float = 0.0
    clip_frames: int = 17
    frame_rate: float | None = None
    columns: tuple[str, ...] | None = None
    captions: str | None = None
    cache: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> FileOptions:
        """Options from a dict or ConfigDict (``config.files``), refusing unknown fields."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"config.files has unknown fields {unknown}; known: {sorted(names)}")
        if values.get("image_size") is not None:
            values["image_size"] = tuple(int(v) for v in values["image_size"])
        if values.get("columns") is not None:
            values["columns"] = tuple(str(v) for v in values["columns"])
        return check_options(cls(**values))


def check_options(o: FileOptions) -> FileOptions:
    """Refuses options that cannot describe a dataset, naming the field."""
    if o.modality is not None and o.modality not in EXTENSIONS:
        raise ValueError(f"config.files.modality must be one of {sorted(EXTENSIONS)} or None; got {o.modality!r}")
    if o.image_size is not None and (len(o.image_size) != 2 or min(o.image_size) < 1):
        raise ValueError(f"config.files.image_size must be (height, width), both >= 1; got {o.image_size!r}")
    if o.resize not in ("resize", "crop"):
        raise ValueError(f"config.files.resize must be 'resize' or 'crop'; got {o.resize!r}")
    if o.channels not in (None, 1, 3):
        raise ValueError(f"config.files.channels must be 1, 3 or None; got {o.channels!r}")
    if o.sample_rate is not None and not o.sample_rate > 0:
        raise ValueError(f"config.files.sample_rate must be > 0 or None; got {o.sample_rate!r}")
    if not o.min_seconds >= 0:
        raise ValueError(f"config.files.min_seconds must be >= 0; got {o.min_seconds!r}")
    if isinstance(o.clip_frames, bool) or not isinstance(o.clip_frames, int) or o.clip_frames < 1:
        raise ValueError(f"config.files.clip_frames must be an int >= 1; got {o.clip_frames!r}")
    if o.frame_rate is not None and not o.frame_rate > 0:
        raise ValueError(f"config.files.frame_rate must be > 0 or None; got {o.frame_rate!r}")
    return o


# -- where the files are ---------------------------------------------------------------------------------------
def resolve(pattern: str) -> tuple[str, list[str]]:
    """``(root, sorted relative paths)`` of the files a folder or glob names (known extensions only)."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"files dataset: expected a folder or a glob after 'files:'; got {pattern!r}")
    pattern = os.path.abspath(os.path.expanduser(pattern))
    known = tuple(e for exts in EXTENSIONS.values() for e in exts)
    if os.path.isdir(pattern):
        root = pattern
        paths = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
    else:
        magic = min([i for i, ch in enumerate(pattern) if ch in "*?["] or [len(pattern)])
        root = os.path.dirname(pattern[:magic]) if magic < len(pattern) else os.path.dirname(pattern)
        paths = glob.glob(pattern, recursive=True)
    rel = sorted(os.path.relpath(p, root) for p in paths if os.path.isfile(p) and p.lower().endswith(known))
    if not rel:
        raise ValueError(f"files dataset {pattern!r}: no files with a known extension "
                         f"({', '.join(known)}) there")
    return root, rel


def modality_of(paths: Iterable[str], given: str | None) -> str:
    """The dataset's modality: ``given``, else the one modality the extensions name (csv/npy/parquet: timeseries)."""
    if given is not None:
        return given
    found = {m for p in paths for m, exts in EXTENSIONS.items() if p.lower().endswith(exts)}
    if len(found) != 1:
        raise ValueError(f"files dataset: the files are of several modalities {sorted(found)}; point the dataset "
                         f"at one kind, or set config.files.modality")
    return found.pop()


def split_position(rel_path: str) -> float:
    """A file's place in [0, 1) for the split expressions: a hash of its relative path (``/``-separated), so it
    never changes when other files come or go."""
    digest = hashlib.sha256(rel_path.replace(os.sep, "/").encode()).hexdigest()
    return int(digest[:13], 16) / float(16 ** 13)


def select_split(rel_paths: Iterable[str], split: str) -> list[str]:
    """The paths in ``split``: ``train``, ``train[a%:b%]`` (positions in ``[a/100, b/100)``), joined by ``+``.

    Raises:
      ValueError: any other split (files datasets have one split, ``train``, sliced by percent).
    """
    bounds = []
    for part in str(split).split("+"):
        m = _SLICE.match(part)
        if not m:
            raise ValueError(f"files datasets have one split, 'train', sliced by percent of a stable hash of each "
                             f"file's path ('train[:95%]', 'train[95%:]'; counts such as 'train[:100]' would move "
                             f"files between splits as files are added); got split={split!r}")
        lo = float(m.group(1)) / 100 if m.group(1) is not None else 0.0
        hi = float(m.group(2)) / 100 if m.group(2) is not None else 1.0
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"split {split!r}: percent bounds must satisfy 0 <= start <= end <= 100")
        bounds.append((lo, hi))
    return [p for p in rel_paths if any(lo <= split_position(p) < hi for lo, hi in bounds)]


# -- headers ---------------------------------------------------------------------------------------------------
def read_header(path: str, modality: str) -> dict:
    """The facts of one file that decide whether it fits the options, read without decoding it.

    Raises whatever the reader raises for a file it cannot read (the index records it as the reason).
    """
    if modality == "image":
        from PIL import Image  # heavy import, needed only for images

        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return {"width": int(img.size[0]), "height": int(img.size[1]), "mode": img.mode}
    if modality == "audio":
        try:
            import soundfile  # optional dependency (the audio extra)

            info = soundfile.info(path)
            if info.frames <= 0:
                raise ValueError("no samples")
            return {"sample_rate": int(info.samplerate), "frames": int(info.frames), "channels": int(info.channels)}
        except ImportError:
            pass
        except RuntimeError:
            if not path.lower().endswith(".mp3"):
                raise
        with _av_open(path) as container:
            stream = container.streams.audio[0]
            frames = int(round(float(stream.duration * stream.time_base) * stream.rate)) if stream.duration else 0
            if frames <= 0:
                raise ValueError("no audio duration in the header")
            return {"sample_rate": int(stream.rate), "frames": frames, "channels": int(stream.channels)}
    if modality == "video":
        with _av_open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            frames = int(stream.frames)
            if not frames and stream.duration and rate:
                frames = int(float(stream.duration * stream.time_base) * rate)
            if rate <= 0 or frames <= 0:
                raise ValueError("the header states no frame rate or frame count")
            return {"frame_rate": rate, "frames": frames, "width": int(stream.width), "height": int(stream.height)}
    if modality == "timeseries":
        lower = path.lower()
        if lower.endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"expected a numeric [T] or [T, C] array; got {arr.dtype} {arr.shape}")
            return {"rows": int(arr.shape[0]), "columns": [f"ch{i}" for i in range(1 if arr.ndim == 1 else
                                                                                     arr.shape[1])]}
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq  # heavy import, needed only for Parquet

            meta = pq.ParquetFile(path)
            numeric = [f.name for f in meta.schema_arrow if _numeric_arrow(f.type)]
            return {"rows": int(meta.metadata.num_rows), "columns": numeric}
        import pandas as pd  # heavy import, needed only for CSV

        head = pd.read_csv(path, nrows=64)
        with open(path, "rb") as fh:
            rows = sum(1 for _ in fh) - 1
        numeric = [str(c) for c in head.columns if pd.api.types.is_numeric_dtype(head[c])]
        if rows <= 0:
            raise ValueError("no rows")
        return {"rows": rows, "columns": numeric}
    raise ValueError(f"unknown modality {modality!r}")


def _numeric_arrow(t) -> bool:
    import pyarrow as pa  # heavy import, needed only for Parquet

    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _av_open(path: str):
    try:
        import av  # optional dependency (the video extra)
    except ImportError as err:
        raise ImportError("reading video (and MP3 without soundfile) needs PyAV: pip install 'vqjax[video]'") from err
    return av.open(path)


# -- the index -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FileIndex:
    """The facts of every file of a dataset: ``root``, ``modality`` and, per relative path, ``{'size', 'mtime',
    'facts'}`` or ``{'size', 'mtime', 'error'}`` (a header that could not be read)."""

    root: str
    modality: str
    entries: dict


def _index_path(data_dir: str, root: str, modality: str) -> str:
    key = hashlib.sha256(f"{root}\0{modality}".encode()).hexdigest()[:16]
    return os.path.join(data_dir, "files_index", f"{key}.json")


def index_files(pattern: str, *, data_dir: str, modality: str | None = None, progress: bool = True) -> FileIndex:
    """Indexes the files ``pattern`` names (reading only those new or changed since the last index) and saves
    the index under ``data_dir/files_index/``. Unreadable headers are kept as errors (reported by
    :func:`file_source`)."""
    root, rel = resolve(pattern)
    modality = modality_of(rel, modality)
    rel = [p for p in rel if p.lower().endswith(EXTENSIONS[modality])]
    where = _index_path(data_dir, root, modality)
    old = {}
    if os.path.exists(where):
        with open(where) as fh:
            saved = json.load(fh)
        if saved.get("version") == INDEX_VERSION:
            old = saved["entries"]
    entries, todo = {}, []
    for p in rel:
        st = os.stat(os.path.join(root, p))
        prev = old.get(p)
        if prev is not None and prev["size"] == st.st_size and prev["mtime"] == st.st_mtime_ns:
            entries[p] = prev
        else:
            todo.append((p, st))
    for p, st in tqdm(todo, desc=f"indexing {modality} files", unit="file", disable=not progress or not todo):
        entry = {"size": int(st.st_size), "mtime": int(st.st_mtime_ns)}
        try:
            entry["facts"] = read_header(os.path.join(root, p), modality)
        except ImportError:
            raise
        except Exception as err:  # any reader failure is a reason to skip the file, recorded with it
            entry["error"] = f"{type(err).__name__}: {err}"
        entries[p] = entry
    if todo or set(old) != set(entries):
        os.makedirs(os.path.dirname(where), exist_ok=True)
        with open(where + ".tmp", "w") as fh:
            json.dump({"version": INDEX_VERSION, "root": root, "modality": modality, "entries": entries}, fh)
        os.replace(where + ".tmp", where)
    return FileIndex(root, modality, entries)


# -- fitting the options ---------------------------------------------------------------------------------------
def _image_plan(index: FileIndex, options: FileOptions) -> tuple[tuple[int, int], int]:
    facts = [e["facts"] for e in index.entries.values() if "facts" in e]
    sizes = collections.Counter((f["height"], f["width"]) for f in facts)
    size = options.image_size or (sizes.most_common(1)[0][0] if sizes else (0, 0))
    grey = all(f.get("mode", "RGB") in ("1", "L", "I", "I;16", "F") for f in facts)
    return tuple(size), options.channels or (1 if grey else 3)


def _misfit(facts: dict, modality: str, options: FileOptions, plan) -> str | None:
    """Why a file's facts do not fit the options (None when they do)."""
    if modality in ("image", "video") and options.image_size is None and \
            (facts["height"], facts["width"]) != plan[0]:
        return (f"{modality} size {facts['height']}x{facts['width']} differs from the dataset's {plan[0][0]}x{plan[0][1]}"
                f" (set config.files.image_size to resize every image)")
    if modality == "audio":
        if options.sample_rate and facts["sample_rate"] < options.sample_rate:
            return (f"sample rate {facts['sample_rate']} Hz is below config.files.sample_rate = "
                    f"{options.sample_rate} Hz (upsampling adds no content)")
        if facts["frames"] < options.min_seconds * facts["sample_rate"]:
            return f"{facts['frames'] / facts['sample_rate']:.3f} s is shorter than min_seconds={options.min_seconds}"
    if modality == "video" and _clip_count(facts, options) < 1:
        return (f"{facts['frames']} frames at {facts['frame_rate']:g} fps hold no clip of "
                f"{options.clip_frames} frames at {options.frame_rate or facts['frame_rate']:g} fps")
    if modality == "timeseries":
        if options.columns is not None:
            missing = [c for c in options.columns if c not in facts["columns"]]
            if missing:
                return f"no numeric column(s) {missing} (has {facts['columns']})"
        elif not facts["columns"]:
            return "no numeric column"
    return None


def _clip_count(facts: dict, options: FileOptions) -> int:
    rate = options.frame_rate or facts["frame_rate"]
    usable = int(np.floor(facts["frames"] * rate / facts["frame_rate"] + 1e-6))
    return usable // options.clip_frames


def _read_manifest(path: str, root: str) -> dict[str, dict]:
    """``{relative path: {'caption'?, 'label'?}}`` from a CSV or JSONL manifest."""
    if path.lower().endswith((".jsonl", ".json")):
        with open(path) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    out = {}
    for n, row in enumerate(rows):
        name = row.get("file") or row.get("path")
        if not name:
            raise ValueError(f"captions manifest {path!r}: row {n + 1} has no 'file' column")
        rel = os.path.relpath(name if os.path.isabs(name) else os.path.join(root, name), root)
        item = {}
        text = row.get("text", row.get("caption"))
        if text is not None:
            item["caption"] = str(text)
        if row.get("label") not in (None, ""):
            item["label"] = int(row["label"])
        out[rel] = item
    return out


class FileSource(collections.abc.Sequence):
    """Random-access examples of a split of a files dataset (see the module docstring); built by
    :func:`file_source`. ``skipped`` lists ``(path, reason)`` of the files left out at indexing and
    ``failures`` those that failed at decoding in this process."""

    def __init__(self, index: FileIndex, items: list[tuple[str, int]], options: FileOptions, plan,
                 extras: dict[str, dict], skipped: list[tuple[str, str]]):
        self.root, self.modality = index.root, index.modality
        self.options, self._plan, self._extras = options, plan, extras
        self._items = items
        self._facts = {p: index.entries[p]["facts"] for p, _ in items}
        self.skipped = skipped
        self.failures: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self._items)

    def key(self, i: int) -> str:
        path, clip = self._items[i]
        return path if self.modality != "video" else f"{path}#{clip}"

    def read(self, i: int) -> dict | None:
        """Example ``i``, or None when its file fails to decode (reported with its path and reason)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"FileSource: index {i} out of range for {len(self)} examples")
        path, clip = self._items[int(i)]
        try:
            example = _decode(os.path.join(self.root, path), self.modality, self._facts[path], clip, self.options,
                              self._plan)
        except ImportError:
            raise
        except Exception as err:  # any decoder failure: reported and skipped, never silent
            reason = f"{type(err).__name__}: {err}"
            self.failures.append((path, reason))
            _LOG.warning("files dataset: skipped %s at decoding: %s", os.path.join(self.root, path), reason)
            return None
        example["key"] = self.key(i)
        extra = self._extras.get(path, {})
        if "caption" in extra:
            example["caption"] = extra["caption"]
        if "label" in extra:
            example["label"] = np.int64(extra["label"])
        elif self.modality == "timeseries":
            example["label"] = np.int64(-1)
        return example

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"FileSource: index {i} out of range for {n} examples")
        for step in range(n):
            example = self.read((int(i) + step) % n)
            if example is not None:
                return example
        raise ValueError(f"files dataset {self.root!r}: no example of the split could be decoded "
                         f"({len(self.failures)} failures; first: {self.failures[:1]})")


def _decode(path: str, modality: str, facts: dict, clip: int, o: FileOptions, plan) -> dict:
    if modality == "image":
        from PIL import Image  # heavy import, needed only for images

        with Image.open(path) as img:
            return {"image": _fit_image(img, plan[0], plan[1], o.resize)}
    if modality == "audio":
        wave, rate = _read_audio(path)
        wave = to_mono(wave)
        if o.sample_rate and rate != o.sample_rate:
            wave, rate = resample(wave, rate, int(o.sample_rate)), int(o.sample_rate)
        if not np.all(np.isfinite(wave)):
            raise ValueError("non-finite samples")
        return {"audio": np.clip(wave, -1.0, 1.0).astype(np.float32), "sample_rate": np.int32(rate)}
    if modality == "video":
        return _read_clip(path, facts, clip, o, plan)
    if modality == "timeseries":
        return {"signal": _read_table(path, o.columns), "sample_rate": np.float32(o.sample_rate or 0.0)}
    raise ValueError(f"unknown modality {modality!r}")


def _fit_image(img, size: tuple[int, int], channels: int, mode: str) -> np.ndarray:
    from PIL import Image  # heavy import, needed only for images

    img = img.convert("L" if channels == 1 else "RGB")
    h, w = size
    if (img.size[1], img.size[0]) != (h, w):
        if mode == "crop":
            scale = max(h / img.size[1], w / img.size[0])
            inter = (max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale)))
            img = img.resize(inter, Image.Resampling.BICUBIC)
            left, top = (inter[0] - w) // 2, (inter[1] - h) // 2
            img = img.crop((left, top, left + w, top + h))
        else:
            img = img.resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _read_audio(path: str) -> tuple[np.ndarray, int]:
    try:
        import soundfile  # optional dependency (the audio extra)

        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return wave, int(rate)
    except ImportError:
        pass
    except RuntimeError:
        if not path.lower().endswith(".mp3"):
            raise
    chunks, rate = [], 0
    with _av_open(path) as container:
        stream = container.streams.audio[0]
        rate = int(stream.rate)
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            arr = arr.reshape(-1, stream.channels) if frame.format.is_packed else arr.T
            if np.issubdtype(arr.dtype, np.integer):
                arr = arr / float(np.iinfo(arr.dtype).max)
            chunks.append(arr.astype(np.float32))
    if not chunks:
        raise ValueError("no audio frames decoded")
    return np.concatenate(chunks), rate


def _read_clip(path: str, facts: dict, clip: int, o: FileOptions, plan) -> dict:
    """Clip ``clip`` of a video: its frames at ``o.frame_rate`` (the nearest earlier source frames). The decoder
    seeks to the keyframe before the clip and numbers frames by their timestamps, so reading clip ``k`` of a long
    video decodes about one group of pictures, not the ``k`` clips before it."""
    rate_in = facts["frame_rate"]
    rate = o.frame_rate or rate_in
    wanted = np.floor((clip * o.clip_frames + np.arange(o.clip_frames)) * rate_in / rate + 1e-6).astype(int)
    frames, first, last, keep = {}, int(wanted[0]), int(wanted[-1]), set(wanted.tolist())
    with _av_open(path) as container:
        stream = container.streams.video[0]
        base = stream.start_time or 0
        timed = stream.time_base is not None
        if timed and first > 0:
            container.seek(base + int(first / rate_in / float(stream.time_base)), stream=stream, backward=True,
                           any_frame=False)
        for count, frame in enumerate(container.decode(stream)):
            n = round(float((frame.pts - base) * stream.time_base) * rate_in) if timed and frame.pts is not None \
                else count
            if n > last:
                break
            if n in keep:
                frames[n] = _fit_image(frame.to_image(), plan[0], plan[1], o.resize)
    missing = [int(n) for n in wanted if n not in frames]
    if missing:
        raise ValueError(f"frames {missing[:3]}... could not be decoded (the file holds fewer than its header says)")
    return {"video": np.stack([frames[int(n)] for n in wanted]), "frame_rate": np.float32(rate)}


def _read_table(path: str, columns: tuple[str, ...] | None) -> np.ndarray:
    lower = path.lower()
    if lower.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        if columns is not None:
            arr = arr[:, [int(c[2:]) for c in columns]]
    else:
        import pandas as pd  # heavy import, needed only for tables

        frame = pd.read_parquet(path) if lower.endswith(".parquet") else pd.read_csv(path)
        names = list(columns) if columns is not None else [c for c in frame.columns
                                                          if pd.api.types.is_numeric_dtype(frame[c])]
        arr = frame[names].to_numpy(np.float32)
    arr = np.asarray(arr, np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{int(np.sum(~np.isfinite(arr)))} non-finite value(s) (empty cells?)")
    return arr


def file_source(pattern: str, split: str, *, data_dir: str, options: FileOptions | Mapping | None = None,
                progress: bool = True):
    """The examples of ``split`` of the files ``pattern`` names (see the module docstring).

    Args:
      pattern: a folder or glob.
      split: ``train``, ``train[:95%]``, ``train[95%:]``, parts joined by ``+``.
      data_dir: where the index (and the optional cache) live.
      options: :class:`FileOptions` or a mapping of its fields.
      progress: show the indexing progress bar.

    Returns:
      a :class:`FileSource` (or, with ``options.cache``, an array_record source of its decoded examples).

    Raises:
      ValueError: no readable file in the dataset, an unknown split, or bad options.
    """
    options = options if isinstance(options, FileOptions) else FileOptions.from_mapping(options)
    index = index_files(pattern, data_dir=data_dir, modality=options.modality, progress=progress)
    plan = _image_plan(index, options) if index.modality in ("image", "video") else None
    skipped, ok = [], []
    for path, entry in sorted(index.entries.items()):
        reason = entry.get("error") or _misfit(entry["facts"], index.modality, options, plan)
        (skipped.append((path, reason)) if reason else ok.append(path))
    for path, reason in skipped:
        _LOG.warning("files dataset: skipped %s: %s", os.path.join(index.root, path), reason)
    if skipped:
        _LOG.warning("files dataset %s: %d of %d files skipped (reasons above)", index.root, len(skipped),
                     len(index.entries))
    if not ok:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise ValueError(f"files dataset {pattern!r}: none of its {len(index.entries)} {index.modality} files is "
                         f"readable with these options ({reasons})")
    extras = {p: {} for p in ok}
    for p in ok:
        side = os.path.join(index.root, os.path.splitext(p)[0] + ".txt")
        if os.path.exists(side):
            with open(side, encoding="utf-8") as fh:
                extras[p]["caption"] = fh.read().strip()
    if options.captions:
        for p, item in _read_manifest(options.captions, index.root).items():
            if p in extras:
                extras[p].update(item)
    chosen = select_split(ok, split)
    if index.modality == "video":
        items = [(p, k) for p in chosen for k in range(_clip_count(index.entries[p]["facts"], options))]
    else:
        items = [(p, 0) for p in chosen]
    source = FileSource(index, items, options, plan, extras, skipped)
    if options.cache and len(source):
        return cached(source, data_dir, split)
    return source


def cached(source: FileSource, data_dir: str, split: str):
    """``source``'s decoded examples in an array_record file under ``data_dir/files_cache/`` (written on first
    use; keyed by the files' index entries and the options), read back as a random-access source."""
    import flax.serialization  # heavy import, cache only
    from array_record.python import array_record_data_source, array_record_module  # heavy import, cache only

    fingerprint = hashlib.sha256(json.dumps([source.root, split, repr(source.options), source._items,
                                             [source._facts[p] for p, _ in source._items]],
                                            default=str).encode()).hexdigest()[:16]
    path = os.path.join(data_dir, "files_cache", f"{fingerprint}.array_record")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1")
        for i in tqdm(range(len(source)), desc="caching decoded examples", unit="example"):
            example = source.read(i)
            if example is not None:
                writer.write(flax.serialization.msgpack_serialize(example))
        writer.close()
        os.replace(path + ".tmp", path)
    return _Decoded(array_record_data_source.ArrayRecordDataSource(path))


class _Decoded(collections.abc.Sequence):
    def __init__(self, records):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> dict:
        import flax.serialization  # heavy import, cache only

        return flax.serialization.msgpack_restore(self._records[int(i)])
