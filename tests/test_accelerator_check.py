"""``benchmarks/accelerator_check.sh --dry``: the accelerator check end to end on tiny settings (CPU) for the MNIST
tokenizer (the speech codec's training is the same loop over another experiment), its one table with the
throughput row and the training's held-out metrics."""

import os
import subprocess
import sys

from experiments_loader import subprocess_env

from vqjax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_check_runs_dry_and_prints_one_table(tmp_path):
    data_dir = str(tmp_path / "tfds")
    pipeline.get_source("vqjax_mnist", "train", data_dir)
    out = tmp_path / "check"
    env = {**subprocess_env(), "PYTHON": sys.executable, "VQJAX_DATA_DIR": data_dir, "EXPERIMENTS": "mnist_vq"}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), "--dry", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = out / "mnist_vq.log"
    assert done.returncode == 0, done.stderr[-3000:] + (log.read_text()[-2000:] if log.exists() else "")
    report = (out / "report.md").read_text()
    assert report == done.stdout
    assert "| mnist_vq | bfloat16 | fsdp |" in report and "MFU" in report
    row = next(line for line in report.splitlines() if line.startswith("| mnist_vq | 2 |"))
    assert "psnr" in row and "usage" in row, row
