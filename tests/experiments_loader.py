"""Loads ``experiments/NAME.py`` the way ``--config=experiments/NAME.py[:arg]`` does."""

import importlib.util
import os

# XLA's CPU backend compiling for speed of compilation: LLVM at optimisation level 0 and the classic loop emitters
# instead of the MLIR fusion emitters. The suite's tiny models compile two to three times as fast (test_multi.py:
# 80 s -> 45 s, test_families.py: 96 s -> 59 s, one process, empty cache), which outweighs their slower steps; the
# library's own runs keep XLA's defaults. Used by the test session, the CLI runs it starts and the notebooks.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def experiment_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py") and not f.startswith("_"))


def load_module(name: str):
    """The module ``experiments/NAME.py`` (``get_config`` and any other config functions it has)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(name: str, arg: str | None = None):
    return load_module(name).get_config(arg)


def subprocess_env() -> dict:
    """The environment for CLI runs the tests start: CPU, one device, the suite's fast-compile XLA flag, and the
    shared compilation cache (inherited)."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}
