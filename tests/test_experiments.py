"""Every file in experiments/ imports, validates, and describes a model that builds (abstractly, no compute)."""

import jax
import jax.numpy as jnp
import pytest
from experiments_loader import experiment_names, load_experiment

from vqjax.train.config import build_model, check_config, check_image_shape


def test_experiments_exist():
    assert {"mnist_vq", "mnist_fsq", "mnist_lfq", "mnist_vq_collapse", "photos_vqgan"} <= set(experiment_names())


@pytest.mark.parametrize("name", experiment_names())
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_experiment_is_valid(name, arg):
    c = load_experiment(name, arg)
    check_config(c)
    shape = (28, 28, 1) if c.dataset == "vqjax_mnist" else (32, 32, 3)
    check_image_shape(c, shape)
    model = build_model(c, shape[-1])
    x = jnp.zeros((2,) + shape)
    variables = jax.eval_shape(lambda k: model.init({"params": k, "vq": k}, x), jax.random.key(0))
    recon, q = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert recon.shape == x.shape
    tokens = (7, 7) if c.dataset == "vqjax_mnist" else (8, 8)
    assert q.codes.shape[1:3] == tokens
    if arg == "runlocal":
        assert c.num_train_steps <= 50


def test_experiment_refuses_unknown_argument():
    with pytest.raises(ValueError, match="runlocal"):
        load_experiment("mnist_vq", "huge")
