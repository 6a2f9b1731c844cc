"""Experiment configs: the fields every task shares, strict checking against a task's schema, ``runlocal``.

This module is the leaf of :mod:`vqjax.train`: it imports nothing else of the trainer. Only this package and
``experiments/`` read ConfigDicts; everything below takes explicit fields. A task's
``default_config()`` is its schema: a config may only hold the fields it declares (a typo such as
``c.num_train_step`` or ``c.gan.wieght`` is refused with the nearest valid name), except inside the sub-configs
the task declares free-form (``quantizer_kwargs``, whose fields the quantizer itself checks).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
from collections.abc import Iterable
from typing import Any

import ml_collections

from vqjax.data import files, pipeline

__all__ = [
    "PRECISIONS",
    "SHARDINGS",
    "add_example_data",
    "add_step_options",
    "check_core",
    "check_example_data",
    "check_fields",
    "check_positive",
    "check_scale_fields",
    "core_config",
    "data_options",
    "default_data_dir",
    "files_config",
    "nearest_name",
    "optimizer_config",
    "parse_arg",
    "plain",
    "read_example_splits",
    "split_quantizer_overrides",
    "switch_quantizer",
]


def default_data_dir() -> str:
    """Where bundled datasets are prepared: ``$VQJAX_DATA_DIR`` or ``~/.cache/vqjax/tfds``."""
    return os.environ.get("VQJAX_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "vqjax", "tfds"))


def optimizer_config(learning_rate: float = 1e-3) -> ml_collections.ConfigDict:
    """AdamW on a warmup-cosine schedule with global-norm clipping (:func:`vqjax.train.make_optimizer`)."""
    return ml_collections.ConfigDict(dict(learning_rate=learning_rate, warmup_steps=100, end_learning_rate_factor=0.1,
                                          b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1.0))


def core_config(task: str) -> ml_collections.ConfigDict:
    """The fields the task-agnostic trainer reads, with defaults; a task's ``default_config()`` starts here."""
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.num_train_steps = 2000
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 250
    c.max_to_keep = 3
    c.optimizer = optimizer_config()
    c.precision = "float32"           # compute dtype of the models: 'float32' | 'bfloat16' (parameters stay float32)
    c.sharding = "replicated"         # 'replicated' | 'fsdp' | 'fsdp+model' (vqjax.train.sharding)
    return c


def add_step_options(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds ``remat`` (recompute each encoder/decoder block or LM layer in the backward pass instead of storing its
    activations) and ``grad_accum_steps`` (a step's batch as that many micro-batches whose gradients and codebook
    statistics are summed before one update) to a task whose models have blocks and whose step accumulates."""
    c.remat = False
    c.grad_accum_steps = 1
    return c


def add_example_data(c: ml_collections.ConfigDict, dataset: str, batch_size: int, eval_batch_size: int
                     ) -> ml_collections.ConfigDict:
    """Adds the fields of a task that reads examples from a tfds source through grain (``dataset``, its
    ``train_split``/``eval_split``, ``data_dir``, the batch sizes, ``max_eval_examples``, ``worker_count``, the
    ``features`` renaming of a tfds dataset and the ``files`` options of a ``files:`` dataset
    (:class:`vqjax.data.files.FileOptions`))."""
    c.dataset = dataset
    c.train_split = "train"
    c.eval_split = "test"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.batch_size = batch_size
    c.eval_batch_size = eval_batch_size
    c.max_eval_examples = ml_collections.FieldReference(None, field_type=int)
    c.worker_count = 0
    c.features = ml_collections.ConfigDict()
    c.files = files_config()
    return c


def files_config() -> ml_collections.ConfigDict:
    """The fields of :class:`vqjax.data.files.FileOptions` with their defaults (``config.files``)."""
    fields = {f.name: f.default for f in dataclasses.fields(files.FileOptions)}
    types = {"modality": str, "image_size": tuple, "channels": int, "sample_rate": int, "frame_rate": float,
             "columns": tuple, "captions": str}
    return ml_collections.ConfigDict({k: ml_collections.FieldReference(v, field_type=types[k]) if k in types else v
                                      for k, v in fields.items()})


def data_options(config: ml_collections.ConfigDict) -> dict:
    """The ``features`` and ``files_options`` keyword arguments of :func:`vqjax.data.pipeline.get_source` that
    ``config`` states (empty for a config without them)."""
    return {"features": dict(config.get("features") or {}), "files_options": (config.files.to_dict()
                                                                              if "files" in config else None)}


def check_example_data(config: ml_collections.ConfigDict) -> None:
    """The fields :func:`add_example_data` adds: a known dataset name, positive batch sizes and example limit, a
    non-negative worker count."""
    pipeline.check_dataset_name(config.dataset)
    check_positive(config, "batch_size", "eval_batch_size")
    if config.max_eval_examples is not None:
        check_positive(config, "max_eval_examples")
    if config.worker_count < 0:
        raise ValueError(f"config.worker_count must be >= 0; got {config.worker_count}")
    if "files" in config:
        files.FileOptions.from_mapping(config.files.to_dict())


def read_example_splits(config: ml_collections.ConfigDict, view=None):
    """The train and eval sources of ``config.dataset`` (:func:`vqjax.data.pipeline.get_splits`, which refuses an
    empty split), each through ``view`` when given (:class:`vqjax.data.pipeline.VideoFrames`, say), refusing a train
    split smaller than one batch."""
    train, evaluation = pipeline.get_splits(config.dataset, (config.train_split, config.eval_split),
                                            config.data_dir or default_data_dir(), **data_options(config))
    if view is not None:
        train, evaluation = view(train), view(evaluation)
    if len(train) < config.batch_size:
        raise ValueError(f"config.batch_size ({config.batch_size}) is larger than the {len(train)} examples of split "
                         f"{config.train_split!r}")
    return train, evaluation


def plain(value):
    """A config value as plain JSON-able Python: dicts and lists all the way down (for artifact specs)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def parse_arg(arg: str | None) -> bool:
    """The experiment-file argument: ``None``/``''`` for the full run, ``'runlocal'`` for a tiny one."""
    if arg in (None, ""):
        return False
    if arg == "runlocal":
        return True
    raise ValueError(f"config argument must be 'runlocal' or nothing; got {arg!r}")


def nearest_name(name: str, names: Iterable[str]) -> str | None:
    """The closest of ``names`` to ``name`` (difflib), or None."""
    near = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
    return near[0] if near else None


def check_fields(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, *,
                 free: Iterable[str] = (), prefix: str = "config") -> None:
    """Refuses fields of ``config`` that ``schema`` does not have (recursively), naming the nearest valid one.

    Args:
      config: the config to check.
      schema: the task's default config.
      free: dotted paths (without ``prefix``) of sub-configs whose fields are not checked here.
    """
    free = set(free)
    for key in config.keys():
        path = f"{prefix}.{key}"
        if key not in schema:
            near = nearest_name(key, schema.keys())
            hint = f"; did you mean {prefix}.{near}?" if near else ""
            raise ValueError(f"{path} is not a field of this task's config{hint} The fields of {prefix} are "
                             f"{sorted(schema.keys())}")
        sub, ref = config[key], schema[key]
        rel = path.split(".", 1)[1]
        if isinstance(ref, ml_collections.ConfigDict) and rel not in free:
            if not isinstance(sub, (ml_collections.ConfigDict, dict)):
                raise ValueError(f"{path} must be a group of fields {sorted(ref.keys())}; got {sub!r}")
            check_fields(ml_collections.ConfigDict(sub) if isinstance(sub, dict) else sub, ref, free=free,
                         prefix=path)


def check_positive(config: ml_collections.ConfigDict, *names: str) -> None:
    """Each ``config.<name>`` (dotted) must be a positive int."""
    for name in names:
        value: Any = config
        for part in name.split("."):
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.{name} must be a positive int; got {value!r}")


PRECISIONS = ("float32", "bfloat16")
SHARDINGS = ("replicated", "fsdp", "fsdp+model")


def check_scale_fields(config: ml_collections.ConfigDict) -> None:
    """``config.precision`` and ``config.sharding`` (every task), ``config.remat`` and ``config.grad_accum_steps``
    where the task has them."""
    if config.precision not in PRECISIONS:
        raise ValueError(f"config.precision must be one of {PRECISIONS}; got {config.precision!r}")
    if config.sharding not in SHARDINGS:
        raise ValueError(f"config.sharding must be one of {SHARDINGS}; got {config.sharding!r}")
    if "remat" in config and not isinstance(config.remat, bool):
        raise ValueError(f"config.remat must be True or False; got {config.remat!r}")
    if "grad_accum_steps" in config:
        n = config.grad_accum_steps
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"config.grad_accum_steps must be a positive int; got {n!r}")
        if config.batch_size % n:
            raise ValueError(f"config.batch_size ({config.batch_size}) must be divisible by config.grad_accum_steps "
                             f"({n})")


def check_core(config: ml_collections.ConfigDict) -> None:
    """The fields the trainer core reads: step counts, checkpoint retention, the optimizer, precision and
    sharding (and ``remat``/``grad_accum_steps`` where the task has them)."""
    check_positive(config, "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                   "max_to_keep")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise ValueError(f"config.seed must be an int; got {config.seed!r}")
    o = config.optimizer
    if not o.learning_rate > 0:
        raise ValueError(f"config.optimizer.learning_rate must be > 0; got {o.learning_rate}")
    if o.warmup_steps < 0 or o.grad_clip <= 0 or o.weight_decay < 0:
        raise ValueError(f"config.optimizer: warmup_steps and weight_decay must be >= 0 and grad_clip > 0; got "
                         f"{o.warmup_steps}, {o.weight_decay}, {o.grad_clip}")
    check_scale_fields(config)


def switch_quantizer(config: ml_collections.ConfigDict, name: str, kwargs: dict | None = None
                     ) -> ml_collections.ConfigDict:
    """``config`` with the quantizer family ``name`` and its fields ``kwargs``: the previous family's fields go when
    the family changes (they belong to it), and are updated when it stays. Any task whose config has
    ``quantizer`` and ``quantizer_kwargs`` (``--config.quantizer=fsq --config.quantizer_kwargs.levels=...`` on the
    command line comes here).

    Raises:
      ValueError: a config without ``quantizer``/``quantizer_kwargs``.
    """
    if "quantizer" not in config or "quantizer_kwargs" not in config:
        raise ValueError(f"config.quantizer: this task's config has no quantizer family to switch (fields: "
                         f"{sorted(config.keys())})")
    with config.unlocked():            # a command-line config arrives locked
        if name != config.quantizer:
            config.quantizer_kwargs = ml_collections.ConfigDict(dict(kwargs or {}))
        else:
            for key, value in (kwargs or {}).items():
                config.quantizer_kwargs[key] = value
        config.quantizer = name
    return config


def _literal(text: str):
    """A command-line value as Python: a literal where it parses as one (``512``, ``(8, 5, 5)``), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_quantizer_overrides(argv: list[str]) -> tuple[list[str], str | None, dict]:
    """``argv`` without a ``--config.quantizer=NAME`` switch and, when there is one, without the
    ``--config.quantizer_kwargs.FIELD=VALUE`` overrides that go with it: ``(rest, NAME or None, {FIELD: value})``.
    Without a switch the kwargs overrides stay in ``argv`` (checked against the experiment's fields)."""
    name = next((a.split("=", 1)[1] for a in argv if a.startswith("--config.quantizer=")), None)
    if name is None:
        return list(argv), None, {}
    prefix = "--config.quantizer_kwargs."
    kwargs = {a[len(prefix):].split("=", 1)[0]: _literal(a.split("=", 1)[1]) for a in argv
              if a.startswith(prefix) and "=" in a}
    rest = [a for a in argv if not a.startswith("--config.quantizer=") and not (a.startswith(prefix) and "=" in a)]
    return rest, name, kwargs
