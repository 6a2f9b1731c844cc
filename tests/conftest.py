"""Test set-up: 8 fake CPU devices (for sharded-equals-unsharded tests), float32 defaults, hypothesis profile."""

import os
import tempfile

from experiments_loader import FAST_COMPILE  # the XLA flags for fast compilation, set before jax is imported

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}"
                           ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the test session, its xdist workers and the CLI runs and notebook kernels
# they start, holding every executable however quick its compilation: the tests compile the same small models and
# functions many times, in several processes.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"vqjax-test-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Bundled datasets that a test prepares without a data_dir of its own (the notebooks) go to a folder of this
# worker's: two workers never prepare the same tfds dataset into one folder at once, and the user's cache stays
# untouched.
os.environ.setdefault("VQJAX_DATA_DIR", os.path.join(
    tempfile.gettempdir(), f"vqjax-test-tfds-{os.getuid()}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"))

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ci")


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 fake CPU devices, got {len(devs)}"
    return devs


class TraceCounter:
    """Wraps a function and counts how often JAX traces it (for no-recompilation tests)."""

    def __init__(self, fn):
        self.fn, self.traces = fn, 0

    def __call__(self, *args, **kwargs):
        self.traces += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def trace_counter():
    return TraceCounter

