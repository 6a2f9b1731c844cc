"""Link prediction through the training machinery: train, learn, resume, shard, refuse bad configs."""

import os
import shutil

import numpy as np
import pytest
from experiments_loader import load_experiment, subprocess_env

from vqjax.train import reports


@pytest.fixture
def umls():
    from vqjax.data.graphs import package_dir

    try:
        package_dir("pykeen")
    except FileNotFoundError:
        pytest.skip("the pykeen wheel is not installed (make installs it with the data extra)")


def _tiny(name="umls_nodepiece"):
    return load_experiment(name, "runlocal")


def test_nodepiece_run_trains_reports_and_resumes_exactly(umls, tmp_path):
    from vqjax.train import train_and_evaluate as train_and_evaluate_links

    c = _tiny()
    whole = train_and_evaluate_links(c, str(tmp_path), progress=False)
    assert whole["step"] == 20 and 0 < whole["mrr"] <= 1 and whole["hits@1"] <= whole["hits@3"] <= whole["hits@10"]
    for name in ("config.json", "run.json", "vocab.json", "metrics.jsonl", "loss_curves.png",
                 "ranking_metrics.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    rows = reports.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20]
    assert [r["split"] for r in rows][-1] == "test"
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    assert train_and_evaluate_links(c, str(tmp_path), progress=False) == whole

    import vqjax

    tok = vqjax.Tokenizer.load(str(tmp_path))                     # the graph tokenizer, same protocol
    assert tok.modality == "graph" and tok.tokens_per_second is None
    k, m = c.nodepiece.anchors_per_node, c.nodepiece.relations_per_node
    assert tok.codes_shape == (k + m,) and tok.vocab_size == tok.vocab.size
    ids = np.arange(tok.num_nodes)
    tokens = tok.encode(ids)
    assert tokens.shape == (tok.num_nodes, k + m) and tokens.min() >= 0 and tokens.max() < tok.vocab_size
    back = tok.decode(tokens)
    np.testing.assert_array_equal(tok.encode(back), tokens)         # each row decodes to a node with those tokens
    assert np.mean(back == ids) > 0.9
    exported = vqjax.Tokenizer.load(tok.export(str(tmp_path / "artifact")))
    np.testing.assert_array_equal(exported.encode(ids), tokens)
    with pytest.raises(ValueError, match=r"node ids must lie in \[0, 135\)"):
        tok.encode([135])
    with pytest.raises(ValueError, match="must lie in"):
        tok.decode(np.full((1, k + m), tok.vocab_size))


@pytest.mark.slow
def test_nodepiece_learns_umls(umls, tmp_path):
    """A short real fit: well above the MRR of random scores (about 0.04 among 135 entities). ``make e2e``."""
    from vqjax.train import train_and_evaluate as train_and_evaluate_links

    c = load_experiment("umls_nodepiece")
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 300, 300, 300, 100
    c.dim = 32
    got = train_and_evaluate_links(c, str(tmp_path / "np"), progress=False)
    assert got["mrr"] > 0.4, got


def test_eight_devices_match_one(umls, tmp_path, devices):
    from vqjax.train import train_and_evaluate as train_and_evaluate_links

    c = _tiny("umls_embedding")
    one = train_and_evaluate_links(c, str(tmp_path / "one"), devices=devices[:1], progress=False)
    eight = train_and_evaluate_links(c, str(tmp_path / "eight"), devices=devices, progress=False)
    for key in ("mrr", "hits@10", "mean_rank"):
        np.testing.assert_allclose(eight[key], one[key], rtol=1e-3)


@pytest.mark.parametrize("field,value,match", [
    ("encoder", "gnn", "config.encoder must be one of"),
    ("dataset", "fb15k237", "config.dataset must be one of"),
    ("dim", 15, "must be even for scorer='rotate'"),
    ("nodepiece.anchors_per_node", 50, r"anchors_per_node \(50\) must be <= config.nodepiece.num_anchors \(40\)"),
    ("nodepiece.strategy", "betweenness", "strategy must be one of"),
    ("batch_size", 0, "config.batch_size must be a positive int"),
])
def test_bad_link_configs_are_refused_before_compute(tmp_path, field, value, match):
    from vqjax.train import train_and_evaluate as train_and_evaluate_links

    c = _tiny()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        train_and_evaluate_links(c, str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w").exists()


def test_cli_runs_a_link_prediction_experiment(umls, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-m", "vqjax.main", "--config=experiments/umls_embedding.py:runlocal",
                          f"--workdir={tmp_path}"], cwd=root, capture_output=True, text=True, check=True,
                         env=subprocess_env())
    assert "| MRR |" in out.stdout and "ranking_metrics.png" in out.stdout
