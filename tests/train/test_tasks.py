"""The task registry and the core: tasks by name, refused duplicates and unknown names, and a task defined
outside vqjax (here, in this file) trained, checkpointed and resumed by the unchanged core."""

import json
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vqjax.train import Run, Task, get_task, known_tasks, register_task, train_and_evaluate
from vqjax.train.config import core_config
from vqjax.train.core import make_optimizer


def test_builtin_tasks_are_known():
    assert {"image_tokenizer", "link_prediction"} <= set(known_tasks())
    assert get_task("image_tokenizer").name == "image_tokenizer"


def test_an_unknown_task_is_refused_with_the_known_ones(tmp_path):
    c = core_config("no_such_task")
    with pytest.raises(ValueError, match=r"config.task must be one of \[.*'image_tokenizer'.*'link_prediction'.*\]; "
                                         r"got 'no_such_task'"):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w").exists()


def test_a_duplicate_registration_is_refused():
    task = get_task("image_tokenizer")
    with pytest.raises(ValueError, match="'image_tokenizer' is already registered"):
        register_task(task)
    with pytest.raises(TypeError, match="Task"):
        register_task("image_tokenizer")


# A task in 40 lines: fit the mean of fixed random data by gradient descent.

class MeanState(NamedTuple):
    step: jax.Array
    params: Any
    opt_state: Any


def _mean_config():
    c = core_config("fit_mean")
    c.dim = 4
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 12, 3, 6, 4
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 0.1, 1
    return c


def _mean_check(config):
    if config.dim <= 0:
        raise ValueError(f"config.dim must be > 0; got {config.dim}")


def _mean_setup(config, workdir, *, devices=None, stop=None):
    data = jax.random.normal(jax.random.key(7), (64, config.dim)) + 3.0
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
                                            jax.sharding.PartitionSpec())

    def init_state(key):
        params = jnp.zeros((config.dim,))
        return MeanState(step=jnp.int32(0), params=params, opt_state=tx.init(params))

    @jax.jit
    def step(state):
        loss, grad = jax.value_and_grad(lambda p: jnp.mean((data - p) ** 2))(state.params)
        updates, opt = tx.update(grad, state.opt_state, state.params)
        return MeanState(state.step + 1, optax.apply_updates(state.params, updates), opt), {"loss": loss}

    def evaluate(state, step):
        return {"error": float(jnp.linalg.norm(state.params - data.mean(0)))}

    return Run(init_state=init_state, make_step=lambda start: step, evaluate=evaluate, replicated=replicated,
               info={"dim": config.dim})


def _mean_report(result, workdir):
    return f"error {result['error']:.3f}"


@pytest.fixture(scope="module")
def fit_mean():
    if "fit_mean" not in known_tasks():
        register_task(Task("fit_mean", _mean_config, _mean_check, lambda c: c, _mean_setup, _mean_report))
    return get_task("fit_mean")


def test_a_new_task_trains_checkpoints_and_resumes_through_the_core(fit_mean, tmp_path):
    whole = train_and_evaluate(_mean_config(), str(tmp_path / "whole"), progress=False)
    assert whole["step"] == 12 and whole["error"] < 3.0 * 2            # moved from 0 toward the mean (~6 away)
    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole", run)
    shutil.rmtree(run / "checkpoints" / "12")
    assert train_and_evaluate(_mean_config(), str(run), progress=False) == whole
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "fit_mean" and info["dim"] == 4 and info["starts"] == [0, 8]
    c = _mean_config()
    c.dim = 0
    with pytest.raises(ValueError, match="config.dim must be > 0"):
        train_and_evaluate(c, str(tmp_path / "bad"), progress=False)
    c = _mean_config()
    c.dimm = 3
    with pytest.raises(ValueError, match="did you mean config.dim"):
        train_and_evaluate(c, str(tmp_path / "bad"), progress=False)
