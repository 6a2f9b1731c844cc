"""Sharing tokenizers: safetensors folders that load in a fresh process with the same codes for every modality,
the format-1 fixture migrated, a hub cache laid out by huggingface_hub's own functions, the model card, push_to_hub,
a vocabulary shared with its tokenizers, and the compiled export run in a process where vqjax.models and vqjax.nn
cannot be imported."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from experiments_loader import subprocess_env
from tiny_tokenizers import (
    audio_tokenizer,
    image_tokenizer,
    item_tokenizer,
    timeseries_tokenizer,
    video_tokenizer,
)

import vqjax
from vqjax.tokenizers import ArtifactError, fingerprint

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(os.path.dirname(HERE), "fixtures", "image_tokenizer_v1")


def _graph_tokenizer():
    from vqjax.graph import Graph, NodePieceVocab

    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 30, 200), rng.integers(0, 3, 200), rng.integers(0, 30, 200)], 1)
    graph = Graph.from_triples(triples, num_nodes=30, num_relations=3)
    vocab = NodePieceVocab.build(graph, num_anchors=5, anchors_per_node=2, relations_per_node=2)
    return vqjax.tokenizers.GraphTokenizer.from_tokens(vocab, vocab.tokenize(graph))


def _inputs():
    rng = np.random.default_rng(1)
    return {"image": rng.uniform(0, 1, (3, 8, 8, 1)).astype(np.float32),
            "audio": np.clip(rng.normal(0, 0.2, (2, 800)), -1, 1).astype(np.float32),
            "video": rng.uniform(0, 1, (2, 5, 16, 16, 1)).astype(np.float32),
            "timeseries": rng.normal(size=(2, 32, 2)).astype(np.float32),
            "item": np.arange(6), "graph": np.arange(30)}


MAKERS = {"image": image_tokenizer, "audio": audio_tokenizer, "video": video_tokenizer,
          "timeseries": timeseries_tokenizer, "item": item_tokenizer, "graph": _graph_tokenizer}


def _encode(tok, x):
    return tok.encode(x, sample_rate=tok.sample_rate) if tok.modality == "audio" else tok.encode(x)


def _run(code: str, *args: str) -> None:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env=subprocess_env(), cwd=os.path.dirname(HERE))
    assert out.returncode == 0, out.stderr[-3000:]


LOAD_ALL = """
import sys, numpy as np, vqjax
inputs = dict(np.load(sys.argv[2]))
out = {}
for name in sys.argv[3].split(","):
    tok = vqjax.Tokenizer.from_pretrained(f"{sys.argv[1]}/{name}")
    rate = {"sample_rate": tok.sample_rate} if name == "audio" else {}
    codes = np.asarray(tok.encode(inputs[name], **rate))
    out[name + "/codes"] = codes
    out[name + "/decoded"] = np.asarray(tok.decode(codes))
np.savez(sys.argv[4], **out)
"""


def test_save_pretrained_then_from_pretrained_in_a_fresh_process_for_every_modality(tmp_path):
    inputs = _inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    want = {}
    for name, make in MAKERS.items():
        tok = make()
        tok.save_pretrained(str(tmp_path / name))
        files = set(os.listdir(tmp_path / name))
        assert {"spec.json", "README.md"} <= files
        assert ("model.safetensors" in files) == (name != "graph") and ("table.safetensors" in files) == (
            name in ("item", "graph"))
        spec = json.load(open(tmp_path / name / "spec.json"))
        assert spec["format_version"] == 2 and spec["fingerprint"] == fingerprint(vqjax.Tokenizer.load(
            str(tmp_path / name)))
        want[name] = np.asarray(_encode(tok, inputs[name]))
        want[name + "/decoded"] = np.asarray(tok.decode(want[name]))
    _run(LOAD_ALL, str(tmp_path), str(tmp_path / "inputs.npz"), ",".join(MAKERS), str(tmp_path / "got.npz"))
    got = np.load(tmp_path / "got.npz")
    for name in MAKERS:
        np.testing.assert_array_equal(got[name + "/codes"], want[name], err_msg=name)
        np.testing.assert_array_equal(got[name + "/decoded"], want[name + "/decoded"], err_msg=name)


def test_the_format_1_fixture_loads_with_its_codes_and_migrates():
    expected = np.load(os.path.join(FIXTURE, "expected.npz"))
    tok = vqjax.Tokenizer.load(FIXTURE)
    assert json.load(open(os.path.join(FIXTURE, "spec.json")))["format_version"] == 1
    np.testing.assert_array_equal(np.asarray(tok.encode(expected["images"])), expected["codes"])
    # the decode was computed on another machine (float sums may differ in the last bit)
    np.testing.assert_allclose(np.asarray(tok.decode(expected["codes"])), expected["decoded"], atol=1e-5)
    assert fingerprint(tok) == "2cc54e1617d3b8eda52259db4638052c11ccfc572ca7852f8d05f8b74fdd0c24"     # unchanged by migration


def test_the_fixture_re_exported_keeps_its_fingerprint(tmp_path):
    tok = vqjax.Tokenizer.load(FIXTURE)
    again = vqjax.Tokenizer.load(tok.export(str(tmp_path / "v2")))
    assert fingerprint(again) == fingerprint(tok) and os.path.exists(tmp_path / "v2" / "model.safetensors")


def _cache_repo(cache: str, repo_id: str, folder: str, commit: str, revision: str) -> None:
    """``folder``'s files as the hub cache holds a downloaded repository (blobs, a snapshot of links, a ref),
    laid out by huggingface_hub's own functions."""
    from huggingface_hub.file_download import (
        _cache_commit_hash_for_specific_revision,
        _create_symlink,
        repo_folder_name,
    )

    storage = os.path.join(cache, repo_folder_name(repo_id=repo_id, repo_type="model"))
    for root, _, files in os.walk(folder):
        for f in files:
            src = os.path.join(root, f)
            blob = os.path.join(storage, "blobs", hashlib.sha256(open(src, "rb").read()).hexdigest())
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            shutil.copyfile(src, blob)
            dst = os.path.join(storage, "snapshots", commit, os.path.relpath(src, folder))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            _create_symlink(blob, dst, new_blob=False)
    _cache_commit_hash_for_specific_revision(storage, revision, commit)


def test_from_pretrained_reads_the_hub_cache_and_never_downloads_by_default(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("VQJAX_HUB_DOWNLOAD", raising=False)
    tok = image_tokenizer()
    tok.save_pretrained(str(tmp_path / "v1"))
    image_tokenizer(seed=4).save_pretrained(str(tmp_path / "v2"))
    cache = str(tmp_path / "cache")
    _cache_repo(cache, "someone/tiny-image", str(tmp_path / "v1"), "a" * 40, "main")
    _cache_repo(cache, "someone/tiny-image", str(tmp_path / "v2"), "b" * 40, "v2")
    x = _inputs()["image"]
    main = vqjax.Tokenizer.from_pretrained("someone/tiny-image", cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(main.encode(x)), np.asarray(tok.encode(x)))
    tagged = vqjax.Tokenizer.from_pretrained("someone/tiny-image", revision="v2", cache_dir=cache)
    assert fingerprint(tagged) == fingerprint(image_tokenizer(seed=4)) != fingerprint(main)
    with pytest.raises(FileNotFoundError, match=r"neither a folder nor a repository in the hub cache.*"
                                                r"local_files_only=False"):
        vqjax.Tokenizer.from_pretrained("someone/elsewhere", cache_dir=cache)
    # A vocabulary that names its tokenizer by the hub repository resolves it through the same cache.
    from vqjax.lm import MultimodalVocab, default_corpus, train_bpe

    vocab = MultimodalVocab.build(text=train_bpe(default_corpus()[:50], 280), modalities={"image": main})
    vocab.save_pretrained(str(tmp_path / "vocab"), tokenizer_names={"image": "someone/tiny-image"})
    assert not (tmp_path / "vocab" / "tokenizers").exists()
    again = MultimodalVocab.from_pretrained(str(tmp_path / "vocab"), cache_dir=cache)
    assert again.size == vocab.size and fingerprint(again.tokenizer("image")) == fingerprint(main)


def test_the_model_card_holds_the_runs_final_metrics_and_push_to_hub_uploads_the_folder(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    workdir = tmp_path / "run"
    workdir.mkdir()
    tok = image_tokenizer()
    (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 10, "split": "eval", "psnr": 20.0}, {"step": 20, "split": "eval", "psnr": 23.5, "ssim": 0.9},
        {"step": 20, "split": "train", "loss": 0.1})) + "\n")
    tok = type(tok)({**tok.spec, "dataset": "vqjax_mnist"}, tok.model, tok.variables, 20, str(workdir))
    folder = tok.save_pretrained(str(tmp_path / "out"), name="someone/tiny")
    card = open(os.path.join(folder, "README.md")).read()
    assert "library_name: vqjax" in card and "- vqjax_mnist" in card and "| psnr | 23.5 |" in card
    assert "(eval split, step 20)" in card and "someone/tiny" in card
    again = vqjax.Tokenizer.load(folder).save_pretrained(str(tmp_path / "again"))      # the card survives
    assert "| psnr | 23.5 |" in open(os.path.join(again, "README.md")).read()
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, exist_ok)

        def upload_folder(self, folder_path, repo_id, revision=None, commit_message=""):
            calls["files"] = sorted(os.listdir(folder_path))
            return "https://hub.example/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert tok.push_to_hub("someone/tiny", token="t") == "https://hub.example/commit/1"
    assert calls["repo"] == ("someone/tiny", True) and calls["token"] == "t"
    assert calls["files"] == ["README.md", "model.safetensors", "spec.json"]


def test_a_vocabulary_shares_its_tokenizers_and_refuses_a_changed_one(tmp_path):
    from vqjax.lm import Codes, MultimodalVocab, default_corpus, train_bpe

    text_tok = train_bpe(default_corpus()[:100] + ["a cat"], 300)
    image, graph = image_tokenizer(), _graph_tokenizer()
    vocab = MultimodalVocab.build(text=text_tok, modalities={"image": image, "graph": graph})
    vocab.save_pretrained(str(tmp_path / "vocab"))
    again = MultimodalVocab.from_pretrained(str(tmp_path / "vocab"))
    doc = ["a cat", Codes("image", np.asarray(image.encode(_inputs()["image"][:1]))[0]), ("graph", 3)]
    assert again.encode(doc).tolist() == vocab.encode(doc).tolist() and again.size == vocab.size
    image_tokenizer(seed=9).save_pretrained(str(tmp_path / "vocab" / "tokenizers" / "image"))
    with pytest.raises(ValueError, match="'image' tokenizer changed since the vocabulary was saved"):
        MultimodalVocab.from_pretrained(str(tmp_path / "vocab"))
    data = json.load(open(tmp_path / "vocab" / "vocab.json"))
    data["modalities"][0]["source"] = "tokenizers/../../elsewhere"
    json.dump(data, open(tmp_path / "vocab" / "vocab.json", "w"))
    with pytest.raises(ArtifactError, match="leaves the folder"):
        MultimodalVocab.from_pretrained(str(tmp_path / "vocab"))


COMPILED = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("vqjax.models", "vqjax.nn") or name.startswith(("vqjax.models.", "vqjax.nn.")):
            raise ImportError(f"{name} is blocked in this process")

sys.meta_path.insert(0, Block())
import numpy as np
from vqjax.tokenizers import load_compiled
inputs = dict(np.load(sys.argv[2]))
out = {}
for name in sys.argv[3].split(","):
    tok = load_compiled(f"{sys.argv[1]}/{name}")
    for b in (1, len(inputs[name])):
        codes = tok.encode(inputs[name][:b])
        out[f"{name}/codes{b}"] = codes
        out[f"{name}/decoded{b}"] = tok.decode(codes)
    bad = inputs[name].copy()
    bad.flat[0] = np.nan
    try:
        tok.encode(bad)
        raise SystemExit("NaN input was accepted")
    except ValueError as err:
        assert "NaN/Inf" in str(err), err
    try:
        tok.decode(np.full_like(codes, tok.vocab_size))
        raise SystemExit("an out-of-range code was accepted")
    except ValueError as err:
        assert "codes must lie in" in str(err), err
assert not any(m == "vqjax.models" or m.startswith(("vqjax.models.", "vqjax.nn")) for m in sys.modules)
np.savez(sys.argv[4], **out)
"""


def test_the_compiled_export_runs_without_the_model_code_and_matches(tmp_path):
    inputs = _inputs()
    names = ["image", "video", "audio", "timeseries"]
    inputs["audio"] = inputs["audio"][:, :400]                     # one exported chunk of 400 samples (10 frames)
    np.savez(tmp_path / "inputs.npz", **{k: inputs[k] for k in names})
    want = {}
    for name in names:
        tok = MAKERS[name]()
        tok.export_compiled(str(tmp_path / name), length=400 if name == "audio" else None)
        info = json.load(open(tmp_path / name / "compiled.json"))
        assert info["batch"] == "symbolic" and "cpu" in info["platforms"]
        for b in (1, len(inputs[name])):
            codes = np.asarray(_encode(tok, inputs[name][:b]))
            want[f"{name}/codes{b}"], want[f"{name}/decoded{b}"] = codes, np.asarray(tok.decode(codes))
    _run(COMPILED, str(tmp_path), str(tmp_path / "inputs.npz"), ",".join(names), str(tmp_path / "got.npz"))
    got = np.load(tmp_path / "got.npz")
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    with pytest.raises(ValueError, match="maps ids through its table"):
        item_tokenizer().export_compiled(str(tmp_path / "item"))
