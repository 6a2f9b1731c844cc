"""The 'lm' task through the shared trainer: captions and MNIST image tokens from a tiny trained tokenizer, packed,
trained, evaluated per kind, generated with constrained decoding; resume exact; a (data, model) mesh equal to one
device."""

import json
import os
import shutil

import numpy as np
import pytest

from vqjax.data.tokens import TokenShards
from vqjax.train import reports, train_and_evaluate


@pytest.fixture(scope="module")
def image_tokenizer_dir(tiny_run):
    """The tiny trained ``mnist_vq`` run (shared with the training tests) as the LM's image tokenizer."""
    return str(tiny_run[1])


def _lm_config(data_dir, tokenizer_dir, **overrides):
    from experiments_loader import load_experiment

    c = load_experiment("mnist_captions_lm", "runlocal")
    c.data_dir, c.image_tokenizer = data_dir, tokenizer_dir
    for k, v in overrides.items():
        node, *path = k.split(".")
        target = c
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = v
    return c


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, data_dir, image_tokenizer_dir, one):
    workdir = tmp_path_factory.mktemp("lm_run")
    c = _lm_config(data_dir, image_tokenizer_dir)
    return c, str(workdir), train_and_evaluate(c, str(workdir), progress=False, devices=one)


def test_lm_trains_evaluates_and_generates_spans_that_decode(lm_run):
    c, workdir, result = lm_run
    assert result["step"] == 20
    for key in ("bits_per_token", "bits_per_token_text", "bits_per_token_image", "perplexity_image",
                "text_to_image_accuracy", "image_to_text_accuracy", "classifier_accuracy"):
        assert np.isfinite(result[key]), key
    assert result["generated_spans"] == c.generation.num_examples and result["span_validity"] == 1.0
    info = json.load(open(os.path.join(workdir, "run.json")))
    assert info["task"] == "lm" and os.path.exists(os.path.join(workdir, "shards", "train", "manifest.json"))
    # The digits went through token shards: each training digit and its jittered copies once, the held-out digits.
    train = TokenShards(os.path.join(workdir, "shards", "train"), verify=True)
    keys = [train[i]["key"] for i in range(len(train))]
    assert len(set(keys)) == len(keys) == c.max_train_images * (1 + c.augment_copies)
    assert sum("#jitter" in k for k in keys) == c.max_train_images * c.augment_copies
    assert len(TokenShards(os.path.join(workdir, "shards", "eval"))) == c.max_eval_images
    assert all(0.5 < r["packing_efficiency"] <= 1.0 for r in reports.read_metrics(workdir) if r["split"] == "train")
    lo, hi = info["ranges"]["image"]
    assert hi - lo == 64 and info["ranges"]["text"][1] <= lo                # disjoint ranges, 64 image codes
    for name in ("vocab.json", "generated_digits.png", "generated_captions.txt", "loss_curves.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    # Training lowered the held-out loss from the first evaluation to the last.
    evals = [r for r in reports.read_metrics(workdir) if r["split"] == "eval"]
    assert evals[-1]["loss"] < evals[0]["loss"]


def test_lm_resumes_exactly(lm_run, tmp_path, one):
    c, workdir, result = lm_run
    shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    again = train_and_evaluate(c, str(tmp_path), progress=False, devices=one)
    assert json.load(open(tmp_path / "run.json"))["starts"][-1] == 10
    assert again == result


def test_lm_on_a_data_and_model_mesh_equals_one_device(data_dir, image_tokenizer_dir, tmp_path, devices, one):
    kw = {"num_train_steps": 2, "eval_every_steps": 2, "log_every_steps": 1, "generation.num_examples": 2,
          "generation.classifier_steps": 2}
    single = train_and_evaluate(_lm_config(data_dir, image_tokenizer_dir, **kw), str(tmp_path / "one"),
                                progress=False, devices=one)
    mesh = train_and_evaluate(_lm_config(data_dir, image_tokenizer_dir, model_parallel=2, sharding="fsdp+model",
                                         **kw), str(tmp_path / "mesh"), progress=False, devices=devices)
    info = json.load(open(tmp_path / "mesh" / "run.json"))
    assert info["mesh"] == {"data": 4, "model": 2} and info["sharding"] == "fsdp+model"
    for key in ("loss", "bits_per_token_text", "bits_per_token_image"):
        np.testing.assert_allclose(mesh[key], single[key], rtol=2e-5)
    train_one = [r["loss"] for r in reports.read_metrics(str(tmp_path / "one")) if r["split"] == "train"]
    train_mesh = [r["loss"] for r in reports.read_metrics(str(tmp_path / "mesh")) if r["split"] == "train"]
    np.testing.assert_allclose(train_mesh, train_one, rtol=2e-5)


def test_lm_config_errors_name_the_field(data_dir, image_tokenizer_dir, tmp_path):
    for override, match in ((dict(documents="wiki"), "config.documents must be one of"),
                            (dict(text_vocab_size=100), "text_vocab_size must be >= 256"),
                            (dict(image_tokenizer=str(tmp_path / "none")), "config.image_tokenizer"),
                            (dict(model_parallel=3), "model_parallel .3. must divide"),
                            (dict(augment_copies=-1), "config.augment_copies must be >= 0"),
                            (dict(uncond_fraction=0.0), r"guidance=4.0 contrasts with unconditional images.*"
                                                        r"uncond_fraction > 0"),
                            (dict(**{"generation.guidance": -1.0}), "guidance must be >= 0")):
        c = _lm_config(data_dir, image_tokenizer_dir, **override)
        with pytest.raises(ValueError, match=match):
            train_and_evaluate(c, str(tmp_path / "w"), progress=False)
    c = _lm_config(data_dir, image_tokenizer_dir)
    c.weights.audio = 1.0
    with pytest.raises(ValueError, match="config.weights must map"):
        train_and_evaluate(c, str(tmp_path / "w2"), progress=False)


def test_graph_and_text_lm_ranks_tails_and_generates_existing_nodes(tmp_path, one):
    """kg_text on UMLS: NodePiece spans and relation words in one LM; every generated tail span names a node (the
    trie constraint), and the filtered ranking by likelihood gives finite metrics."""
    from experiments_loader import load_experiment

    c = load_experiment("umls_text_lm", "runlocal")
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 10, 10, 10
    c.max_test_queries = 6
    result = train_and_evaluate(c, str(tmp_path), progress=False, devices=one)
    assert result["test_queries"] == 6 and result["generated_spans"] == 6 and result["span_validity"] == 1.0
    assert 0 < result["mrr"] <= 1 and 1 <= result["mean_rank"] <= 135
    assert 0 <= result["generation_hits@1"] <= 1 and 0 <= result["generation_true_tail"] <= 1
    for key in ("bits_per_token_text", "bits_per_token_graph"):
        assert np.isfinite(result[key])
    info = json.load(open(tmp_path / "run.json"))
    assert info["entities"] == 135 and info["distinct_entity_spans"] <= 135
    assert os.path.exists(tmp_path / "graph_tokenizer" / "spec.json")
    # The entities went through token shards (one record per entity, its NodePiece tokens), the triples as links.
    from vqjax.tokenizers import Tokenizer

    entities = TokenShards(str(tmp_path / "shards" / "entities"), verify=True)
    rows = Tokenizer.load(str(tmp_path / "graph_tokenizer")).encode(np.arange(135))
    np.testing.assert_array_equal(np.stack([entities[i]["codes"] for i in range(135)]), rows)
    assert [entities[i]["key"] for i in range(3)] == ["0", "1", "2"]
    assert len((tmp_path / "links" / "train.tsv").read_text().splitlines()) == 2 * 5216
