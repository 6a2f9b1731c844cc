"""Tokenize a dataset into shards for language-model training, on one machine or a cluster.

    python -m vqjax.tokenize --tokenizer=runs/mnist_vq --dataset=vqjax_mnist --split=test --out=tokens/mnist_test
    python -m vqjax.tokenize --tokenizer=runs/speech --dataset='files:/data/speech/**/*.wav' --split=train \\
        --out=tokens/speech --runner=ray --ray_address=auto

Writes ``OUT/tokens-IIIII-of-NNNNN.array_record`` and ``OUT/manifest.json`` (:mod:`vqjax.data.tokens`) for an
image, audio, video or time-series tokenizer. ``--dataset`` defaults to the one the tokenizer was trained on (and
a training workdir's ``features`` and ``files`` options come along); ``--features`` and ``--files`` (JSON) set
them. Each example is prepared as the tokenizer expects it (images in [0, 1] at its size; audio resampled,
high-passed and loudness-normalised as its spec says; a series cut to whole code positions) and its codes go
into one record with its key, its caption or label, and its length where lengths vary.

Shards are contiguous ranges of the split's examples, each written by :func:`tokenize_shard` (the one shard
function under every runner) to a temporary name and renamed when complete. Rerunning the command skips finished
shards and redoes partial ones; an ``OUT`` written by another tokenizer or from another dataset or split is
refused. The records are encoded in fixed-size batches from each shard's start, so a shard's bytes are the same
whichever worker wrote it.

Runners:

* ``local`` (default): one process; one thread per local device, each with its own copy of the tokenizer on its
  device, taking shards in turn; grain's reader threads decode and prepare the examples ahead of the encoder.
* ``jax``: multi-process SPMD through ``jax.distributed`` (``--distributed`` and the same flags as
  ``python -m vqjax.main``): process ``p`` of ``P`` takes shards ``p, p + P, ...``; process 0 writes the
  manifest after a barrier. For TPU pods and SLURM clusters.
* ``ray``: a Ray cluster (``pip install 'vqjax[ray]'``; ``--ray_address=auto`` joins a running cluster, e.g. in a
  job submitted with ``ray job submit -- python -m vqjax.tokenize ...``): a pool of ``--ray_workers`` actors,
  each holding one tokenizer (on a GPU with ``--ray_gpus_per_worker``), shards retried when an actor dies.

A progress bar counts records and tokens per second; the summary at the end gives both rates and the shards
written and skipped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
from absl import app, flags
from tqdm.auto import tqdm

import vqjax
from vqjax.data import audio as audio_data
from vqjax.data import pipeline, tokens
from vqjax.tokenizers import Tokenizer, fingerprint
from vqjax.train.config import default_data_dir

__all__ = [
    "Preparer",
    "TokenizeJob",
    "finalize",
    "plan",
    "preparer",
    "run_jax",
    "run_local",
    "run_ray",
    "tokenize",
    "tokenize_shard",
]

RUNNERS = ("local", "jax", "ray")
_LOG = logging.getLogger("vqjax.tokenize")


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

    def source(self):
        return pipeline.get_source(self.dataset, self.split, self.data_dir, features=self.features,
                                   files_options=self.files_options)

    def open_tokenizer(self):
        return Tokenizer.load(self.tokenizer)


def job_from_workdir(tokenizer: str, out: str, *, dataset: str | None = None, split: str = "test",
                     data_dir: str | None = None, features: dict | None = None, files_options: dict | None = None,
                     **kwargs) -> TokenizeJob:
    """A job whose unset dataset, data_dir, features and files options come from the tokenizer's training config
    (``config.json`` of a workdir; the spec's ``dataset`` of an export)."""
    config = {}
    path = os.path.join(tokenizer, "config.json")
    if os.path.exists(path):
        with open(path) as fh:
            config = json.load(fh)
    if dataset is None:
        dataset = config.get("dataset") or Tokenizer.load(tokenizer).spec.get("dataset")
        if not dataset:
            raise ValueError(f"--dataset is needed: {tokenizer!r} does not say which dataset it was trained on")
    trained = config if dataset == config.get("dataset") else {}     # its options belong to its own dataset
    if features is None:
        features = trained.get("features") or {}
    if files_options is None:
        files_options = trained.get("files")
    return TokenizeJob(tokenizer=os.path.abspath(tokenizer), dataset=dataset, split=split, out=os.path.abspath(out),
                       data_dir=data_dir or config.get("data_dir") or default_data_dir(), features=dict(features),
                       files_options=files_options, **kwargs)


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


PREPARERS = {"image": _image, "video": _video, "audio": _audio, "timeseries": _timeseries}


def preparer(tok) -> Preparer:
    """The :class:`Preparer` of ``tok``'s modality; ``ValueError`` for a modality without examples to read."""
    if tok.modality not in PREPARERS:
        raise ValueError(f"vqjax.tokenize reads datasets of {sorted(PREPARERS)} examples; a {tok.modality!r} "
                         f"tokenizer encodes ids (use tok.encode on them directly)")
    return PREPARERS[tok.modality](tok)


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
    source = source if source is not None else job.source()
    preparer(tok)
    count = len(source)
    if count == 0:
        raise ValueError(f"split {job.split!r} of dataset {job.dataset!r} is empty: nothing to tokenize")
    num = job.num_shards or max(1, math.ceil(count / job.examples_per_shard))
    num = min(num, count)
    bounds = [round(s * count / num) for s in range(num + 1)]
    manifest = {
        "format": tokens.TOKENS_FORMAT, "complete": False, "vqjax_version": vqjax.__version__,
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
    source = source if source is not None else job.source()
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


def run_local(job: TokenizeJob, *, devices=None, progress: bool = True) -> dict:
    """Every shard of ``job`` in this process: one thread per device of ``devices`` (default: the local ones),
    each with its own tokenizer on its device, taking shards in turn. Returns the summary."""
    start = time.perf_counter()
    tok, source = job.open_tokenizer(), job.source()
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


def run_jax(job: TokenizeJob, *, progress: bool = True) -> dict:
    """This process's shards (``p, p + P, ...``) under ``jax.distributed`` (already initialised), then a barrier
    and process 0 writes the manifest. Returns the summary (process 0's with every shard counted)."""
    from jax.experimental import multihost_utils  # heavy import, needed only with several processes

    start = time.perf_counter()
    p, count = jax.process_index(), jax.process_count()
    tok, source = job.open_tokenizer(), job.source()
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


def run_ray(job: TokenizeJob, *, address: str | None = None, num_workers: int = 2, gpus_per_worker: float = 0.0,
            max_retries: int = 3, shard_fn: Callable[..., dict] | None = None, progress: bool = True) -> dict:
    """Every shard of ``job`` on a pool of ``num_workers`` Ray actors, each holding one tokenizer; a shard whose
    actor dies is retried (on the restarted actor) up to ``max_retries`` times.

    Args:
      address: a running cluster (``'auto'``, ``'ray://host:10001'``); None starts a local Ray instance (or
        joins the one ``ray.init`` already made in this process).
      num_workers: actors in the pool.
      gpus_per_worker: GPUs reserved per actor (0 on CPU).
      max_retries: retries of a shard after its actor died.
      shard_fn: run in the actor as ``shard_fn(job, index, tok=..., source=..., manifest=...)`` with the actor's
        tokenizer and source (default: :func:`tokenize_shard`); tests pass one that kills its worker once.
    """
    try:
        import ray  # optional dependency (the ray extra)
    except ImportError as err:
        raise ImportError("--runner=ray needs Ray: pip install 'vqjax[ray]'") from err
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tok, source = job.open_tokenizer(), job.source()
    manifest = plan(job, tok=tok, source=source)
    todo = [s for s, e in enumerate(manifest["shards"]) if not os.path.exists(os.path.join(job.out, e["file"]))]
    fn = shard_fn or tokenize_shard

    @ray.remote(num_gpus=gpus_per_worker, max_restarts=max_retries, max_task_retries=max_retries)
    class ShardWorker:
        def __init__(self, job):
            self.tok, self.source = job.open_tokenizer(), job.source()

        def run(self, index, manifest):
            return fn(job, index, tok=self.tok, source=self.source, manifest=manifest)

    workers = [ShardWorker.remote(job) for _ in range(max(1, min(num_workers, len(todo))))]
    pending = {workers[n % len(workers)].run.remote(s, manifest): s for n, s in enumerate(todo)}
    bar = tqdm(total=len(todo), desc="tokenize (ray shards)", unit="shard", disable=not progress)
    entries: dict[int, dict] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                entries[pending.pop(ref)] = ray.get(ref)
                bar.update(1)
    finally:
        bar.close()
        for w in workers:
            ray.kill(w)
    done = finalize(job, manifest, entries)
    return _summary(job, done, entries, time.perf_counter() - start, "ray")


def tokenize(job: TokenizeJob, runner: str = "local", **kwargs) -> dict:
    """Runs ``job`` with ``runner`` ('local', 'jax' or 'ray'; ``kwargs`` go to it). Returns the summary."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}; got {runner!r}")
    return {"local": run_local, "jax": run_jax, "ray": run_ray}[runner](job, **kwargs)


# -- the command line ------------------------------------------------------------------------------------------
FLAGS = flags.FLAGS
flags.DEFINE_string("tokenizer", None, "a tokenizer folder (training workdir or export)")
flags.DEFINE_string("dataset", None, "dataset name (default: the one the tokenizer was trained on)")
flags.DEFINE_string("split", "test", "split expression")
flags.DEFINE_string("out", None, "output folder of shards and manifest.json")
flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the training config's, else VQJAX_DATA_DIR)")
flags.DEFINE_string("features", None, "JSON: the dataset's feature renaming, e.g. '{\"audio\": \"speech\"}'")
flags.DEFINE_string("files", None, "JSON: a files dataset's options (vqjax.data.files.FileOptions)")
flags.DEFINE_integer("num_shards", None, "number of shards (default: one per --examples_per_shard)")
flags.DEFINE_integer("examples_per_shard", 4096, "examples per shard when --num_shards is not given")
flags.DEFINE_integer("batch_size", 64, "examples per encode call")
flags.DEFINE_integer("read_threads", 4, "grain threads decoding examples ahead of the encoder")
flags.DEFINE_enum("runner", "local", RUNNERS, "local | jax (jax.distributed) | ray")
flags.DEFINE_string("ray_address", None, "--runner=ray: the cluster ('auto' joins a running one; default local)")
flags.DEFINE_integer("ray_workers", 2, "--runner=ray: actors")
flags.DEFINE_float("ray_gpus_per_worker", 0.0, "--runner=ray: GPUs per actor")
flags.DEFINE_bool("distributed", False, "--runner=jax: call jax.distributed.initialize()")
flags.DEFINE_string("coordinator_address", None, "with --distributed: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "with --distributed: number of processes")
flags.DEFINE_integer("process_id", None, "with --distributed: this process's index")
flags.DEFINE_string("cpu_collectives", "gloo", "with --distributed: collectives between CPU processes")
flags.DEFINE_bool("progress", True, "show the progress bar")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("tokenizer", "out"):
        if not FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")
    if FLAGS.runner == "jax" and FLAGS.distributed:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    job = job_from_workdir(FLAGS.tokenizer, FLAGS.out, dataset=FLAGS.dataset, split=FLAGS.split,
                           data_dir=FLAGS.data_dir,
                           features=json.loads(FLAGS.features) if FLAGS.features else None,
                           files_options=json.loads(FLAGS.files) if FLAGS.files else None,
                           num_shards=FLAGS.num_shards, examples_per_shard=FLAGS.examples_per_shard,
                           batch_size=FLAGS.batch_size, read_threads=FLAGS.read_threads)
    kwargs: dict[str, Any] = {"progress": FLAGS.progress}
    if FLAGS.runner == "ray":
        kwargs.update(address=FLAGS.ray_address, num_workers=FLAGS.ray_workers,
                      gpus_per_worker=FLAGS.ray_gpus_per_worker)
    try:
        summary = tokenize(job, FLAGS.runner, **kwargs)
    except ValueError as err:
        raise SystemExit(f"FATAL: {err}") from None
    if jax.process_index() == 0:
        print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
