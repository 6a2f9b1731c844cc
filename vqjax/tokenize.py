"""Tokenize a dataset into shards for language-model training, on one machine or a cluster.

    python -m vqjax.tokenize --tokenizer=runs/mnist_vq --dataset=vqjax_mnist --split=test --out=tokens/mnist_test
    python -m vqjax.tokenize --tokenizer=runs/speech --dataset='files:/data/speech/**/*.wav' --split=train \\
        --out=tokens/speech --runner=ray --ray_address=auto

Writes ``OUT/tokens-IIIII-of-NNNNN.array_record`` and ``OUT/manifest.json`` (:mod:`vqjax.data.tokens`) for an
image, audio, video or time-series tokenizer. ``--dataset`` defaults to the one the tokenizer was trained on (and
a training workdir's ``features`` and ``files`` options come along); ``--features`` and ``--files`` (JSON) set
them. A tokenizer of ids (a graph's NodePiece tokens, items' semantic IDs) reads ``--dataset=ids`` (its default):
every id it knows, each record keyed by its id. Each example is prepared as the tokenizer expects it (images in
[0, 1] at its size; audio resampled, high-passed and loudness-normalised as its spec says; a series cut to whole
code positions) and its codes go into one record with its key, its caption or label, and its length where lengths
vary.

Shards are contiguous ranges of the split's examples, each written by :func:`vqjax.lm.shards.tokenize_shard` (the
one shard function under every runner; the job, the preparers and the local and jax runners live in
:mod:`vqjax.lm.shards` and are re-exported here) to a temporary name and renamed when complete. Rerunning the command skips finished
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

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
from absl import app, flags
from tqdm.auto import tqdm

from vqjax.lm.shards import (
    ID_MODALITIES,
    IDS,
    IdSource,
    Preparer,
    TokenizeJob,
    _summary,
    finalize,
    plan,
    preparer,
    run_jax,
    run_local,
    tokenize_here,
    tokenize_shard,
)
from vqjax.tokenizers import Tokenizer, read_spec
from vqjax.train.config import default_data_dir

__all__ = [
    "IdSource",
    "Preparer",
    "TokenizeJob",
    "finalize",
    "job_from_workdir",
    "plan",
    "preparer",
    "run_jax",
    "run_local",
    "run_ray",
    "tokenize",
    "tokenize_here",
    "tokenize_shard",
]

RUNNERS = ("local", "jax", "ray")
_LOG = logging.getLogger("vqjax.tokenize")


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
    if dataset is None and read_spec(tokenizer)["modality"] in ID_MODALITIES:
        dataset = IDS
    if dataset == IDS:
        split = "all"                          # every id: there are no splits
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
    tok = job.open_tokenizer()
    source = job.source(tok)
    manifest = plan(job, tok=tok, source=source)
    todo = [s for s, e in enumerate(manifest["shards"]) if not os.path.exists(os.path.join(job.out, e["file"]))]
    fn = shard_fn or tokenize_shard

    @ray.remote(num_gpus=gpus_per_worker, max_restarts=max_retries, max_task_retries=max_retries)
    class ShardWorker:
        def __init__(self, job):
            self.tok = job.open_tokenizer()
            self.source = job.source(self.tok)

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
