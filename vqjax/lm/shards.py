"""Writing token shards: the job, how each modality's examples reach its tokenizer, the one shard function, and
the runners inside one program (one process on its local devices, or every process of ``jax.distributed``).

:mod:`vqjax.tokenize` is the command line over this (and adds the Ray runner); the ``lm`` task's built-in
corpora use it to write their shards (:func:`tokenize_here`). The format of a shard and of the manifest is
:mod:`vqjax.data.tokens`.

Shards are contiguous ranges of the split's examples, each written by :func:`tokenize_shard` to a temporary name
and renamed when complete. Rerunning skips finished shards and redoes partial ones; an ``out`` written by another
tokenizer or from another dataset or split is refused. The records are encoded in fixed-size batches from each
shard's start, so a shard's bytes are the same whichever worker wrote it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
from tqdm.auto import tqdm

from vqjax.data import audio as audio_data
from vqjax.data import pipeline, tokens
from vqjax.tokenizers import Tokenizer, fingerprint
from vqjax.version import __version__

__all__ = [
    "IDS",
    "ID_MODALITIES",
    "IdSource",
    "Preparer",
    "TokenizeJob",
    "finalize",
    "plan",
    "preparer",
    "run_jax",
    "run_local",
    "tokenize_here",
    "tokenize_shard",
]

IDS = "ids"                                   # the dataset of every id an id tokenizer knows
ID_MODALITIES = ("graph", "item")


@dataclasses.dataclass(frozen=True)
class TokenizeJob:
    """What to tokenize and where (every runner's input).

    Attributes:
      tokenizer: a tokenizer folder (training workdir or export).
      dataset: a dataset name (:func:`vqjax.data.pipeline.get_source`).
      split: the split expression.
      out: the output folder.
      data_dir: tfds data_dir (and the files datasets' index).
      features: the dataset's feature renaming (``config.features``).
      files_options: a files dataset's options (``config.files``).
      num_shards: how many shards (None: one per ``examples_per_shard`` examples).
      examples_per_shard: examples per shard when ``num_shards`` is None.
      batch_size: examples per encode call.
      read_threads: grain threads decoding examples ahead of the encoder.
    """

    tokenizer: str
    dataset: str
    split: str
    out: str
    data_dir: str
    features: dict = dataclasses.field(default_factory=dict)
    files_options: dict | None = None
    num_shards: int | None = None
    examples_per_shard: int = 4096
    batch_size: int = 64
    read_threads: int = 4

    def __post_init__(self):
        for name in ("examples_per_shard", "batch_size", "read_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenizeJob.{name} must be an int >= 1; got {value!r}")
        if self.num_shards is not None and (not isinstance(self.num_shards, int) or self.num_shards < 1):
            raise ValueError(f"TokenizeJob.num_shards must be an int >= 1 or None; got {self.num_shards!r}")

    def source(self, tok=None):
        """The examples: ``dataset`` read by :func:`vqjax.data.pipeline.get_source`, or for ``'ids'`` every id of
        the tokenizer (``tok``, opened when not given)."""
        if self.dataset == IDS:
            return IdSource(_id_count(tok or self.open_tokenizer()))
        return pipeline.get_source(self.dataset, self.split, self.data_dir, features=self.features,
                                   files_options=self.files_options)

    def open_tokenizer(self):
        return Tokenizer.load(self.tokenizer)


# -- preparing examples for a tokenizer ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Preparer:
    """How one modality's examples reach its tokenizer: ``prepare(example) -> array`` (what ``encode`` reads for
    one example) and ``encode(tokenizer, arrays) -> list of codes`` (each example's codes, its variable axis cut to
    its length), with ``varies`` when codes lengths differ between examples."""

    prepare: Callable[[dict], np.ndarray]
    encode: Callable[[Any, list[np.ndarray]], list[np.ndarray]]
    varies: bool


def _fixed_encode(tok, arrays):
    return list(np.asarray(tok.encode(np.stack(arrays))))


def _image(tok) -> Preparer:
    shape = tuple(tok.input_shape)

    def prepare(example):
        image = np.asarray(example["image"])
        image = image[..., None] if image.ndim == 2 else image
        if image.shape != shape:
            raise ValueError(f"example {example.get('key', '?')!r}: image shape {image.shape}; the tokenizer reads "
                             f"{shape} (for a files dataset: --files='{{\"image_size\": {list(shape[:2])}}}')")
        return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)

    return Preparer(prepare, _fixed_encode, False)


def _video(tok) -> Preparer:
    def prepare(example):
        return np.asarray(example["video"])

    return Preparer(prepare, _fixed_encode, False)


def _audio(tok) -> Preparer:
    spec = tok.spec
    second = tok.hop_length * max(1, round(tok.sample_rate / tok.hop_length))

    def prepare(example):
        out = audio_data.prepare_example(example, sample_rate=tok.sample_rate, target_db=spec.get("loudness_db"),
                                         highpass_hz=spec.get("highpass_hz"))
        return out["audio"][: int(out["length"]), 0]

    def encode(tok, waves):
        lengths = np.asarray([w.size for w in waves], np.int64)
        padded = -(-int(lengths.max()) // second) * second        # whole seconds: few distinct shapes to compile
        x = np.zeros((len(waves), padded), np.float32)
        for i, w in enumerate(waves):
            x[i, : w.size] = w
        codes = np.asarray(tok.encode(x, sample_rate=tok.sample_rate, lengths=lengths))
        frames = -(-(lengths + tok.delay) // tok.hop_length)
        return [codes[i, : int(frames[i])] for i in range(len(waves))]

    return Preparer(prepare, encode, True)


def _timeseries(tok) -> Preparer:
    hop = tok.hop_length

    def prepare(example):
        x = np.asarray(example["signal"], np.float32)
        usable = (x.shape[0] // hop) * hop
        if usable == 0:
            raise ValueError(f"example {example.get('key', '?')!r}: {x.shape[0]} samples are fewer than one code "
                             f"position ({hop})")
        return x[:usable]

    def encode(tok, series):
        out: list = [None] * len(series)
        for length in sorted({s.shape[0] for s in series}):        # equal lengths encode together
            idx = [i for i, s in enumerate(series) if s.shape[0] == length]
            codes = np.asarray(tok.encode(np.stack([series[i] for i in idx])))
            for i, c in zip(idx, codes):
                out[i] = c
        return out

    return Preparer(prepare, encode, True)


def _ids(tok) -> Preparer:
    def prepare(example):
        return np.asarray(example["id"], np.int64)

    return Preparer(prepare, _fixed_encode, False)


PREPARERS = {"image": _image, "video": _video, "audio": _audio, "timeseries": _timeseries, "graph": _ids,
             "item": _ids}


def preparer(tok) -> Preparer:
    """The :class:`Preparer` of ``tok``'s modality; ``ValueError`` for a modality it has none for."""
    if tok.modality not in PREPARERS:
        raise ValueError(f"vqjax.tokenize reads {sorted(PREPARERS)} tokenizers; got a {tok.modality!r} one")
    return PREPARERS[tok.modality](tok)


def _id_count(tok) -> int:
    if tok.modality == "graph":
        return int(tok.num_nodes)
    if tok.modality == "item":
        return int(tok.num_items)
    raise ValueError(f"--dataset={IDS!r} is the ids of a graph or item tokenizer; this one is {tok.modality!r}")


@dataclasses.dataclass(frozen=True)
class IdSource:
    """Every id ``0 .. count - 1`` of an id tokenizer as examples ``{'id', 'key'}`` (the key is the id)."""

    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(f"IdSource: index {i} out of range for {self.count} ids")
        return {"id": np.int64(i), "key": str(i)}


# -- the plan and the one shard function ----------------------------------------------------------------------
def _tokenizer_entry(tok, path: str) -> dict:
    return {"fingerprint": fingerprint(tok), "modality": tok.modality, "vocab_size": int(tok.vocab_size),
            "codes_shape": [None if s is None else int(s) for s in tok.codes_shape],
            "tokens_per_second": tok.spec.get("tokens_per_second"), "tokenizer": path}


def plan(job: TokenizeJob, *, tok=None, source=None) -> dict:
    """The manifest of ``job`` before its shards are written (written to ``job.out`` when there is none yet).

    Raises:
      ValueError: ``job.out`` holds shards of another tokenizer, dataset or split, or a different shard count.
    """
    tok = tok or job.open_tokenizer()
    source = source if source is not None else job.source(tok)
    preparer(tok)
    count = len(source)
    if count == 0:
        raise ValueError(f"split {job.split!r} of dataset {job.dataset!r} is empty: nothing to tokenize")
    num = job.num_shards or max(1, math.ceil(count / job.examples_per_shard))
    num = min(num, count)
    bounds = [round(s * count / num) for s in range(num + 1)]
    manifest = {
        "format": tokens.TOKENS_FORMAT, "complete": False, "vqjax_version": __version__,
        **_tokenizer_entry(tok, job.tokenizer),
        "dataset": job.dataset, "split": job.split, "examples": count, "features": job.features,
        "files": job.files_options,
        "batch_size": job.batch_size,
        "shards": [{"file": tokens.shard_name(s, num), "start": bounds[s], "stop": bounds[s + 1]}
                   for s in range(num)],
    }
    old = tokens.read_manifest(job.out)
    if old is not None:
        _check_same(job, old, manifest)
        return old
    if os.path.isdir(job.out) and any(f.startswith("tokens-") for f in os.listdir(job.out)):
        raise ValueError(f"--out {job.out!r} holds token shards without a manifest; choose an empty folder")
    if jax.process_index() == 0:
        tokens.write_manifest(job.out, manifest)
    return manifest


def _check_same(job: TokenizeJob, old: dict, new: dict) -> None:
    where = os.path.join(job.out, tokens.MANIFEST_FILE)
    if old["fingerprint"] != new["fingerprint"]:
        raise ValueError(f"--out {job.out!r} holds shards of another tokenizer ({old['tokenizer']!r}, "
                         f"fingerprint {old['fingerprint'][:12]}; {job.tokenizer!r} has "
                         f"{new['fingerprint'][:12]}): choose another --out")
    for key in ("dataset", "split", "examples"):
        if old[key] != new[key]:
            raise ValueError(f"{where}: the source {key} is {old[key]!r}; this run's is {new[key]!r}: choose "
                             f"another --out")
    if len(old["shards"]) != len(new["shards"]) or old.get("batch_size") != new["batch_size"]:
        raise ValueError(f"{where}: {len(old['shards'])} shards in batches of {old.get('batch_size')}; this run asks "
                         f"for {len(new['shards'])} in batches of {new['batch_size']}: rerun with the same "
                         f"--num_shards and --batch_size, or choose another --out")


def _examples(source, start: int, stop: int, threads: int, prepare: Callable[[dict], np.ndarray]):
    """``(index, example or None, prepared input or None)`` of ``source[start:stop]`` in order, decoded and
    prepared by grain's reader threads ahead of the consumer (``None``: a file that failed to decode, already
    reported by the source)."""
    read = getattr(source, "read", source.__getitem__)

    def one(i):
        example = read(int(i))
        return int(i), example, None if example is None else prepare(example)

    ds = grain.MapDataset.range(start, stop).map(one)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads)))


def tokenize_shard(job: TokenizeJob, index: int, *, tok=None, source=None, manifest: dict | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Writes shard ``index`` of ``job`` (skipped when its file exists) and returns its manifest entry
    (``file``, ``records``, ``tokens``, ``bytes``, ``sha256``, ``skipped`` examples, ``written``).

    ``progress(records, tokens)`` is called after each batch."""
    tok = tok or job.open_tokenizer()
    source = source if source is not None else job.source(tok)
    manifest = manifest or plan(job, tok=tok, source=source)
    entry = manifest["shards"][index]
    path = os.path.join(job.out, entry["file"])
    if os.path.exists(path):
        return _finished(path, entry, written=False)
    prep = preparer(tok)
    counts = {"tokens": 0, "skipped": 0, "max_length": 0}

    def batches():
        pending: list[tuple[int, dict, np.ndarray]] = []
        for i, example, ready in _examples(source, entry["start"], entry["stop"], job.read_threads, prep.prepare):
            if example is None:
                counts["skipped"] += 1
                continue
            pending.append((i, example, ready))
            if len(pending) == job.batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def records():
        for batch in batches():
            codes = prep.encode(tok, [b[2] for b in batch])
            n = 0
            for (i, example, _), c in zip(batch, codes):
                n += int(np.sum(c >= 0))
                counts["max_length"] = max(counts["max_length"], int(c.shape[0]))
                yield tokens.encode_record(c, key=_key(example, i), length=c.shape[0] if prep.varies else None,
                                           caption=_text(example.get("caption")), label=_label(example))
            counts["tokens"] += n
            if progress is not None:
                progress(len(batch), n)

    done = tokens.write_shard(path, records())
    return {**done, "tokens": counts["tokens"], "max_length": counts["max_length"] if prep.varies else None,
            "skipped": counts["skipped"], "written": True}


def _finished(path: str, entry: dict, written: bool) -> dict:
    """The manifest entry of a shard already on disk (records and tokens counted from the file)."""
    from array_record.python import array_record_data_source  # heavy import, needed only to count a shard

    reader = array_record_data_source.ArrayRecordDataSource([path])
    count, total, longest, varies = len(reader), 0, 0, False
    for i in range(count):
        record = tokens.decode_record(reader[i])
        total += int(np.sum(record["codes"] >= 0))
        varies = varies or "length" in record
        longest = max(longest, int(record.get("length", 0)))
    return {"file": entry["file"], "records": count, "tokens": total, "max_length": longest if varies else None,
            "bytes": os.path.getsize(path), "sha256": tokens.file_sha256(path), "skipped": None, "written": written}


def _key(example: dict, index: int) -> str:
    key = example.get("key", index)
    return key.decode() if isinstance(key, bytes) else str(key)


def _text(value) -> str | None:
    if value is None:
        return None
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _label(example: dict) -> int | None:
    value = example.get("label")
    if value is None or np.asarray(value).ndim != 0:
        return None
    value = int(value)
    return None if value < 0 else value


def finalize(job: TokenizeJob, manifest: dict, entries: dict[int, dict]) -> dict:
    """The complete manifest: every shard's counts and checksum (from ``entries``, or read from its file),
    written to ``job.out``."""
    shards = []
    for s, planned in enumerate(manifest["shards"]):
        entry = entries.get(s) or _finished(os.path.join(job.out, planned["file"]), planned, written=False)
        shards.append({"file": planned["file"], "start": planned["start"], "stop": planned["stop"],
                       "records": entry["records"], "tokens": entry["tokens"], "max_length": entry["max_length"],
                       "bytes": entry["bytes"], "sha256": entry["sha256"]})
    lengths = [e["max_length"] for e in shards if e["max_length"] is not None]
    done = {**manifest, "complete": True, "shards": shards, "records": sum(e["records"] for e in shards),
            "tokens": sum(e["tokens"] for e in shards), "max_length": max(lengths) if lengths else None}
    tokens.write_manifest(job.out, done)
    return done


class _Progress:
    """A tqdm bar of records with tokens per second beside it (thread-safe)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="tokenize", unit="rec", disable=not enabled)
        self.lock = threading.Lock()
        self.tokens = 0
        self.start = time.perf_counter()

    def __call__(self, records: int, toks: int) -> None:
        with self.lock:
            self.tokens += toks
            self.bar.update(records)
            self.bar.set_postfix(tok_per_s=f"{self.tokens / max(1e-9, time.perf_counter() - self.start):.0f}")

    def close(self):
        self.bar.close()


def _summary(job, done, entries, seconds, runner, setup: float = 0.0) -> dict:
    written = [s for s, e in entries.items() if e.get("written")]
    skipped_examples = sum(e.get("skipped") or 0 for e in entries.values())
    return {"out": job.out, "runner": runner, "shards": len(done["shards"]), "shards_written": len(written),
            "shards_skipped": len(done["shards"]) - len(written), "records": done["records"],
            "tokens": done["tokens"], "examples_skipped": skipped_examples, "seconds": round(seconds, 3),
            "setup_seconds": round(setup, 3),
            "records_per_s": round(sum(entries[s]["records"] for s in written) / max(seconds, 1e-9), 2),
            "tokens_per_s": round(sum(entries[s]["tokens"] for s in written) / max(seconds, 1e-9), 1)}


def run_local(job: TokenizeJob, *, devices=None, progress: bool = True, source=None) -> dict:
    """Every shard of ``job`` in this process: one thread per device of ``devices`` (default: the local ones),
    each with its own tokenizer on its device, taking shards in turn. ``source`` replaces the job's dataset by
    examples built in memory (a sequence of example dicts; ``job.dataset`` and ``job.split`` then only name them
    in the manifest). Returns the summary."""
    start = time.perf_counter()
    tok = job.open_tokenizer()
    source = source if source is not None else job.source(tok)
    manifest = plan(job, tok=tok, source=source)
    devices = list(devices or jax.local_devices())
    todo = [s for s, e in enumerate(manifest["shards"]) if not os.path.exists(os.path.join(job.out, e["file"]))]
    bar = _Progress(sum(manifest["shards"][s]["stop"] - manifest["shards"][s]["start"] for s in todo), progress)
    copies = [_on_device(tok, d) for d in devices[: max(1, min(len(devices), len(todo)))]]
    locks = [threading.Lock() for _ in copies]
    setup = time.perf_counter() - start
    entries: dict[int, dict] = {}

    def on_copy(n: int, s: int) -> dict:              # shard s on copy n % len(copies), one shard at a time each
        with locks[n % len(copies)]:
            return tokenize_shard(job, s, tok=copies[n % len(copies)], source=source, manifest=manifest,
                                  progress=bar)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(copies)) as pool:
            futures = {}
            for n, s in enumerate(todo):
                futures[s] = pool.submit(on_copy, n, s)
            for s, f in futures.items():
                entries[s] = f.result()
    finally:
        bar.close()
    done = finalize(job, manifest, entries)
    return _summary(job, done, entries, time.perf_counter() - start, "local", setup)


def _on_device(tok, device):
    """A copy of ``tok`` whose weights live on ``device`` (its encode then runs there)."""
    return dataclasses.replace(tok, variables=jax.device_put(tok.variables, device))


def run_jax(job: TokenizeJob, *, progress: bool = True, source=None) -> dict:
    """This process's shards (``p, p + P, ...``) under ``jax.distributed`` (already initialised), then a barrier
    and process 0 writes the manifest. ``source`` as in :func:`run_local` (the same examples in every process).
    Returns the summary (process 0's with every shard counted)."""
    from jax.experimental import multihost_utils  # heavy import, needed only with several processes

    start = time.perf_counter()
    p, count = jax.process_index(), jax.process_count()
    tok = job.open_tokenizer()
    source = source if source is not None else job.source(tok)
    manifest = plan(job, tok=tok, source=source)
    multihost_utils.sync_global_devices("vqjax.tokenize: planned")
    mine = list(range(p, len(manifest["shards"]), count))
    bar = _Progress(sum(manifest["shards"][s]["stop"] - manifest["shards"][s]["start"] for s in mine),
                    progress and p == 0)
    copy = _on_device(tok, jax.local_devices()[0])
    try:
        entries = {s: tokenize_shard(job, s, tok=copy, source=source, manifest=manifest, progress=bar)
                   for s in mine}
    finally:
        bar.close()
    entries = _gather_entries(manifest, entries, multihost_utils)
    if p == 0:
        done = finalize(job, manifest, entries)
        summary = _summary(job, done, entries, time.perf_counter() - start, "jax")
    else:
        summary = {"out": job.out, "runner": "jax", "process": p, "shards_written": sum(e["written"] for e in
                                                                                        entries.values())}
    multihost_utils.sync_global_devices("vqjax.tokenize: manifest written")
    return summary


_COUNTS = ("records", "tokens", "max_length", "bytes_high", "bytes_low", "written")


def _gather_entries(manifest: dict, mine: dict[int, dict], multihost_utils) -> dict[int, dict]:
    """Every process's shard entries on every process (an all-gather of their counts and checksums), so that
    process 0 writes the manifest without reading the other processes' shards again."""
    # int32 columns (the all-gather runs through JAX arrays): the counts, a shard's size in two 31-bit halves,
    # then the 32 bytes of its sha256
    table = np.zeros((len(manifest["shards"]), len(_COUNTS) + 32), np.int32)
    for s, e in mine.items():
        split = {**e, "bytes_high": e["bytes"] >> 31, "bytes_low": e["bytes"] & (2 ** 31 - 1)}
        table[s, :len(_COUNTS)] = [-1 if split[k] is None else int(split[k]) for k in _COUNTS]
        table[s, len(_COUNTS):] = np.frombuffer(bytes.fromhex(e["sha256"]), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(table)).sum(axis=0)    # each row filled by one process
    out = {}
    for s, planned in enumerate(manifest["shards"]):
        row = every[s]
        values = {k: None if k == "max_length" and row[i] < 0 else int(row[i]) for i, k in enumerate(_COUNTS)}
        out[s] = {"records": values["records"], "tokens": values["tokens"], "max_length": values["max_length"],
                  "bytes": (values["bytes_high"] << 31) + values["bytes_low"], "written": bool(values["written"]),
                  "file": planned["file"], "skipped": None, "sha256": bytes(row[len(_COUNTS):].astype(np.uint8)).hex()}
    return out


def tokenize_here(job: TokenizeJob, *, source=None, progress: bool = False) -> dict:
    """``job`` from inside a running program (a training task's corpus recipe): the local runner in a single
    process, the jax runner when ``jax.distributed`` runs several (every process calls it; each writes its
    shards). Returns the summary."""
    runner = run_local if jax.process_count() == 1 else run_jax
    return runner(job, source=source, progress=progress)
