"""The image task trains 1D tokenizers (``config.architecture='1d'``) and the grid tokenizers they are judged
against: on held-out digits every prefix decodes and PSNR rises with the token count; the artifact carries its
token range; the perceptual and adversarial terms apply; grids of any token count on padded digits; bad fields
refused."""

import json
import os

import numpy as np
import pytest
from experiments_loader import load_experiment, load_module

import vqjax
from vqjax.evals import image as image_eval
from vqjax.train import train_and_evaluate
from vqjax.train.tasks import get_task


@pytest.fixture(scope="module")
def trained(data_dir, devices, tmp_path_factory):
    c = load_experiment("mnist_1d", "runlocal")
    c.data_dir = data_dir
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 300, 300, 300
    c.optimizer.learning_rate, c.max_eval_examples, c.eval_batch_size = 3e-3, 200, 40
    workdir = str(tmp_path_factory.mktemp("mnist_1d"))
    return train_and_evaluate(c, workdir, devices=devices[:1], progress=False), workdir


def test_every_prefix_decodes_and_psnr_rises_with_the_tokens(trained):
    result, _ = trained
    ks = [1, 2, 4, 8]
    psnr = [result[f"psnr_k{k}"] for k in ks]
    assert all(b >= a - 0.1 for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[-1] > psnr[0] + 0.5, psnr
    assert result["psnr_k8"] == pytest.approx(result["psnr"], abs=1e-4)     # all K tokens: the full decode
    assert psnr[0] > 10.5                                                       # not the blank image


def test_the_artifact_takes_the_budget_and_agrees_with_the_run(trained, data_dir):
    result, workdir = trained
    tok = vqjax.Tokenizer.load(workdir)
    assert tok.token_range == (1, 8) and tok.codes_shape == (None,) and tok.vocab_size == 1000
    spec = json.load(open(os.path.join(workdir, "spec.json")))
    assert spec["token_range"] == [1, 8] and spec["model"]["name"] == "image_1d_tokenizer"
    c = load_experiment("mnist_1d", "runlocal")
    c.data_dir = data_dir
    from vqjax.train.config import read_example_splits

    _, eval_source = read_example_splits(c, None)
    images = np.stack([eval_source[i]["image"] for i in range(200)])
    for k in (2, 8):
        row = image_eval.evaluate(tok, images, num_tokens=k, batch_size=40)[0]
        assert row["tokens"] == k and row["bits_per_image"] == pytest.approx(k * np.log2(1000))
        assert row["psnr"] == pytest.approx(result[f"psnr_k{k}"], abs=0.02)
    with pytest.raises(ValueError, match=r"num_tokens must be an int in the trained range \[1, 8\]; got 9"):
        tok.encode(images[:2], num_tokens=9)


def test_perceptual_and_adversarial_terms_apply(data_dir, devices, tmp_path):
    c = load_experiment("mnist_1d", "runlocal")
    c.data_dir = data_dir
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 4, 4, 4, 2
    c.max_eval_examples, c.eval_batch_size = 40, 40
    c.perceptual_weight, c.feature_net_steps = 0.1, 5
    c.gan.weight, c.gan.start_step = 0.1, 0
    result = train_and_evaluate(c, str(tmp_path), devices=devices[:1], progress=False)
    assert np.isfinite(result["psnr"]) and "psnr_k8" in result
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [r for r in rows if r.get("split") == "train"][-1]
    assert np.isfinite(train["disc_loss"]) and train["adaptive_weight"] > 0, train


def test_grid_configs_of_each_matching_token_count():
    module = load_module("mnist_1d")
    for k, grid in ((1, (1, 1)), (4, (2, 2)), (16, (4, 4))):
        c = module.grid_config(k)
        assert c.pad_images and c.num_train_steps == module.get_config().num_train_steps
        factor = 2 ** (len(c.model.channel_mult) - 1)
        assert (-(-28 // factor),) * 2 == grid
    with pytest.raises(ValueError, match="tokens must be one of"):
        module.grid_config(2)


@pytest.mark.parametrize("field, value, message", [
    ("architecture", "2d", "config.architecture must be one of"),
    ("model_1d.min_tokens", 9, r"config.model_1d.min_tokens must be <= config.model_1d.num_tokens \(8\)"),
    ("model_1d.width", 30, r"config.model_1d.width \(30\) must be a multiple of config.model_1d.num_heads"),
    ("model_1d.patch_size", 0, "model_1d.patch_size"),
])
def test_bad_one_d_fields_are_refused(field, value, message):
    c = load_experiment("mnist_1d", "runlocal")
    node, leaf = (c, field) if "." not in field else (c[field.split(".")[0]], field.split(".")[1])
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        get_task(c.task).check_config(c)


def test_digits_need_padding_for_a_one_token_grid():
    c = load_module("mnist_1d").grid_config(1, "runlocal")
    c.pad_images = False
    from vqjax.train.tasks.image_tokenizer import check_image_shape

    with pytest.raises(ValueError, match=r"not divisible by the downsampling factor 32.*config.pad_images=True"):
        check_image_shape(c, (28, 28, 1))
