"""``benchmarks/accelerator_check.sh --dry``: the accelerator check end to end on tiny settings (CPU), its one
table with the throughput row and both trainings (the speech corpus replaced by the synthetic
stand-ins of ``tests/speech_data.py``, prepared before the script runs)."""

import os
import subprocess
import sys

import pytest
from experiments_loader import subprocess_env

pytest.importorskip("soundfile", reason="needs soundfile (the test extra)")
from speech_data import make_music, make_speech_roots  # noqa: E402

from vqjax.data import builders, pipeline  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_check_runs_dry_and_prints_one_table(tmp_path, monkeypatch):
    data_dir = str(tmp_path / "tfds")
    monkeypatch.setattr(builders.VqjaxSpeech, "ROOTS", make_speech_roots(tmp_path / "speech"))
    monkeypatch.setattr(builders.VqjaxSpeech, "MUSIC", make_music(tmp_path / "music.wav", seconds=4.5))
    for name in ("vqjax_mnist", "vqjax_speech"):
        pipeline.get_source(name, "train", data_dir)
    out = tmp_path / "check"
    env = {**subprocess_env(), "PYTHON": sys.executable, "VQJAX_DATA_DIR": data_dir}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), "--dry", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join((out / f"{e}.log").read_text()[-2000:] for e in ("mnist_vq", "speech_codec")
                   if (out / f"{e}.log").exists())
    assert done.returncode == 0, done.stderr[-3000:] + logs
    report = (out / "report.md").read_text()
    assert report == done.stdout
    assert "| mnist_vq | bfloat16 | fsdp |" in report
    assert "MFU" in report
    for exp in ("mnist_vq", "speech_codec"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {exp} | 2 |"))
        assert "not run" not in row and ("psnr" in row or "stoi" in row), row
