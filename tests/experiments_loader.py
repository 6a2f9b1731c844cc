"""Loads ``experiments/NAME.py`` the way ``--config=experiments/NAME.py[:arg]`` does."""

import importlib.util
import os

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def experiment_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py") and not f.startswith("_"))


def load_experiment(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def subprocess_env() -> dict:
    """The environment for CLI runs the tests start: CPU, one device, the suite's fast-compile XLA flag, and the
    shared compilation cache (inherited)."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
