"""The task-agnostic trainer: ``train_and_evaluate(config, workdir)`` for every registered task.

The core knows nothing of images or graphs. It checks the config against the task's schema, prepares the
workdir and the ``'data'`` device mesh, asks the task for a :class:`~vqjax.train.tasks.Run` (state init, train
step, evaluation, what the run exports), and then owns everything every task needs in the same way:

* orbax checkpoints (async, ``max_to_keep``, every ``checkpoint_every_steps`` steps and on SIGTERM) and resume
  from the latest one; a damaged latest checkpoint is reported, moved to ``checkpoints_damaged/``, and the run
  resumes from the previous kept one;
* ``run.json``: the task's run information plus ``starts``, the step each invocation started from (0 for a fresh
  run, the restored step for a resume), also logged;
* the step loop (:func:`run_steps`): tqdm progress with steps/s, metrics in ``metrics.jsonl`` and TensorBoard,
  periodic evaluation, at most two steps in flight, and a ``FloatingPointError`` on a non-finite loss before
  anything after it is saved, so the last checkpoint stays intact;
* SIGTERM: caught from the moment the run starts; in the step loop the state is saved and the run stops; before
  the loop (data preparation, feature-network pre-training) nothing is saved and the run returns cleanly.

Every random draw and the data order are functions of (seed, step), so a resumed run ends with exactly the
metrics of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from vqjax.tokenizers import write_spec
from vqjax.train import reports
from vqjax.train.tasks import get_task

__all__ = [
    "Interrupted",
    "StopRequest",
    "data_mesh",
    "load_run_info",
    "make_optimizer",
    "open_checkpoints",
    "prepare_workdir",
    "run_steps",
    "to_host",
    "train_and_evaluate",
    "write_run_files",
]

log = logging.getLogger("vqjax.train")


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """AdamW on a linear-warmup cosine schedule, after clipping the global gradient norm (``config.optimizer``)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(num_steps - 1, 1)), max(num_steps, 2),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def prepare_workdir(workdir: str) -> str:
    """Creates ``workdir`` and checks that it is writable (a clear ``ValueError`` otherwise)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")      # one per process (multi-process runs)
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"workdir {workdir!r} is not writable: {err}") from err
    return workdir


def load_run_info(workdir: str) -> dict:
    """``workdir/run.json``: the task's run information and ``starts`` (the step each invocation started at)."""
    with open(os.path.join(workdir, "run.json")) as fh:
        return json.load(fh)


def data_mesh(batch_sizes: dict[str, int], devices=None) -> tuple[NamedSharding, NamedSharding]:
    """The ``'data'`` mesh over ``devices`` (default: all) as ``(replicated, batch-sharded)`` shardings.

    Args:
      batch_sizes: ``{config field name: global batch size}``; each must split evenly over the devices.
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    bad = {name: size for name, size in batch_sizes.items() if size % devices.size}
    if bad:
        raise ValueError(f"{', '.join(f'config.{k} ({v})' for k, v in bad.items())} must be divisible by the "
                         f"{devices.size} devices of the data mesh")
    mesh = Mesh(devices, ("data",))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def to_host(x) -> np.ndarray:
    """A global array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def write_run_files(workdir: str, config: ml_collections.ConfigDict, info: dict, start: int) -> dict:
    """``workdir/config.json`` (the resolved config) and ``workdir/run.json`` (``info`` plus ``starts``: every
    invocation's first step, this one's ``start`` appended, and ``resumed_from``: the checkpoint step this
    invocation restored, None for a fresh start). Only process 0 writes. Returns what ``run.json`` holds."""
    starts = []
    path = os.path.join(workdir, "run.json")
    if os.path.exists(path):
        try:
            starts = list(load_run_info(workdir).get("starts", []))
        except (OSError, ValueError):
            starts = []
    info = {**info, "starts": starts + [int(start)], "resumed_from": int(start) if start else None}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=2))
        with open(path + ".tmp", "w") as fh:
            json.dump(info, fh, indent=2)
        os.replace(path + ".tmp", path)
    return info


def save_args(state, data_iterator=None):
    """What a checkpoint holds: the state, and the data iterator's position when the run has one (two orbax
    items, ``state`` and ``data``)."""
    import orbax.checkpoint as ocp  # heavy import, loaded only where needed

    if data_iterator is None:
        return ocp.args.StandardSave(state)
    return ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))


def _restore_args(target, data_iterator=None):
    import orbax.checkpoint as ocp  # heavy import, loaded only where needed

    if data_iterator is None:
        return ocp.args.StandardRestore(target)
    return ocp.args.Composite(state=ocp.args.StandardRestore(target),
                              data=grain.checkpoint.CheckpointRestore(data_iterator))


def open_checkpoints(workdir: str, max_to_keep: int, init_state: Callable, abstract, state_sharding, seed: int,
                     data_iterator=None):
    """An orbax ``CheckpointManager`` on ``workdir/checkpoints`` (async, ``max_to_keep``) and ``(manager, state)``.

    The state is the latest checkpoint restored with ``state_sharding``, or ``init_state(key(seed))`` for a new
    run; ``data_iterator`` (a grain iterator), when given, is set to the position saved with that checkpoint. A checkpoint that fails to restore (half-written, damaged) is logged with its error, moved to
    ``workdir/checkpoints_damaged/STEP``, and the previous kept checkpoint is tried; a ``RuntimeError`` says so
    when none restores.
    """
    import orbax.checkpoint as ocp  # heavy import, loaded only where needed

    directory = os.path.join(workdir, "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True)
    mgr = ocp.CheckpointManager(directory, options=options)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
    damaged, state = [], None
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            restored = mgr.restore(step, args=_restore_args(target, data_iterator))
            state = restored if data_iterator is None else restored.state
            break
        except Exception as err:  # noqa: BLE001 - any failure to read a checkpoint means it is unusable
            damaged.append(step)
            log.warning("checkpoint %d in %s does not restore (%s: %s); trying the previous one", step, directory,
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    if damaged:
        # Out of the way, so that the resumed run can save those steps again.
        mgr.close()
        if jax.process_index() == 0:
            aside = os.path.join(workdir, "checkpoints_damaged")
            os.makedirs(aside, exist_ok=True)
            for step in damaged:
                dest = os.path.join(aside, f"{step}.{int(time.time())}")
                shutil.move(os.path.join(directory, str(step)), dest)
                print(f"vqjax: checkpoint {step} is damaged and was moved to {dest}; resuming from "
                      f"{'the start' if state is None else f'step {int(state.step)}'}", flush=True)
        if jax.process_count() > 1:

            multihost_utils.sync_global_devices("vqjax_damaged_checkpoints_moved")
        mgr = ocp.CheckpointManager(directory, options=options)
    if state is None:
        state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(seed))
    return mgr, state


class Interrupted(Exception):
    """Raised inside a run when SIGTERM arrived before the step loop (nothing is saved)."""


class StopRequest:
    """SIGTERM handler: asks the run to stop at the next safe point (the loop saves, earlier phases just exit)."""
    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:      # not the main thread: no handler
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def check(self, phase: str) -> None:
        """Raises :class:`Interrupted` if SIGTERM arrived (call between the phases before the loop)."""
        if self.requested:
            raise Interrupted(f"SIGTERM during {phase}: stopped before training, nothing saved")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def run_steps(advance: Callable[[], dict], current: Callable[[], Any], mgr, *, start: int, total: int,
              log_every: int, eval_every: int, checkpoint_every: int, writer, progress: bool,
              evaluate: Callable[[int], Any], hint: str, stop: StopRequest, data_iterator=None) -> int:
    """The step loop: steps ``start + 1 .. total``; returns the last step done.

    ``advance()`` runs one train step (updating the caller's state) and returns its metrics (with ``'loss'``);
    ``current()`` is the state to checkpoint (with a ``step`` field). Logs train metrics with steps/s every
    ``log_every`` steps (``writer`` and a tqdm bar), saves every ``checkpoint_every`` steps and when ``stop`` is
    requested (then stops), calls ``evaluate(step)`` every ``eval_every`` steps and at ``total``, keeps at most
    two steps in flight (XLA's CPU collectives stall behind deep queues), and raises ``FloatingPointError``
    (mentioning ``hint``) before saving anything after a non-finite loss. Finishes pending saves and closes
    ``mgr``. ``data_iterator``'s position is saved with each checkpoint (:func:`save_args`).
    """
    pending: list[tuple[int, jax.Array]] = []

    def check_finite():
        for step, ok in pending:
            if not bool(ok):
                raise FloatingPointError(
                    f"the loss became non-finite at step {step}; stopped without saving, so the last checkpoint "
                    f"(step {mgr.latest_step()}) is intact. {hint}")
        pending.clear()

    def save(step, force=False):
        check_finite()
        mgr.save(step, args=save_args(current(), data_iterator), force=force)

    bar = None
    if progress and jax.process_index() == 0:
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t_last, s_last = time.perf_counter(), start
    try:
        for step in range(start + 1, total + 1):
            metrics = advance()
            if pending:
                pending[-1][1].block_until_ready()
            pending.append((step, jnp.isfinite(metrics["loss"])))
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == total:
                check_finite()
                now = time.perf_counter()
                scalars = {k: float(v) for k, v in metrics.items()}
                scalars["steps_per_s"] = (step - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, step
                if writer is not None:
                    writer.write(step, "train", scalars)
                if bar is not None:
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", steps_s=f"{scalars['steps_per_s']:.1f}")
            if step % checkpoint_every == 0:
                save(step)
            if step % eval_every == 0 or step == total:
                evaluate(step)
            if stop.requested:
                save(step, force=True)
                break
    finally:
        if bar is not None:
            bar.close()
    end = int(current().step)
    if end == total and mgr.latest_step() != end:
        save(end, force=True)
    mgr.wait_until_finished()
    mgr.close()
    return end


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, devices=None, progress: bool = True
                       ) -> dict:
    """Trains what ``config`` describes in ``workdir`` (resuming from its latest checkpoint) and returns the final
    evaluation metrics with ``step``.

    The task is ``config.task`` (default ``'image_tokenizer'``; see :func:`vqjax.train.tasks.get_task`). Writes
    ``config.json``, ``run.json``, ``checkpoints/`` (orbax), ``metrics.jsonl``, ``tensorboard/`` and the task's
    figures and artifact (a tokenizer's ``spec.json``) into ``workdir``.

    Args:
      config: an experiment config (the task's ``default_config()`` fields).
      workdir: the run directory.
      devices: devices of the data mesh (default: all of ``jax.devices()``).
      progress: show a tqdm bar.

    Returns:
      The task's final metrics with ``step``; ``{'step': s, 'interrupted': True}`` when SIGTERM arrived before the
      step loop (nothing saved).

    Raises:
      ValueError: a bad config (unknown task or field), dataset, split or workdir, before anything is compiled.
      FloatingPointError: the loss became NaN or Inf (the last checkpoint is kept as it was).
    """

    task = get_task(config.get("task", "image_tokenizer"))
    task.check_config(config)
    workdir = prepare_workdir(workdir)
    with StopRequest() as stop:
        if progress and jax.process_index() == 0:
            print(f"vqjax: setting up task {task.name!r} in {workdir}", file=sys.stderr, flush=True)
        try:
            run = task.setup(config, workdir, devices=devices, stop=stop)
            abstract = run.abstract
            if abstract is None:
                abstract = jax.eval_shape(run.init_state, jax.random.key(config.seed))
            state_sharding = run.state_sharding
            if state_sharding is None:
                state_sharding = jax.tree.map(lambda _: run.replicated, abstract)
            mgr, state = open_checkpoints(workdir, config.max_to_keep, run.init_state, abstract, state_sharding,
                                          config.seed, run.data_iterator)
            start = int(state.step)
            write_run_files(workdir, config, {"task": task.name, **run.info}, start)
            if run.spec is not None and jax.process_index() == 0:

                write_spec(workdir, run.spec)
            if start:
                log.warning("resuming %s from step %d", workdir, start)
            stop.check("set-up")
        except Interrupted as err:
            print(f"vqjax: {err}", flush=True)
            return {"step": 0, "interrupted": True}

        writer = reports.MetricWriter(workdir, resume_step=start) if jax.process_index() == 0 else None
        step_fn = run.make_step(start)
        results = []

        def advance():
            nonlocal state
            state, metrics = step_fn(state)
            return metrics

        def periodic_eval(step):
            results.append(_evaluate(run.evaluate, state, step, "eval", writer, workdir))

        try:
            end = run_steps(advance, lambda: state, mgr, start=start, total=config.num_train_steps,
                            log_every=config.log_every_steps, eval_every=config.eval_every_steps,
                            checkpoint_every=config.checkpoint_every_steps, writer=writer, progress=progress,
                            evaluate=periodic_eval, hint=run.hint, stop=stop, data_iterator=run.data_iterator)
            result = results[-1] if results and end == config.num_train_steps else None
            if end < config.num_train_steps:            # stopped by SIGTERM: saved, no final evaluation
                return {"step": end, "interrupted": True}
            if result is None:
                result = _evaluate(run.evaluate, state, end, "eval", writer, workdir)
            if run.test is not None:            # the final eval's metrics, then the test's (its keys win)
                result = {**result, **_evaluate(run.test, state, end, "test", writer, workdir)}
        finally:
            if writer is not None:
                writer.close()
    return {"step": end, **result}


def _evaluate(fn, state, step: int, split: str, writer, workdir: str) -> dict:
    result = fn(state, step)
    if writer is not None:
        writer.write(step, split, result)
        reports.save_curves(workdir)
    return result
