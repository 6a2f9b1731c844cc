"""A VQGAN run (discriminator, perceptual loss, generator EMA) trains, resumes exactly and tokenizes with the EMA
weights."""

import json
import os
import shutil

import jax
import numpy as np

from vqjax.train import reports, train_and_evaluate


def test_vqgan_run_resumes_exactly_and_tokenizes_with_the_ema_weights(tiny_config, tmp_path, one):
    """Discriminator (hinge, adaptive weight, start step, LeCAM, R1), perceptual loss and generator EMA together:
    the run trains, its state (discriminator, LeCAM EMAs, EMA weights) resumes exactly, and the tokenizer uses
    the EMA weights the evaluation used."""
    import vqjax

    c = tiny_config.copy_and_resolve_references()
    c.gan.weight, c.gan.start_step, c.gan.lecam_weight, c.gan.r1_gamma = 0.1, 8, 0.01, 1.0
    c.perceptual_weight, c.feature_net_steps = 0.1, 30
    c.model.channel_mult = (1, 2)                         # one downsampling: a smaller graph to compile
    c.ema_decay = 0.9
    workdir = str(tmp_path)
    whole = train_and_evaluate(c, workdir, progress=False, devices=one)
    rows = [r for r in reports.read_metrics(workdir) if r["split"] == "train"]
    assert all(np.isfinite(r[k]) for r in rows for k in ("disc_loss", "gen_loss", "adaptive_weight"))
    assert rows[0]["disc_loss"] == 0.0 and rows[-1]["disc_loss"] > 0       # off before gan.start_step
    assert os.path.getsize(tmp_path / "feature_net.msgpack") > 0
    # The perceptual loss's feature network learned its task: held-out digit accuracy well above chance (0.1).
    assert json.loads((tmp_path / "run.json").read_text())["feature_net_accuracy"] > 0.3
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    assert train_and_evaluate(c, workdir, progress=False, devices=one) == whole

    tok = vqjax.Tokenizer.load(workdir)
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        raw = mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore())
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(tok.variables["params"], raw["ema_params"])
    assert not same(tok.variables["params"], raw["params"])
    assert set(raw["gan"]) == {"params", "opt_state", "lecam"}
    assert tok.spec["weights"]["params"] == "ema_params"
