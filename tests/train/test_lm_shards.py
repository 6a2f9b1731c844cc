"""The 'lm' task on token shards of two modalities (images and speech, written by vqjax.tokenize from files) and
text: trains, evaluates per kind, generates spans that decode, and resumes exactly (the data stream's position is
in the checkpoint: same batches, same metrics as the uninterrupted run)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_tokenizers import audio_tokenizer, image_tokenizer

from vqjax.train import reports, train_and_evaluate
from vqjax.train.tasks.lm import default_config, runlocal


@pytest.fixture(scope="module")
def shard_corpus(tmp_path_factory):
    import soundfile

    from vqjax.tokenize import TokenizeJob, run_local

    root = tmp_path_factory.mktemp("lm_shards")
    image_tokenizer().export(str(root / "itok"))
    audio_tokenizer().export(str(root / "atok"))
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    (root / "wavs").mkdir()
    words = ["zero", "one", "two", "three", "four"]
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / "imgs" / f"{i}.png")
        (root / "imgs" / f"{i}.txt").write_text(f"a picture of {words[i % 5]}")
        wave = 0.2 * np.sin(2 * np.pi * (200 + 60 * (i % 5)) * np.arange(320 + 16 * (i % 7)) / 16000)
        soundfile.write(str(root / "wavs" / f"{i}.wav"), wave.astype(np.float32), 16000)
        (root / "wavs" / f"{i}.txt").write_text(words[i % 5])
    for name, tok, data in (("img", "itok", "imgs"), ("aud", "atok", "wavs")):
        for part, split in (("train", "train[:80%]"), ("eval", "train[80%:]")):
            run_local(TokenizeJob(tokenizer=str(root / tok), dataset=f"files:{root / data}", split=split,
                                  out=str(root / f"{name}_{part}"), data_dir=str(root / "dd"), num_shards=2),
                      progress=False)
    return root


def _config(root, **overrides):
    c = runlocal(default_config())
    c.documents = "shards"
    c.corpus = {"image": {"shards": str(root / "img_train"), "eval_shards": str(root / "img_eval"),
                          "template": "both", "weight": 1.0},
                "speech": {"shards": str(root / "aud_train"), "eval_shards": str(root / "aud_eval"),
                           "template": "caption_codes", "weight": 1.0},
                "prose": {"text": "", "weight": 0.3, "eval_fraction": 0.02}}
    c.weights = {"text": 1.0, "image": 1.0, "speech": 1.0}
    c.seq_len, c.batch_size, c.eval_batch_size = 96, 4, 4
    c.num_train_steps, c.checkpoint_every_steps, c.eval_every_steps, c.log_every_steps = 8, 4, 8, 1
    c.max_eval_documents, c.generation.num_examples = 12, 4
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def shards_run(shard_corpus, tmp_path_factory, devices):
    workdir = tmp_path_factory.mktemp("lm_shards_run")
    c = _config(shard_corpus)
    return c, str(workdir), train_and_evaluate(c, str(workdir), progress=False, devices=devices[:1])


def test_lm_trains_on_shards_of_two_modalities_and_text(shards_run):
    c, workdir, result = shards_run
    assert result["step"] == 8
    for key in ("bits_per_token_text", "bits_per_token_image", "bits_per_token_speech"):
        assert np.isfinite(result[key]), key
    assert result["span_validity"] == 1.0 and result["generated_spans"] == 8
    assert result["image/span_validity"] == 1.0 and result["speech/span_validity"] == 1.0
    info = json.load(open(os.path.join(workdir, "run.json")))
    assert set(info["corpus"]) == {"image", "speech", "text_0"} and info["ranges"]["speech"][1] > 0
    vocab = json.load(open(os.path.join(workdir, "vocab.json")))
    speech = next(m for m in vocab["modalities"] if m["name"] == "speech")
    assert speech["codes_shape"] == [None, 3] and speech["max_frames"] >= 9
    assert os.listdir(os.path.join(workdir, "generated", "speech"))


def test_lm_on_shards_resumes_with_the_same_batches(shards_run, tmp_path, devices):
    c, workdir, result = shards_run
    shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "8")              # as if killed after the step-4 checkpoint
    again = train_and_evaluate(c, str(tmp_path), progress=False, devices=devices[:1])
    assert json.load(open(tmp_path / "run.json"))["starts"][-1] == 4
    train = lambda w: [(r["step"], r["loss"]) for r in reports.read_metrics(w) if r["split"] == "train"]
    assert [s for s, _ in train(tmp_path)][-4:] == [5, 6, 7, 8]
    assert train(tmp_path)[-4:] == train(workdir)[-4:]        # steps 5..8 saw the same batches
    assert again == result


def test_a_bad_corpus_is_refused(shard_corpus):
    from vqjax.train import check_config

    c = _config(shard_corpus)
    c.corpus = {"image": {"shards": str(shard_corpus / "img_train"), "templat": "both"}}
    with pytest.raises(ValueError, match="unknown fields"):
        check_config(c)
    c.corpus = {}
    with pytest.raises(ValueError, match="config.corpus is empty"):
        check_config(c)
