"""What the recommender tasks (``'generative_retrieval'``, ``'sasrec'``) share: next-item recommendation on
MovieLens-100k's leave-one-out split, judged by one harness (:mod:`vqjax.evals.recommendation`).

Each task module (:mod:`~vqjax.train.tasks.generative_retrieval`, :mod:`~vqjax.train.tasks.sasrec`) supplies its
model, its step on a batch of item windows and its ranker as :class:`RecommenderParts`; both train on windows of the
training histories (:func:`vqjax.data.recommendation.training_windows`, every item a target once per epoch; batches
keyed by (seed, epoch), so a resumed run sees the same batches), evaluate Recall and NDCG @5/@10 on the validation
items every ``eval_every_steps``, and at the end on the test items, overall and separately for the cold items
withheld from training, with the popularity baseline on the same split; the test writes ``retrieval.json`` and
``retrieval.png``. :func:`vqjax.evals.recommendation.compare_runs` puts runs side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data.recommendation import check_recommendation_dataset, training_windows, window_batch
from vqjax.evals import recommendation as recsys_eval
from vqjax.train import reports
from vqjax.train.config import check_positive
from vqjax.train.core import data_mesh, make_optimizer
from vqjax.train.cost import FedStep
from vqjax.train.sharding import gathering_params, state_shardings
from vqjax.train.tasks import Run, get_task
from vqjax.train.tasks import semantic_ids as sid

__all__ = ["RecState", "RecommenderParts", "PARTS", "split_fields", "runlocal_common", "check_common",
           "setup", "load_ranker", "report", "optimizer_step"]



class RecState(NamedTuple):
    """Step, parameters, optimizer state and the run's key data."""
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def split_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.dataset = "ml-100k"
    c.data_root = ml_collections.FieldReference(None, field_type=str)
    c.split_seed = 0
    c.cold_fraction = 0.1
    c.batch_size = 128
    c.eval_batch_size = 128
    c.max_eval_users = ml_collections.FieldReference(None, field_type=int)
    c.num_train_steps = 6000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 1000
    return c






def runlocal_common(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.batch_size, c.eval_batch_size, c.max_eval_users = 32, 32, 64
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 40, 10, 20, 20
    c.optimizer.warmup_steps = 5
    return c






def check_common(config: ml_collections.ConfigDict) -> None:
    check_recommendation_dataset(config.dataset)
    if not 0.0 <= config.cold_fraction < 1.0:
        raise ValueError(f"config.cold_fraction must lie in [0, 1); got {config.cold_fraction}")
    check_positive(config, "batch_size", "eval_batch_size", "max_items", "model.dim", "model.num_layers",
                   "model.num_heads")
    if config.max_eval_users is not None:
        check_positive(config, "max_eval_users")
    if config.model.dim % config.model.num_heads:
        raise ValueError(f"config.model.dim ({config.model.dim}) must be divisible by config.model.num_heads "
                         f"({config.model.num_heads})")












def optimizer_step(tx: optax.GradientTransformation, state: RecState, loss_fn: Callable) -> tuple[RecState, dict]:
    """One step of ``tx`` on ``loss_fn(params)``: the new state (step advanced) and ``{'loss', 'grad_norm'}``."""
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state._replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads)}


# The parts of each recommender task, registered by its module: (config, splits, workdir, devices) -> parts.
PARTS: dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class RecommenderParts:
    """What differs between the two tasks: the model, its step on a batch of windows, and its ranker."""
    init_params: Callable
    step: Callable
    batch: Callable[[np.ndarray], np.ndarray]       # item windows -> the step's input
    ranker: Callable                                 # (params, histories [B, max_items]) -> items [B, >= 10]
    method: str
    info: dict






def setup(config, workdir, *, devices=None, stop=None) -> Run:
    """The run of a recommender task whose parts :data:`PARTS` holds under ``config.task``."""
    parts_fn = PARTS[config.task]
    splits = sid.load_split(config)
    parts = parts_fn(config, splits, workdir, devices)
    if stop is not None:
        stop.check("semantic IDs")
    replicated, batch_sharding = data_mesh({"batch_size": config.batch_size}, devices)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    windows = training_windows(splits.train, config.max_items + 1)

    def init_state(key):
        k_params, k_run = jax.random.split(key)
        params = parts.init_params(k_params)
        return RecState(jnp.int32(0), params, tx.init(params), jax.random.key_data(k_run))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    state_sharding = state_shardings(abstract, replicated.mesh, config.sharding)
    step_fn = jax.jit(gathering_params(functools.partial(parts.step, tx), replicated.mesh, config.sharding),
                      in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, replicated),
                      donate_argnums=0)
    rank_fn = parts.ranker
    seed, b = int(config.seed), int(config.batch_size)

    def make_step(start):
        counter = [start]

        def next_batch():
            rows = window_batch(windows, seed, counter[0], b)
            counter[0] += 1
            return (jax.device_put(jnp.asarray(parts.batch(rows)), batch_sharding),)
        return FedStep(step_fn, next_batch)

    def scores(split):
        def run(state, step):
            return recsys_eval.evaluate_ranker(lambda h: rank_fn(state.params, h), splits, split,
                                               max_items=config.max_items, batch_size=config.eval_batch_size,
                                               max_users=config.max_eval_users)
        return run

    split_info = {"dataset": config.dataset, "cold_fraction": float(config.cold_fraction),
                  "split_seed": int(config.split_seed), "max_eval_users": config.max_eval_users}

    def test(state, step):
        metrics = scores("test")(state, step)
        popular = recsys_eval.evaluate_ranker(recsys_eval.popularity_ranker(splits.train, splits.num_items), splits,
                                              "test", max_items=config.max_items, batch_size=config.eval_batch_size,
                                              max_users=config.max_eval_users)
        if jax.process_index() == 0:
            recsys_eval.write_result(workdir, parts.method, metrics, popular, {"split": split_info, **parts.info})
            recsys_eval.plot_comparison([("popularity", popular), (parts.method, metrics)],
                                        os.path.join(workdir, "retrieval.png"))
        return {**metrics, **{f"popularity/{k}": v for k, v in popular.items() if "@" in k}}

    num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params)))
    info = {"method": parts.method, "num_params": num_params, "training_windows": int(windows.shape[0]),
            "split": split_info, **parts.info}
    return Run(init_state=init_state, make_step=make_step, evaluate=scores("valid"), replicated=replicated,
               info=info, hint="Lower config.optimizer.learning_rate.", test=test, abstract=abstract,
               state_sharding=state_sharding)


def load_ranker(workdir: str, step: int | None = None) -> Callable[[Any], np.ndarray]:
    """The recommender a finished (or checkpointed) ``generative_retrieval`` or ``sasrec`` run trained, as
    ``histories -> int32 [U, 10]`` top-10 items, best first (histories: a list of item arrays, each non-empty, or
    a ``[U, max_items]`` matrix padded with -1 on the left).

    Raises:
      FileNotFoundError: no config or checkpoint in ``workdir``; ValueError: another task's run, or an empty history.
    """

    import orbax.checkpoint as ocp  # heavy import, loaded only where needed

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_ranker: {workdir!r} holds no config.json (not a training workdir)")
    with open(path) as fh:
        config = ml_collections.ConfigDict(json.load(fh))
    if config.task not in ("generative_retrieval", "sasrec"):
        raise ValueError(f"load_ranker: {workdir!r} is a {config.task!r} run; it needs generative_retrieval or "
                         f"sasrec")
    get_task(config.task)                      # imports the task's module, which registers its parts
    parts = PARTS[config.task](config, sid.load_split(config), workdir)
    tx = make_optimizer(config.optimizer, config.num_train_steps)

    def init_state(key):
        params = parts.init_params(key)
        return RecState(jnp.int32(0), params, tx.init(params), jax.random.key_data(key))

    abstract = jax.eval_shape(init_state, jax.random.key(0))
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"load_ranker: {workdir!r} has no checkpoint")
        state = mgr.restore(step, args=ocp.args.StandardRestore(abstract))

    def rank(histories) -> np.ndarray:
        hist = histories if isinstance(histories, np.ndarray) and histories.ndim == 2 else \
            recsys_eval.history_matrix(histories, config.max_items)
        return np.asarray(parts.ranker(state.params, np.asarray(hist, np.int32)))[:, :max(recsys_eval.KS)]

    return rank


def report(result: dict, workdir: str) -> str:
    """Recall and NDCG on the test items (all, warm, cold) against popularity, and where the figure is."""
    workdir = os.path.abspath(workdir)
    rows = [("step", result["step"])]
    for k in recsys_eval.KS:
        for m in ("recall", "ndcg"):
            key = f"{m}@{k}"
            rows.append((key, f"{result[key]:.4f} (popularity {result[f'popularity/{key}']:.4f})"))
    if "cold/recall@10" in result:
        rows.append((f"cold items: recall@10 ({result['cold_users']} users)", f"{result['cold/recall@10']:.4f}"))
    return reports.result_table("test metric", rows, ("retrieval.png", "loss_curves.png"), workdir,
                                [f"result: {os.path.join(workdir, recsys_eval.RESULT_FILE)}"], result)
