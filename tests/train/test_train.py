"""End-to-end training in process: train, evaluate, resume exactly, catch a restore that starts over, stop on a
non-finite loss, fall back from a damaged checkpoint, match across device counts, refuse bad configs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments_loader import subprocess_env

from vqjax.train import reports, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _final_eval(workdir):
    return [r for r in reports.read_metrics(workdir) if r["split"] == "eval"][-1]


def test_train_writes_reports_and_a_usable_tokenizer(tiny_run, tmp_path):
    import vqjax
    from vqjax.data.tokens import TokenShards
    from vqjax.tokenize import job_from_workdir, run_local

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

    # the bundled test split into shards: the dataset and its data_dir come from the workdir's config
    summary = run_local(job_from_workdir(str(tmp_path), str(tmp_path / "tokens"), split="test",
                                         examples_per_shard=200), progress=False)
    shards = TokenShards(str(tmp_path / "tokens"))
    assert summary["records"] == 500 and len(shards.manifest["shards"]) == 3
    assert shards.manifest["dataset"] == "vqjax_mnist" and shards.tokenizer["vocab_size"] == 64
    np.testing.assert_array_equal(np.stack([shards[i]["codes"] for i in range(8)]), np.asarray(codes))
    assert [shards[i]["label"] for i in range(8)] == [int(v) for v in next(pipeline.eval_batches(
        pipeline.get_source("vqjax_mnist", "test", tiny_config.data_dir), batch_size=8))["label"]]


def assert_resumed_from(workdir, step):
    """The run in ``workdir`` started fresh once and was resumed at ``step`` (``run.json``'s ``starts``): a resume
    that silently started again from step 0 fails this, even though it would end with the same metrics."""
    info = json.loads((Path(workdir) / "run.json").read_text())
    starts = info["starts"]
    assert starts[0] == 0 and starts[1:] == [step], f"expected a fresh start then a resume at {step}; got {starts}"
    assert info["resumed_from"] == step


def test_resume_ends_like_an_uninterrupted_run(tiny_run, tmp_path, one):
    tiny_config, run_dir, whole = tiny_run
    workdir = str(tmp_path)
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "20")            # as if killed after the step-10 checkpoint
    resumed = train_and_evaluate(tiny_config, workdir, progress=False, devices=one)
    assert resumed == whole
    assert_resumed_from(workdir, 10)
    rows = reports.read_metrics(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20]
    again = train_and_evaluate(tiny_config, workdir, progress=False, devices=one)   # already finished: evaluates only
    assert again == whole
    assert json.loads((tmp_path / "run.json").read_text())["starts"] == [0, 10, 20]


def test_a_restore_that_starts_over_is_caught(tiny_run, tmp_path, monkeypatch, one):
    """The check above can fail: with restore broken (every run starts from its initial state), the rerun still
    ends with the uninterrupted run's metrics, but ``assert_resumed_from`` refuses it."""
    from vqjax.train import core

    tiny_config, run_dir, whole = tiny_run
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    real = core.open_checkpoints
    broken = lambda workdir, max_to_keep, init_state, abstract, sharding, seed, data_iterator=None: real(
        str(tmp_path / "elsewhere"), max_to_keep, init_state, abstract, sharding, seed, data_iterator)
    monkeypatch.setattr(core, "open_checkpoints", broken)
    assert train_and_evaluate(tiny_config, str(tmp_path), progress=False, devices=one) == whole
    with pytest.raises(AssertionError, match="resume at 10"):
        assert_resumed_from(tmp_path, 10)


def _restore(workdir, step):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        return mgr.restore(step, args=ocp.args.StandardRestore())


def _same_tree(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_non_finite_loss_stops_with_an_intact_checkpoint(tiny_run, tmp_path, monkeypatch, one):
    """The loss turns NaN at step 13, after the step-10 checkpoint: the run stops naming the step, saves nothing
    after it, and checkpoint 10 restores to exactly what an uninterrupted run saved at step 10."""
    import vqjax
    from vqjax.data import pipeline

    tiny_config, run_dir, _ = tiny_run
    clean = pipeline.train_batches

    def poisoned(*args, start_step=0, **kwargs):
        # The 13th step's batch holds a NaN pixel; the compiled step is the clean run's, so the steps before it
        # are bit for bit the same.
        for step, batch in enumerate(clean(*args, start_step=start_step, **kwargs), start=start_step + 1):
            if step == 13:
                batch = {**batch, "image": np.array(batch["image"], np.float32)}
                batch["image"].flat[0] = np.nan
            yield batch

    monkeypatch.setattr(pipeline, "train_batches", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite at step 13.*step 10"):
        train_and_evaluate(tiny_config, str(tmp_path), progress=False, devices=one)
    assert sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()) == [10]
    assert _same_tree(_restore(tmp_path, 10), _restore(run_dir, 10))
    tok = vqjax.Tokenizer.load(str(tmp_path))
    assert tok.step == 10 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tok.variables["params"]))


def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one(tiny_run, tmp_path, capfd, one):
    tiny_config, run_dir, whole = tiny_run
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    damaged = 0
    for root, _, files in os.walk(tmp_path / "checkpoints" / "20"):
        for name in files:                       # half-written: every data file cut short
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as fh:
                fh.truncate(size // 3)
            damaged += 1
    assert damaged
    assert train_and_evaluate(tiny_config, str(tmp_path), progress=False, devices=one) == whole
    assert "checkpoint 20 is damaged" in capfd.readouterr().out
    assert json.loads((tmp_path / "run.json").read_text())["starts"] == [0, 10]
    assert [p.split(".")[0] for p in os.listdir(tmp_path / "checkpoints_damaged")] == ["20"]


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


@pytest.mark.parametrize("field,match", [
    ("num_train_step", r"config.num_train_step is not a field.*did you mean config.num_train_steps\?"),
    ("gan.wieght", r"config.gan.wieght is not a field.*did you mean config.gan.weight\?"),
    ("optimizer.learning_rat", r"did you mean config.optimizer.learning_rate\?"),
    ("quantizer_kwargs.codebook_sise", r"no field\(s\) \['codebook_sise'\].*did you mean 'codebook_size'"),
])
def test_config_typos_are_refused_with_the_nearest_field(tiny_config, tmp_path, field, match):
    c = tiny_config.copy_and_resolve_references()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = 4
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w").exists()


def test_an_empty_eval_split_is_refused_before_training(tiny_config, tmp_path, monkeypatch):
    from vqjax.data import pipeline

    real = pipeline.get_source
    monkeypatch.setattr(pipeline, "get_source",
                        lambda dataset, split, data_dir, **kw: [] if split == "test" else real(dataset, split, data_dir, **kw))
    with pytest.raises(ValueError, match="split 'test' of dataset 'vqjax_mnist' is empty"):
        train_and_evaluate(tiny_config, str(tmp_path), progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_a_missing_split_is_refused_before_training(tiny_config, tmp_path):
    c = tiny_config.copy_and_resolve_references()
    c.eval_split = "validation"
    with pytest.raises(ValueError, match="validation"):
        train_and_evaluate(c, str(tmp_path), progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_unwritable_workdir_is_refused(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        train_and_evaluate(tiny_config, str(blocker / "run"), progress=False)


def _test_images(data_dir, n=None):
    from vqjax.data import pipeline

    source = pipeline.get_source("vqjax_mnist", "test", data_dir)
    batches = list(pipeline.eval_batches(source, batch_size=100))
    images = np.concatenate([b["image"][b["mask"] > 0] for b in batches])
    return images if n is None else images[:n]


def test_an_exported_tokenizer_loads_in_a_fresh_process_and_encodes_the_test_split_alike(tiny_run, tmp_path):
    import vqjax

    tiny_config, run_dir, _ = tiny_run
    tok = vqjax.Tokenizer.load(str(run_dir))
    assert (tok.modality, tok.vocab_size, tok.codes_shape, tok.tokens_per_second) == ("image", 64, (7, 7), None)
    exported = tok.export(str(tmp_path / "artifact"))
    assert sorted(os.listdir(exported)) == ["model.safetensors", "spec.json"]
    spec = json.loads((tmp_path / "artifact" / "spec.json").read_text())
    assert spec["format_version"] == 2 and spec["model"]["name"] == "image_tokenizer" and spec["step"] == 20
    assert spec["input"] == {"shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]}
    images = _test_images(tiny_config.data_dir)
    np.save(tmp_path / "images.npy", images)
    script = ("import json, sys, numpy as np, vqjax\n"
              f"tok = vqjax.Tokenizer.load({exported!r})\n"
              f"np.save({str(tmp_path / 'codes.npy')!r}, np.asarray(tok.encode(np.load({str(tmp_path / 'images.npy')!r}))))\n"
              "print(json.dumps([tok.modality, tok.vocab_size, list(tok.codes_shape), tok.step,\n"
              "                  any(m.startswith('vqjax.train') for m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=subprocess_env(), capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["image", 64, [7, 7], 20, False]
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), np.asarray(tok.encode(images)))
    assert images.shape[0] == 500


def test_the_tokenizer_refuses_bad_input_and_states_its_dtype_rule(tiny_run):
    import vqjax

    tiny_config, run_dir, _ = tiny_run
    tok = vqjax.Tokenizer.load(str(run_dir))
    images = _test_images(tiny_config.data_dir, 8)
    codes = np.asarray(tok.encode(images))
    as_uint8 = np.round(images * 255).astype(np.uint8)
    np.testing.assert_array_equal(tok.encode(as_uint8), tok.encode(as_uint8.astype(np.float32) / 255))
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]; got min 0, max 255.*uint8"):
        tok.encode(as_uint8.astype(np.float32))                   # 0..255 floats: refused, not clipped
    with pytest.raises(ValueError, match=r"got min -0.5"):
        tok.encode(images - 0.5)
    with pytest.raises(TypeError, match="int32"):             # a vqjax.checks.DTypeError: also a ValueError
        tok.encode(as_uint8.astype(np.int32))
    nan = images.copy()
    nan[3, 4, 5, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        tok.encode(nan)
    with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
        tok.encode(np.zeros((2, 32, 32, 1), np.float32))
    for bad, shown in ((-1, "min -1"), (64, "max 64")):
        wrong = codes.copy()
        wrong[1, 2, 3] = bad
        with pytest.raises(ValueError, match=rf"codes must lie in \[0, 64\); got .*{shown}"):
            tok.decode(wrong)
    with pytest.raises(ValueError, match="integer"):
        tok.decode(codes.astype(np.float32))
    assert tok.decode(codes).shape == (8, 28, 28, 1)
