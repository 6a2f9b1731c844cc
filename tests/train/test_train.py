"""End-to-end training: train, evaluate, resume, survive kill -9, match across device counts, refuse bad configs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vqjax.train import reports, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _final_eval(workdir):
    return [r for r in reports.read_metrics(workdir) if r["split"] == "eval"][-1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """One finished tiny run (a read-only workdir shared by the tests below) and its final metrics."""
    from experiments_loader import load_experiment

    c = load_experiment("mnist_vq", "runlocal")
    c.data_dir = data_dir
    workdir = tmp_path_factory.mktemp("tiny_run")
    return c, workdir, train_and_evaluate(c, str(workdir), progress=False)


def test_train_writes_reports_and_a_usable_tokenizer(tiny_run, tmp_path):
    import vqjax
    from vqjax.tokenize import tokenize_split

    tiny_config, run_dir, result = tiny_run
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    assert result["step"] == 20
    for key in ("psnr", "ssim", "usage", "perplexity", "dead_codes", "bits_per_image"):
        assert np.isfinite(result[key])
    assert 0 < result["usage"] <= 1 and result["bits_per_image"] == 49 * 6          # 7x7 tokens of 64 codes
    for name in ("config.json", "run.json", "metrics.jsonl", "reconstructions.png", "codebook_usage.png",
                 "loss_curves.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    rows = reports.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    assert all("steps_per_s" in r for r in rows if r["split"] == "train")

    tok = vqjax.Tokenizer.load(str(tmp_path))
    assert tok.vocab_size == 64 and tok.codes_shape == (7, 7) and tok.step == 20
    from vqjax.data import pipeline

    images = next(pipeline.eval_batches(pipeline.get_source("vqjax_mnist", "test", tiny_config.data_dir),
                                        batch_size=8))["image"]
    codes = tok.encode(images)
    assert codes.shape == (8, 7, 7) and codes.dtype == np.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    decoded = tok.decode(codes)
    assert decoded.shape == (8, 28, 28, 1) and float(decoded.min()) >= 0 and float(decoded.max()) <= 1
    np.testing.assert_array_equal(tok.encode(np.round(images * 255).astype(np.uint8)).shape, (8, 7, 7))
    with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
        tok.encode(np.zeros((2, 32, 32, 1), np.float32))

    out = tmp_path / "tokens.npz"
    info = tokenize_split(str(tmp_path), "test", str(out))
    saved = np.load(out)
    assert info["num"] == 500 and saved["codes"].shape == (500, 7, 7) and saved["labels"].shape == (500,)
    assert int(saved["vocab_size"]) == 64
    np.testing.assert_array_equal(saved["codes"][:8], np.asarray(codes))


def test_resume_ends_like_an_uninterrupted_run(tiny_run, tmp_path):
    tiny_config, run_dir, whole = tiny_run
    workdir = str(tmp_path)
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "20")            # as if killed after the step-10 checkpoint
    resumed = train_and_evaluate(tiny_config, workdir, progress=False)
    assert resumed == whole
    rows = reports.read_metrics(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20]
    again = train_and_evaluate(tiny_config, workdir, progress=False)   # already finished: evaluates only
    assert again == whole


def test_kill_9_then_rerun_gives_the_same_final_metrics(tiny_config, tmp_path):
    args = [sys.executable, "-m", "vqjax.main", "--config=experiments/mnist_vq.py:runlocal",
            f"--config.data_dir={tiny_config.data_dir}", "--config.num_train_steps=150",
            "--config.checkpoint_every_steps=25", "--config.eval_every_steps=150", "--config.log_every_steps=25"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + [f"--workdir={killed}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpts = killed / "checkpoints"
        if ckpts.exists() and any(p.isdigit() and int(p) >= 25 for p in os.listdir(ckpts)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(args + [f"--workdir={killed}"], cwd=ROOT, env=env, check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run(args + [f"--workdir={whole}"], cwd=ROOT, env=env, check=True, capture_output=True)
    assert _final_eval(str(killed)) == _final_eval(str(whole))
    train_steps = [r["step"] for r in reports.read_metrics(str(killed)) if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps))                  # no step logged twice


def test_eight_devices_match_one(tiny_config, tmp_path, devices):
    one = train_and_evaluate(tiny_config, str(tmp_path / "one"), devices=devices[:1], progress=False)
    eight = train_and_evaluate(tiny_config, str(tmp_path / "eight"), devices=devices, progress=False)
    for key in ("psnr", "ssim", "mse"):
        np.testing.assert_allclose(eight[key], one[key], rtol=2e-3)
    assert abs(eight["usage"] - one["usage"]) <= 2 / 64


def test_sigterm_saves_and_stops(tiny_config, tmp_path):
    c = tiny_config.copy_and_resolve_references()
    c.num_train_steps = 5000
    c.checkpoint_every_steps = 5000
    args = [sys.executable, "-m", "vqjax.main", "--config=experiments/mnist_vq.py:runlocal",
            f"--config.data_dir={c.data_dir}", "--config.num_train_steps=5000", "--config.checkpoint_every_steps=5000",
            "--config.eval_every_steps=5000", f"--workdir={tmp_path}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    saved = [int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < 5000


def test_non_finite_loss_stops_with_an_intact_checkpoint(tiny_config, tmp_path):
    c = tiny_config.copy_and_resolve_references()
    c.num_train_steps = 40
    c.optimizer.learning_rate = 1e30
    c.optimizer.grad_clip = 1e30
    c.optimizer.warmup_steps = 1
    with pytest.raises(FloatingPointError, match="non-finite at step"):
        train_and_evaluate(c, str(tmp_path), progress=False)
    import vqjax

    ckpts = [int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()]
    if ckpts:                                         # whatever was saved holds finite parameters
        tok = vqjax.Tokenizer.load(str(tmp_path))
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tok.variables["params"]))


@pytest.mark.parametrize("field,value,match", [
    ("quantizer", "vqq", "quantizer must be one of"),
    ("quantizer_kwargs.codebook_size", 0, "codebook_size"),
    ("model.channel_mult", (1, 2, 2, 2), "not divisible by the downsampling factor 8"),
    ("dataset", "imagenet", "dataset must be one of"),
    ("batch_size", 0, "config.batch_size must be a positive int"),
])
def test_bad_configs_are_refused_before_compute(tiny_config, tmp_path, field, value, match):
    c = tiny_config.copy_and_resolve_references()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_unwritable_workdir_is_refused(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        train_and_evaluate(tiny_config, str(blocker / "run"), progress=False)


def test_vqgan_run_resumes_exactly_and_tokenizes_with_the_ema_weights(tiny_config, tmp_path):
    """Discriminator (hinge, adaptive weight, start step, LeCAM, R1), perceptual loss and generator EMA together:
    the run trains, its state (discriminator, LeCAM EMAs, EMA weights) resumes exactly, and the tokenizer uses
    the EMA weights the evaluation used."""
    import vqjax

    c = tiny_config.copy_and_resolve_references()
    c.gan.weight, c.gan.start_step, c.gan.lecam_weight, c.gan.r1_gamma = 0.1, 8, 0.01, 1.0
    c.perceptual_weight, c.feature_net_steps = 0.1, 10
    c.ema_decay = 0.9
    workdir = str(tmp_path)
    whole = train_and_evaluate(c, workdir, progress=False)
    rows = [r for r in reports.read_metrics(workdir) if r["split"] == "train"]
    assert all(np.isfinite(r[k]) for r in rows for k in ("disc_loss", "gen_loss", "adaptive_weight"))
    assert rows[0]["disc_loss"] == 0.0 and rows[-1]["disc_loss"] > 0       # off before gan.start_step
    assert os.path.getsize(tmp_path / "feature_net.msgpack") > 0
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    assert train_and_evaluate(c, workdir, progress=False) == whole

    tok = vqjax.Tokenizer.load(workdir)
    from vqjax.data import pipeline
    from vqjax.train.loop import _eval_step

    images = next(pipeline.eval_batches(pipeline.get_source("vqjax_mnist", "test", c.data_dir), batch_size=8))
    _, codes, _ = _eval_step(tok.model, tok.variables["params"], tok.variables["vq_stats"], images["image"],
                             images["mask"])
    np.testing.assert_array_equal(tok.encode(images["image"]), codes)
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        raw = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore())
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(tok.variables["params"], raw["ema_params"])
    assert not same(tok.variables["params"], raw["params"])
