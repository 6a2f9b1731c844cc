"""``benchmarks/accelerator_check.sh --dry``: the accelerator check end to end on tiny settings (CPU), its one
table with the throughput rows, the remat row and both trainings."""

import os
import subprocess
import sys

from experiments_loader import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_check_runs_dry_and_prints_one_table(tmp_path):
    out = tmp_path / "check"
    env = {**subprocess_env(), "PYTHON": sys.executable}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), "--dry", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + "".join(
        (out / f"{e}.log").read_text()[-2000:] for e in ("mnist_vq", "speech_codec") if (out / f"{e}.log").exists())
    report = (out / "report.md").read_text()
    assert report == done.stdout
    assert "| mnist_vq | float32 | replicated |" in report and "| mnist_vq | bfloat16 | fsdp |" in report
    assert "MFU" in report and "with remat" in report
    for exp in ("mnist_vq", "speech_codec"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {exp} | 2 |"))
        assert "not run" not in row
    assert "psnr" in report
