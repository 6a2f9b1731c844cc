"""``--distributed`` for real: two processes on this machine (loopback coordinator, gloo CPU collectives) train
the tiny MNIST config with the same global batch as one process, write one set of checkpoints, and resume."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from experiments_loader import subprocess_env

from vqjax.train import reports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["--config.num_train_steps=12", "--config.checkpoint_every_steps=6", "--config.eval_every_steps=12",
         "--config.log_every_steps=6", "--config.eval_batch_size=50"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data_dir, workdir):
    return [sys.executable, "-m", "vqjax.main", "--config=experiments/mnist_vq.py:runlocal",
            f"--config.data_dir={data_dir}", f"--workdir={workdir}", *STEPS]


def _two_processes(data_dir, workdir, logs):
    """Both processes of one run; their output goes to files (a full pipe would block one process and stall the
    other at its next collective)."""
    port = _free_port()
    procs, files = [], []
    for i in range(2):
        log = open(logs / f"process_{i}.txt", "w")
        files.append(log)
        procs.append(subprocess.Popen(
            _args(data_dir, workdir) + ["--distributed", f"--coordinator_address=127.0.0.1:{port}",
                                        "--num_processes=2", f"--process_id={i}"],
            cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=400)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in files:
            f.close()
    outs = [(logs / f"process_{i}.txt").read_text() for i in range(2)]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _final(workdir):
    return [r for r in reports.read_metrics(str(workdir)) if r["split"] == "eval"][-1]


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(data_dir, tmp_path):
    """``make e2e``: about 100 s here (each two-process launch compiles afresh: multi-process CPU executables do not
    go through the persistent compilation cache)."""
    one = tmp_path / "one"
    subprocess.run(_args(data_dir, one), cwd=ROOT, env=subprocess_env(), check=True, capture_output=True)
    two = tmp_path / "two"
    outs = _two_processes(data_dir, two, tmp_path)
    assert "| PSNR |" in outs[0] and "| PSNR |" not in outs[1]          # process 0 reports
    a, b = _final(one), _final(two)
    for key in ("psnr", "ssim", "mse"):
        np.testing.assert_allclose(b[key], a[key], rtol=2e-3)
    assert abs(b["usage"] - a["usage"]) <= 2 / 64
    assert sorted(os.listdir(two / "checkpoints")) == ["12", "6"]          # one checkpoint per step, not per process
    rows = reports.read_metrics(str(two))
    assert [r["step"] for r in rows if r["split"] == "train"] == [6, 12]   # one writer

    shutil.rmtree(two / "checkpoints" / "12")
    _two_processes(data_dir, two, tmp_path)
    assert json.loads((two / "run.json").read_text())["starts"] == [0, 6]
    assert _final(two) == b
