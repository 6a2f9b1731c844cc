"""Helpers shared by the peer benchmarks: memory readings, median timing, the GEMM floor, and one process per
configuration."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, steps: int) -> float:
    """Median wall time of ``steps`` calls of ``fn``, seconds."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def cap_memory(mem_gb: float) -> None:
    """Caps this process's address space (so a peer that builds huge matrices dies instead of swapping)."""
    if mem_gb:
        limit = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def spawn(script: str, args: list[str], timeout: int) -> dict:
    """Runs ``python script --child *args`` and returns the JSON it prints last, or ``{'error': why}``."""
    cmd = [sys.executable, script, "--child", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if out.returncode != 0:
        lines = (out.stderr or "").strip().splitlines()
        tail = [ln for ln in lines if "Error" in ln][-1:] or lines[-1:] or [f"exit {out.returncode}"]
        killed = out.returncode < 0 or "memory" in tail[0].lower() or "alloc" in tail[0].lower()
        return {"error": ("killed for memory: " if killed else "failed: ") + tail[0][:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_floor_ms(n: int, d: int, k: int, steps: int, levels: int = 1, chunk: int = 1024) -> float:
    """The machine's floor for ``levels`` nearest-code searches of ``n`` queries among ``k`` codes of dim ``d``:
    numpy's ``x @ c.T`` in code chunks of ``chunk`` with a running row minimum, as the search does (never the whole
    ``N x K`` product, which would time a 4 GiB write at K=65536). Median milliseconds."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    books = rng.normal(size=(levels, k, d)).astype(np.float32)

    def floor():
        for c in books:
            best = np.full(n, np.inf, np.float32)
            for s in range(0, k, chunk):
                np.minimum(best, (x @ c[s:s + chunk].T).min(axis=1), out=best)

    floor()
    return timed(floor, steps) * 1e3


def gemm_gflops(n: int = 1024) -> float:
    """The machine's float32 GEMM rate (numpy ``n x n`` matmul, median of 10), GFLOP/s: the scale to read a
    benchmark's times against."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
    a @ b
    return round(2 * n ** 3 / timed(lambda: a @ b, 10) / 1e9, 1)


def experiment_module(name: str):
    """The module ``experiments/NAME.py`` (its ``get_config`` and any other config functions)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(root, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(name: str, arg: str | None = None):
    """``experiments/NAME.py``'s ``get_config(arg)``, as ``--config=experiments/NAME.py[:arg]`` loads it."""
    return experiment_module(name).get_config(arg)
