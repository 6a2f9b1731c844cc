"""The CLI as a user runs it: kill -9 and SIGTERM mid-run, then rerun to the same metrics; SIGTERM before the step
loop; a bad override refused readably. Each test runs `python -m vqjax.main` in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from experiments_loader import subprocess_env

from vqjax.train import reports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _final_eval(workdir):
    return [r for r in reports.read_metrics(workdir) if r["split"] == "eval"][-1]


CLI_STEPS = 60


def _cli_args(data_dir, workdir, *extra):
    return [sys.executable, "-m", "vqjax.main", "--config=experiments/mnist_vq.py:runlocal",
            f"--config.data_dir={data_dir}", f"--config.num_train_steps={CLI_STEPS}",
            "--config.checkpoint_every_steps=10", f"--config.eval_every_steps={CLI_STEPS}",
            "--config.log_every_steps=10", f"--workdir={workdir}", *extra]


CLI_ENV = subprocess_env()


@pytest.fixture(scope="module")
def cli_whole(tmp_path_factory, data_dir):
    """An uninterrupted 60-step CLI run (shared by the kill -9 and SIGTERM tests): its final eval row."""
    whole = tmp_path_factory.mktemp("cli_whole")
    subprocess.run(_cli_args(data_dir, whole), cwd=ROOT, env=CLI_ENV, check=True, capture_output=True)
    return _final_eval(str(whole))


def _start_and_wait(args, ready):
    proc = subprocess.Popen(args, cwd=ROOT, env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    return proc


def test_kill_9_then_rerun_gives_the_same_final_metrics(tiny_config, tmp_path, cli_whole):
    killed = tmp_path / "killed"
    ckpts = killed / "checkpoints"
    proc = _start_and_wait(_cli_args(tiny_config.data_dir, killed),
                           lambda: ckpts.exists() and any(p.isdigit() and int(p) >= 10 for p in os.listdir(ckpts)))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(_cli_args(tiny_config.data_dir, killed), cwd=ROOT, env=CLI_ENV, check=True, capture_output=True)
    assert _final_eval(str(killed)) == cli_whole
    starts = json.loads((killed / "run.json").read_text())["starts"]
    assert starts[0] == 0 and len(starts) == 2 and 10 <= starts[1] < CLI_STEPS and starts[1] % 10 == 0, starts
    train_steps = [r["step"] for r in reports.read_metrics(str(killed)) if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps))                  # no step logged twice


def test_sigterm_saves_stops_and_resumes_to_the_same_metrics(tiny_config, tmp_path, cli_whole):
    metrics = tmp_path / "metrics.jsonl"
    proc = _start_and_wait(_cli_args(tiny_config.data_dir, tmp_path, "--config.checkpoint_every_steps=1000"),
                           lambda: metrics.exists() and metrics.read_text().strip())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    saved = [int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()]
    assert len(saved) == 1 and 10 <= saved[0] < CLI_STEPS, saved            # saved where it stopped, not before
    subprocess.run(_cli_args(tiny_config.data_dir, tmp_path, "--config.checkpoint_every_steps=1000"), cwd=ROOT,
                   env=CLI_ENV, check=True, capture_output=True)
    assert json.loads((tmp_path / "run.json").read_text())["starts"] == [0, saved[0]]
    assert _final_eval(str(tmp_path)) == cli_whole


def test_sigterm_before_the_step_loop_saves_nothing_and_exits_cleanly(tiny_config, tmp_path):
    """SIGTERM during the feature network's pre-training: exit 0, no checkpoint, no half-written feature net."""
    args = _cli_args(tiny_config.data_dir, tmp_path, "--config.perceptual_weight=0.1",
                     "--config.feature_net_steps=1000000")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300       # the handler is installed before this line is printed
    while time.time() < deadline and proc.poll() is None and "setting up task" not in log.read_text():
        time.sleep(0.05)
    time.sleep(3.0)                     # well into the pre-training
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert not (tmp_path / "feature_net.msgpack").exists()
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")


def test_cli_refuses_a_bad_override_readably(tiny_config, tmp_path):
    for override, expected in (("--config.quantizer.codebook_sise=5", "does not fit the experiment config"),
                               ("--config.num_train_step=5", "does not fit the experiment config")):
        out = subprocess.run(_cli_args(tiny_config.data_dir, tmp_path / "w", override), cwd=ROOT, env=CLI_ENV,
                             capture_output=True, text=True)
        assert out.returncode != 0 and expected in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


def test_switching_the_quantizer_family_from_the_command_line():
    """``--config.quantizer=fsq`` drops the experiment's VQ fields and takes the FSQ ones given beside it; without a
    switch the kwargs overrides stay for config_flags; the same family keeps its other fields."""
    from experiments_loader import load_experiment

    from vqjax.train import check_config, switch_quantizer
    from vqjax.train.config import split_quantizer_overrides

    argv = ["main", "--config=experiments/mnist_vq.py", "--config.quantizer=fsq",
            "--config.quantizer_kwargs.levels=(8, 5, 5, 5)", "--config.num_train_steps=5"]
    rest, name, kwargs = split_quantizer_overrides(argv)
    assert rest == ["main", "--config=experiments/mnist_vq.py", "--config.num_train_steps=5"]
    assert name == "fsq" and kwargs == {"levels": (8, 5, 5, 5)}
    locked = load_experiment("mnist_vq")
    locked.lock()                                     # as --config gives it (lock_config=True)
    c = switch_quantizer(locked, name, kwargs)
    assert c.quantizer == "fsq" and c.quantizer_kwargs.to_dict() == {"levels": (8, 5, 5, 5)}
    check_config(c)                                   # the VQ fields (codebook_learning, ...) are gone
    same = load_experiment("mnist_vq")
    same.lock()
    same = switch_quantizer(same, "vq", {"codebook_size": 512, "kmeans_iters": 3})
    assert same.quantizer_kwargs.codebook_size == 512 and same.quantizer_kwargs.codebook_learning == "ema"
    assert same.quantizer_kwargs.kmeans_iters == 3
    kept = ["main", "--config.quantizer_kwargs.codebook_size=512"]
    assert split_quantizer_overrides(kept) == (kept, None, {})


def test_the_cli_parses_a_family_switch_into_the_config():
    """The CLI's own flag parsing (config_flags also reads sys.argv): the switched family's fields replace the
    experiment's, and the other overrides still apply."""
    script = ("import sys; from vqjax import main; "
              "main.parse_flags(sys.argv); c = main.FLAGS.config; "
              "print(c.quantizer, sorted(c.quantizer_kwargs.to_dict().items()), c.num_train_steps)")
    args = [sys.executable, "-c", script, "--config=experiments/mnist_vq.py:runlocal", "--workdir=unused",
            "--config.quantizer=fsq", "--config.quantizer_kwargs.levels=(8, 5, 5, 5)", "--config.num_train_steps=7"]
    out = subprocess.run(args, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "fsq [('levels', (8, 5, 5, 5))] 7", out.stdout
