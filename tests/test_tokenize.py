"""python -m vqjax.tokenize: files -> shards -> read back equals tok.encode for every modality; reruns complete
only missing shards; another tokenizer's folder is refused; the Ray runner (2 workers, one killed) writes the
local runner's bytes, and so do two processes of the jax runner."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from experiments_loader import subprocess_env
from media_files import write_video
from PIL import Image
from tiny_tokenizers import audio_tokenizer, image_tokenizer, timeseries_tokenizer, video_tokenizer

from vqjax.data import audio as audio_data
from vqjax.data import files, tokens
from vqjax.tokenize import TokenizeJob, run_local, tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(folder, n, size=8, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L").save(folder / f"im{i:03d}.png")
        if i % 3 == 0:
            (folder / f"im{i:03d}.txt").write_text(f"picture {i}")
    (folder / "corrupt.png").write_bytes(b"\x89PNG broken")


def _job(tmp_path, tok_dir, data, out="out", **kw):
    return TokenizeJob(tokenizer=str(tok_dir), dataset=f"files:{data}", split="train", out=str(tmp_path / out),
                       data_dir=str(tmp_path / "data_dir"), **kw)


def _records(out):
    shards = tokens.TokenShards(str(out), verify=True)
    return shards, [shards[i] for i in range(len(shards))]


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok_image")
    tok = image_tokenizer()
    tok.export(str(tmp / "tok"))
    _images(tmp / "imgs", 23)
    return tmp, tok


def test_image_shards_equal_encode_and_rerun_completes_only_missing(image_setup, tmp_path):
    base, tok = image_setup
    job = _job(tmp_path, base / "tok", base / "imgs", num_shards=3, batch_size=4)
    summary = run_local(job, progress=False)
    assert summary["records"] == 23 and summary["shards_written"] == 3 and summary["tokens"] == 23 * 16
    shards, recs = _records(job.out)
    manifest = shards.manifest
    assert manifest["complete"] and manifest["modality"] == "image" and manifest["vqjax_version"]
    assert manifest["vocab_size"] == 16 and manifest["codes_shape"] == [4, 4]
    assert manifest["dataset"] == f"files:{base / 'imgs'}" and manifest["split"] == "train"
    assert [e["records"] for e in manifest["shards"]] == [8, 7, 8] and len(manifest["shards"][0]["sha256"]) == 64
    assert sorted(os.listdir(job.out)) == ["manifest.json"] + [tokens.shard_name(s, 3) for s in range(3)]
    source = files.file_source(str(base / "imgs"), "train", data_dir=job.data_dir, progress=False)
    assert [r["key"] for r in recs] == [source.key(i) for i in range(len(source))]
    images = np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float32) / 255
    np.testing.assert_array_equal(np.stack([r["codes"] for r in recs]), np.asarray(tok.encode(images)))
    assert recs[0]["caption"] == "picture 0" and "caption" not in recs[1] and "length" not in recs[0]

    # as a kill leaves it: shard 1 half written under its temporary name, its final file absent
    before = {f: os.stat(os.path.join(job.out, f)).st_mtime_ns for f in os.listdir(job.out) if "00001" not in f}
    data = open(os.path.join(job.out, tokens.shard_name(1, 3)), "rb").read()
    os.remove(os.path.join(job.out, tokens.shard_name(1, 3)))
    with open(os.path.join(job.out, tokens.shard_name(1, 3) + ".partial"), "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(FileNotFoundError, match="missing"):
        tokens.TokenShards(job.out)
    again = run_local(job, progress=False)
    assert again["shards_written"] == 1 and again["shards_skipped"] == 2
    assert open(os.path.join(job.out, tokens.shard_name(1, 3)), "rb").read() == data
    assert not [f for f in os.listdir(job.out) if f.endswith(".partial")]
    for f, t in before.items():
        if f != "manifest.json":
            assert os.stat(os.path.join(job.out, f)).st_mtime_ns == t, f
    assert _records(job.out)[0].manifest["shards"] == manifest["shards"]

    # another tokenizer's folder, or another split into it, is refused
    other = image_tokenizer(seed=1)
    other.export(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="another tokenizer"):
        run_local(_job(tmp_path, tmp_path / "other", base / "imgs", num_shards=3, batch_size=4), progress=False)
    with pytest.raises(ValueError, match="source split"):
        run_local(TokenizeJob(**{**job.__dict__, "split": "train[:50%]"}), progress=False)


def test_audio_shards_hold_lengths_and_captions(tmp_path):
    import soundfile

    tok = audio_tokenizer()
    tok.export(str(tmp_path / "tok"))
    data = tmp_path / "speech"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i, seconds in enumerate([0.05, 0.12, 0.2, 0.07, 0.3]):
        soundfile.write(str(data / f"c{i}.wav"), (0.2 * rng.standard_normal(int(22050 * seconds))).astype(np.float32),
                        22050)
        (data / f"c{i}.txt").write_text(f"word {i}")
    job = _job(tmp_path, tmp_path / "tok", data, num_shards=2, batch_size=2,
               files_options={"sample_rate": 16000})
    run_local(job, progress=False)
    _, recs = _records(job.out)
    source = files.file_source(str(data), "train", data_dir=job.data_dir, options={"sample_rate": 16000},
                               progress=False)
    for i, rec in enumerate(recs):
        example = source[i]
        wave = audio_data.prepare_example(example, sample_rate=16000, target_db=None)["audio"][:, 0]
        want = np.asarray(tok.encode(wave[None], sample_rate=16000))[0]
        np.testing.assert_array_equal(rec["codes"], want)
        assert rec["length"] == want.shape[0] and rec["caption"] == example["caption"]
        assert (rec["codes"] >= 0).all()


def test_video_and_timeseries_shards_equal_encode(tmp_path):
    import pandas as pd

    vtok, ttok = video_tokenizer(), timeseries_tokenizer()
    vtok.export(str(tmp_path / "vtok"))
    ttok.export(str(tmp_path / "ttok"))
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(clips / f"s{i}.npy", rng.normal(size=(20 + 8 * i, 2)).astype(np.float32))
    pd.DataFrame({"a": rng.normal(size=33), "b": rng.normal(size=33)}).to_csv(clips / "t.csv", index=False)
    job = _job(tmp_path, tmp_path / "ttok", clips, out="ts", num_shards=2, batch_size=3)
    run_local(job, progress=False)
    _, recs = _records(job.out)
    source = files.file_source(str(clips), "train", data_dir=job.data_dir, progress=False)
    for i, rec in enumerate(recs):
        x = source[i]["signal"]
        x = x[: (x.shape[0] // 4) * 4]
        np.testing.assert_array_equal(rec["codes"], np.asarray(ttok.encode(x[None]))[0])
        assert rec["length"] == x.shape[0] // 4

    pytest.importorskip("av")
    vids = tmp_path / "vids"
    vids.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(vids / name, rng.integers(0, 255, (11, 16, 16, 3), dtype=np.uint8), rate=10)
    options = {"clip_frames": 5, "channels": 1}
    job = _job(tmp_path, tmp_path / "vtok", vids, out="video", files_options=options, batch_size=2)
    run_local(job, progress=False)
    _, recs = _records(job.out)
    source = files.file_source(str(vids), "train", data_dir=job.data_dir, options=options, progress=False)
    assert [r["key"] for r in recs] == ["a.mp4#0", "a.mp4#1", "b.mp4#0", "b.mp4#1"]
    want = np.asarray(vtok.encode(np.stack([source[i]["video"] for i in range(4)])))
    np.testing.assert_array_equal(np.stack([r["codes"] for r in recs]), want)


def test_id_tokenizers_write_every_id_by_default(tmp_path):
    """A graph tokenizer reads --dataset=ids (its default): one record per node, keyed by the node id, equal to
    tok.encode of the ids; an image tokenizer asked for ids is refused."""
    from vqjax.graph import Graph, NodePieceVocab
    from vqjax.tokenize import job_from_workdir
    from vqjax.tokenizers import GraphTokenizer

    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 40, 120), rng.integers(0, 3, 120), rng.integers(0, 40, 120)], 1)
    graph = Graph.from_triples(triples, num_nodes=40, num_relations=3)
    vocab = NodePieceVocab.build(graph, num_anchors=6, anchors_per_node=3, relations_per_node=2, seed=0)
    GraphTokenizer.from_tokens(vocab, vocab.tokenize(graph)).export(str(tmp_path / "gtok"))
    tok = GraphTokenizer.load(str(tmp_path / "gtok"))
    job = job_from_workdir(str(tmp_path / "gtok"), str(tmp_path / "out"), data_dir=str(tmp_path), num_shards=3)
    assert (job.dataset, job.split) == ("ids", "all")
    assert run_local(job, progress=False)["records"] == 40
    _, recs = _records(job.out)
    assert [r["key"] for r in recs] == [str(i) for i in range(40)]
    np.testing.assert_array_equal(np.stack([r["codes"] for r in recs]), tok.encode(np.arange(40)))
    image_tokenizer().export(str(tmp_path / "itok"))
    with pytest.raises(ValueError, match="the ids of a graph or item tokenizer"):
        run_local(TokenizeJob(tokenizer=str(tmp_path / "itok"), dataset="ids", split="all",
                              out=str(tmp_path / "x"), data_dir=str(tmp_path)), progress=False)


def test_cli_writes_shards_and_refuses_a_foreign_out(image_setup, tmp_path):
    base, _ = image_setup
    args = [sys.executable, "-m", "vqjax.tokenize", f"--tokenizer={base / 'tok'}", f"--dataset=files:{base / 'imgs'}",
            "--split=train[:60%]", f"--out={tmp_path / 'cli'}", f"--data_dir={tmp_path / 'd'}", "--num_shards=2",
            "--batch_size=4", "--noprogress"]
    done = subprocess.run(args, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["shards_written"] == 2 and summary["records"] == len(tokens.TokenShards(str(tmp_path / "cli")))
    image_tokenizer(seed=3).export(str(tmp_path / "t3"))
    bad = subprocess.run([a if not a.startswith("--tokenizer=") else f"--tokenizer={tmp_path / 't3'}" for a in args],
                         cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "another tokenizer" in bad.stderr


def test_ray_runner_with_a_killed_worker_writes_the_local_bytes(image_setup, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra")
    base, _ = image_setup
    local = _job(tmp_path, base / "tok", base / "imgs", out="local", num_shards=4, batch_size=4)
    run_local(local, progress=False)
    marker = str(tmp_path / "killed_once")

    def dies_once(job, index, **kw):
        from vqjax.tokenize import tokenize_shard

        if index == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)                                    # the worker process dies in the middle of its shard
        return tokenize_shard(job, index, **kw)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {k: subprocess_env()[k] for k in ("JAX_PLATFORMS", "XLA_FLAGS")}})
    try:
        job = TokenizeJob(**{**local.__dict__, "out": str(tmp_path / "ray")})
        summary = tokenize(job, "ray", num_workers=2, shard_fn=dies_once, progress=False)
    finally:
        ray.shutdown()
    # Ray retries at least once: a shard whose result was lost with its worker may come back as already written
    assert os.path.exists(marker) and summary["shards_written"] + summary["shards_skipped"] == 4
    assert summary["shards_written"] >= 1 and summary["records"] == len(tokens.TokenShards(str(tmp_path / "local")))
    for s in range(4):
        name = tokens.shard_name(s, 4)
        assert open(tmp_path / "ray" / name, "rb").read() == open(tmp_path / "local" / name, "rb").read()
    a = json.load(open(tmp_path / "ray" / "manifest.json"))
    b = json.load(open(tmp_path / "local" / "manifest.json"))
    assert a["shards"] == b["shards"] and a["tokens"] == b["tokens"]


def test_jax_runner_two_processes_write_the_local_bytes(image_setup, tmp_path):
    import socket

    base, _ = image_setup
    local = _job(tmp_path, base / "tok", base / "imgs", out="local", num_shards=3, batch_size=4)
    run_local(local, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "vqjax.tokenize", f"--tokenizer={base / 'tok'}", f"--dataset=files:{base / 'imgs'}",
            "--split=train", f"--out={tmp_path / 'jax'}", f"--data_dir={local.data_dir}", "--num_shards=3",
            "--batch_size=4", "--noprogress", "--runner=jax", "--distributed", f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2"]
    logs = [open(tmp_path / f"p{i}.txt", "w") for i in range(2)]
    procs = [subprocess.Popen(args + [f"--process_id={i}"], cwd=ROOT, env=subprocess_env(), stdout=logs[i],
                              stderr=subprocess.STDOUT) for i in range(2)]
    try:
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p, log in zip(procs, logs):
            if p.poll() is None:
                p.kill()
            log.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"p{i}.txt").read_text()[-2000:]
    for s in range(3):
        name = tokens.shard_name(s, 3)
        assert (tmp_path / "jax" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    jax_manifest = json.loads((tmp_path / "jax" / "manifest.json").read_text())
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert jax_manifest["complete"] and jax_manifest["shards"] == local_manifest["shards"]


def test_a_killed_cli_run_resumes_with_only_the_missing_shards(image_setup, tmp_path):
    import signal
    import time

    base, _ = image_setup
    reference = _job(tmp_path, base / "tok", base / "imgs", out="reference", num_shards=23, batch_size=1)
    run_local(reference, progress=False)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "vqjax.tokenize", f"--tokenizer={base / 'tok'}", f"--dataset=files:{base / 'imgs'}",
            "--split=train", f"--out={out}", f"--data_dir={reference.data_dir}", "--num_shards=23", "--batch_size=1",
            "--noprogress"]
    proc = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and any(f.endswith(".array_record") for f in os.listdir(out)):
            proc.send_signal(signal.SIGKILL)                 # as soon as the first shard is complete
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    done_before = {f for f in os.listdir(out) if f.endswith(".array_record")}
    assert done_before and not json.loads((out / "manifest.json").read_text())["complete"] or proc.returncode == 0
    again = subprocess.run(args, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["shards_written"] == 23 - len(done_before) and summary["shards_skipped"] == len(done_before)
    for s in range(23):
        name = tokens.shard_name(s, 23)
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]
