"""Tasks as plugins of the trainer core: a registry by name, chosen by ``config.task``.

A task is one module that builds a :class:`Task` and registers it; the core
(:func:`vqjax.train.train_and_evaluate`) does the rest. What a task supplies:

* ``default_config()``: its config schema with defaults (starting from :func:`vqjax.train.config.core_config`);
* ``check(config)``: its value checks (the core has already refused unknown fields against the schema);
* ``runlocal(config)``: how a config shrinks for a smoke run;
* ``setup(config, workdir, devices=, stop=)``: reads the data and returns a :class:`Run` (state init, train step,
  evaluation, run information, the tokenizer artifact's spec), before anything is compiled;
* ``report(result, workdir)``: the final result as a table for the CLI.

Adding a task::

    # vqjax/train/tasks/my_task.py
    from vqjax.train.tasks import Run, Task, register_task

    def default_config(): ...
    def setup(config, workdir, *, devices=None, stop=None) -> Run: ...
    TASK = register_task(Task("my_task", default_config, check, runlocal, setup, report))

and listing the module in ``_BUILTIN`` below (or importing it before training). The core never changes.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import ml_collections

from vqjax.train.config import check_core, check_fields

__all__ = ["Task", "Run", "register_task", "get_task", "known_tasks", "check_config", "runlocal", "TASKS"]

TASKS: dict[str, "Task"] = {}

# Built-in task modules, imported on first lookup (each registers itself).
_BUILTIN = {"image_tokenizer": "vqjax.train.tasks.image_tokenizer",
            "link_prediction": "vqjax.train.tasks.link_prediction",
            "lm": "vqjax.train.tasks.lm",
            "audio_codec": "vqjax.train.tasks.audio_codec",
            "video_tokenizer": "vqjax.train.tasks.video_tokenizer",
            "sequence_tokenizer": "vqjax.train.tasks.sequence_tokenizer",
            "semantic_ids": "vqjax.train.tasks.semantic_ids",
            "generative_retrieval": "vqjax.train.tasks.generative_retrieval",
            "sasrec": "vqjax.train.tasks.sasrec"}


@dataclasses.dataclass(frozen=True)
class Run:
    """What a task's ``setup`` hands the core for one run.

    Attributes:
      init_state: ``key -> state`` (pure, jittable); the state is a named pytree with an int32 ``step`` field.
      make_step: ``start -> (state -> (state, metrics))``: the train step fed with its data from step ``start``
        on; metrics hold ``'loss'``. The built-in tasks return a :class:`vqjax.train.cost.FedStep`, whose
        ``lower(state)`` gives the compiled step's FLOPs and memory (``benchmarks/bench_train.py``).
      evaluate: ``(state, step) -> dict`` of float metrics (periodic evaluation; also writes the task's figures).
      replicated: the mesh's replicated sharding (the state lives replicated).
      info: what ``run.json`` records about the run (JSON-serialisable).
      hint: advice printed with a non-finite loss.
      test: ``(state, step) -> dict`` for a final held-out evaluation after training, or None; the run's result is
        the final evaluation's metrics updated with the test's.
      spec: the tokenizer artifact's spec (:func:`vqjax.tokenizers.write_spec`) when the run trains a tokenizer.
      abstract: ``jax.eval_shape(init_state, key)`` when the task has already traced it (else the core does).
      state_sharding: the state's shardings (a pytree like ``abstract``) when it is not all ``replicated``
        (``config.sharding`` 'fsdp' or 'fsdp+model', model-parallel parameters); checkpoints restore into it.
      data_iterator: a grain ``DatasetIterator`` that ``make_step`` reads (a stream whose position cannot be
        recomputed from the step); the core saves its state with each checkpoint (``grain.checkpoint``) and
        restores it with the state, so a resumed run reads exactly the batches it would have read.
    """

    init_state: Callable[[Any], Any]
    make_step: Callable[[int], Callable[[Any], tuple[Any, dict]]]
    evaluate: Callable[[Any, int], dict]
    replicated: Any
    info: dict
    hint: str = "Lower config.optimizer.learning_rate or check the data."
    test: Callable[[Any, int], dict] | None = None
    spec: dict | None = None
    abstract: Any = None
    state_sharding: Any = None
    data_iterator: Any = None


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered training task (see the module docstring).

    Attributes:
      name: the ``config.task`` value.
      default_config: ``() -> ConfigDict``, the schema.
      check: ``config -> None``, raising ``ValueError`` naming the bad field.
      runlocal: ``config -> config``, shrunk for a smoke run.
      setup: ``(config, workdir, *, devices, stop) -> Run``.
      report: ``(result, workdir) -> str``.
      free_fields: sub-configs of the schema whose fields are free-form (checked by ``check``); ``features``
        (a dataset's feature renaming) always is.
    """

    name: str
    default_config: Callable[[], ml_collections.ConfigDict]
    check: Callable[[ml_collections.ConfigDict], None]
    runlocal: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]
    setup: Callable[..., Run]
    report: Callable[[dict, str], str]
    free_fields: tuple[str, ...] = ()

    def check_config(self, config: ml_collections.ConfigDict) -> None:
        """Unknown fields (with the nearest valid name), the core's fields, then the task's own checks."""
        check_fields(config, self.default_config(), free=self.free_fields + ("features",))
        check_core(config)
        self.check(config)


def register_task(task: Task) -> Task:
    """Adds ``task`` under ``task.name``; a name can be registered once (``ValueError`` otherwise)."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task: task must be a vqjax.train.tasks.Task; got {type(task).__name__}")
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def known_tasks() -> list[str]:
    """Every task name: the built-ins and whatever has been registered."""
    return sorted(set(TASKS) | set(_BUILTIN))


def get_task(name: str) -> Task:
    """The task registered as ``name`` (built-in modules are imported on demand).

    Raises:
      ValueError: an unknown name, listing the known ones.
    """
    if name not in TASKS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in TASKS:
        raise ValueError(f"config.task must be one of {known_tasks()}; got {name!r}")
    return TASKS[name]


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad config of any task (unknown task or field, bad values) before anything is read or compiled."""
    get_task(config.get("task", "image_tokenizer")).check_config(config)


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config for a laptop smoke run (big_vision's ``runlocal``), as its task defines it."""
    return get_task(config.get("task", "image_tokenizer")).runlocal(config)
