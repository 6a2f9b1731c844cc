"""``python -m vqjax.tokenize`` against each of its stages alone, on the same examples, in one run.

For each tokenizer (the MNIST image tokenizer of ``make demo``, ``runs/mnist_vq``, on the bundled MNIST digits;
the spoken-word codec of ``make spoken-words``, ``runs/spoken_words/codec``, on its folder of WAV files):

* ``read``: reading and decoding the examples and preparing them for the tokenizer (the pipeline's grain reader
  threads), alone;
* ``encode``: the bare tokenizer ``encode`` of ready batches held in memory;
* ``write``: serialising the codes into records and writing the shards;
* ``pipeline``: ``vqjax.tokenize``'s local runner (a fresh output folder, its compilations done by an untimed
  run before), records per second after its set-up (opening the tokenizer and the source, the plan), and its
  ratio to the slowest stage (1.0: the stages overlap completely) and to the serial sum of the stages (1.0: no
  overlap at all).

The stages run in a child process with the CLI's defaults (4 grain reader threads); on a CPU the reader threads
and the encoder share the cores and the interpreter lock, so the serial sum is the other bound to read the
pipeline against. ``concurrent`` measures that contention directly: the reader threads and the encoder (on a
ready batch, in a loop) run at the same time for the same examples, each stage's rate while the other runs, and
``cores_used`` = the sum of each rate over its rate alone (2.0 on two cores would be full overlap; 1.0 none).

Memory: the peak RSS of a child process tokenizing a folder of the case's examples as files (MNIST digits
written as PNGs; the spoken words' WAVs) and a folder of ten hard-linked copies of each file, 10x the records in
the same full batches (the pipeline streams, so the peak should stay flat). Each timed figure is the median of
three runs. Ray: the Ray runner with 2 workers on the same data, its shards compared byte for byte with the
local runner's, and its time against the local runner's. The machine's GEMM rate is printed for scale.

    python benchmarks/bench_tokenize.py [--only image|speech] [--no-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gemm_gflops, peak_mb, spawn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "image": {"tokenizer": "runs/mnist_vq", "dataset": None, "split": "train[:10%]", "split10": "train",
              "batch": 256, "shards": 4},
    "speech": {"tokenizer": "runs/spoken_words/codec", "dataset": None, "split": "train[:10%]", "split10": "train",
               "batch": 32, "shards": 4},
}


def _job(case: dict, out: str, split: str):
    from vqjax.tokenize import job_from_workdir

    return job_from_workdir(os.path.join(ROOT, case["tokenizer"]), out, dataset=case["dataset"], split=split,
                            num_shards=case["shards"], batch_size=case["batch"])


def stages(case: dict, work: str, read_threads: int) -> dict:
    """Each stage alone and the pipeline, records per second, on the same examples."""
    from vqjax.data import tokens
    from vqjax.lm.shards import _examples, preparer, run_local

    job = dataclasses.replace(_job(case, os.path.join(work, "pipeline"), case["split10"]), read_threads=read_threads)
    tok, source = job.open_tokenizer(), job.source()
    prep = preparer(tok)
    n = len(source)

    t = time.perf_counter()
    ready = [r for _, ex, r in _examples(source, 0, n, job.read_threads, prep.prepare) if ex is not None]
    read = time.perf_counter() - t

    batches = [ready[s:s + job.batch_size] for s in range(0, len(ready), job.batch_size)]
    for b in batches:                                            # compile every batch shape outside the timing
        prep.encode(tok, b)
    t = time.perf_counter()
    codes = [c for b in batches for c in prep.encode(tok, b)]
    encode = time.perf_counter() - t

    t = time.perf_counter()
    per = -(-len(codes) // job.num_shards)
    os.makedirs(os.path.join(work, "write"), exist_ok=True)
    for s in range(job.num_shards):
        records = (tokens.encode_record(c, key=str(i), length=c.shape[0] if prep.varies else None)
                   for i, c in enumerate(codes[s * per:(s + 1) * per]))
        tokens.write_shard(os.path.join(work, "write", tokens.shard_name(s, job.num_shards)), records)
    write = time.perf_counter() - t

    concurrent = _concurrent(source, n, job, prep, tok, batches[0])

    run_local(dataclasses.replace(job, out=os.path.join(work, "warm")), progress=False)     # compiles, untimed
    summary = run_local(job, progress=False)
    pipe = summary["seconds"] - summary["setup_seconds"]
    toks = summary["tokens"]
    rate = {"read": n / read, "encode": n / encode, "write": n / write, "pipeline": n / pipe}
    slowest = min(rate["read"], rate["encode"], rate["write"])
    serial = n / (read + encode + write)
    return {"records": n, "tokens": toks, **{f"{k}_rec_s": round(v, 1) for k, v in rate.items()},
            "pipeline_tok_s": round(toks / pipe, 1), "setup_s": summary["setup_seconds"],
            "serial_rec_s": round(serial, 1), "pipeline_over_slowest": round(rate["pipeline"] / slowest, 3),
            "pipeline_over_serial": round(rate["pipeline"] / serial, 3),
            "concurrent_read_rec_s": round(concurrent["read"], 1), "concurrent_encode_rec_s":
                round(concurrent["encode"], 1),
            "cores_used": round(concurrent["read"] / rate["read"] + concurrent["encode"] / rate["encode"], 3)}


def _concurrent(source, n: int, job, prep, tok, batch) -> dict:
    """Records per second of reading (the pipeline's reader threads) and of encoding (``batch`` again and again,
    in another thread) while both run."""
    import threading

    from vqjax.lm.shards import _examples

    stop, counts = threading.Event(), {"encode": 0}

    def encode():
        while not stop.is_set():
            prep.encode(tok, batch)
            counts["encode"] += len(batch)

    worker = threading.Thread(target=encode)
    t = time.perf_counter()
    worker.start()
    read = sum(1 for _ in _examples(source, 0, n, job.read_threads, prep.prepare))
    seconds = time.perf_counter() - t
    stop.set()
    worker.join()
    return {"read": read / seconds, "encode": counts["encode"] / (time.perf_counter() - t)}


def child(what: str, case_name: str, arg: str, work: str) -> None:
    if what == "stages":
        runs = [stages(CASES[case_name], os.path.join(work, str(r)), int(arg)) for r in range(3)]
        print(json.dumps({k: float(np.median([r[k] for r in runs])) for k in runs[0]}))
        return
    from vqjax.tokenize import TokenizeJob, run_local

    case = CASES[case_name]
    files = dict(_job(case, work, case["split"]).files_options or {})
    run_local(TokenizeJob(tokenizer=os.path.join(ROOT, case["tokenizer"]), dataset=f"files:{arg}", split="train",
                          out=os.path.join(work, "out"), data_dir=os.path.join(work, "data_dir"),
                          files_options=files or None, num_shards=4, batch_size=case["batch"]), progress=False)
    print(json.dumps({"peak_mb": round(peak_mb(), 1)}))


def _file_folders(case_name: str, work: str) -> tuple[str, str]:
    """A folder of the case's examples as files, and one holding ten hard links of each (10x the records)."""
    from PIL import Image

    case = CASES[case_name]
    one, ten = os.path.join(work, "files_1x"), os.path.join(work, "files_10x")
    os.makedirs(one, exist_ok=True)
    job = _job(case, work, case["split10"])
    if job.dataset.startswith("files:"):
        from vqjax.data.files import resolve

        root, rel = resolve(job.dataset[len("files:"):])
        for n, r in enumerate(rel):
            os.link(os.path.join(root, r), os.path.join(one, f"{n:06d}{os.path.splitext(r)[1]}"))
    else:
        source = job.source()
        for i in range(len(source)):
            Image.fromarray(np.asarray(source[i]["image"])[..., 0]).save(os.path.join(one, f"{i:06d}.png"))
    for k in range(10):
        os.makedirs(os.path.join(ten, str(k)), exist_ok=True)
        for name in os.listdir(one):
            os.link(os.path.join(one, name), os.path.join(ten, str(k), name))
    return one, ten


def _spawn(args: list[str]) -> dict:
    return spawn(os.path.abspath(__file__), args, 3600)


def memory(case_name: str, work: str) -> dict:
    out = {}
    folders = _file_folders(case_name, work)
    for tag, folder in zip(("1x", "10x"), folders):
        got = _spawn(["memory", case_name, folder, os.path.join(work, f"mem_{tag}")])
        out[f"peak_mb_{tag}"] = got.get("peak_mb", got.get("error"))
    if isinstance(out["peak_mb_1x"], float) and isinstance(out["peak_mb_10x"], float):
        out["peak_ratio"] = round(out["peak_mb_10x"] / out["peak_mb_1x"], 3)
    return out


def ray_against_local(case_name: str, work: str) -> dict:
    import ray

    from vqjax.data import tokens
    from vqjax.tokenize import run_local, run_ray

    case = CASES[case_name]
    local_job = _job(case, os.path.join(work, "ray_local"), case["split10"])
    t = time.perf_counter()
    run_local(local_job, progress=False)
    local = time.perf_counter() - t
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray_job = _job(case, os.path.join(work, "ray_ray"), case["split10"])
        t = time.perf_counter()
        run_ray(ray_job, num_workers=2, progress=False)
        remote = time.perf_counter() - t
    finally:
        ray.shutdown()
    names = [tokens.shard_name(s, case["shards"]) for s in range(case["shards"])]
    same = all(open(os.path.join(local_job.out, f), "rb").read() == open(os.path.join(ray_job.out, f), "rb").read()
               for f in names)
    return {"local_s": round(local, 2), "ray_2_workers_s": round(remote, 2), "ray_over_local": round(remote / local, 2),
            "identical_shards": same}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=sorted(CASES), default=None)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.child:
        child(*args.rest)
        return
    results = {"gemm_gflops": gemm_gflops(), "cpus": os.cpu_count()}
    for name in [args.only] if args.only else sorted(CASES):
        if not os.path.exists(os.path.join(ROOT, CASES[name]["tokenizer"], "spec.json")):
            print(f"skipping {name}: train {CASES[name]['tokenizer']} first (make demo / make spoken-words)")
            continue
        work = tempfile.mkdtemp(prefix=f"bench_tokenize_{name}_")
        try:
            results[name] = _spawn(["stages", name, "4", os.path.join(work, "stages")])
            results[name].update(memory(name, work))
            if not args.no_ray and importlib.util.find_spec("ray") is not None:
                results[name].update(ray_against_local(name, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({name: results[name]}), flush=True)
    print(f"\nGEMM {results['gemm_gflops']} GFLOP/s on {results['cpus']} CPUs")
    print("| tokenizer | records | read rec/s | encode rec/s | write rec/s | serial rec/s | pipeline rec/s "
          "| pipeline / slowest | pipeline / serial | read / encode rec/s at the same time | cores used |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in sorted(CASES):
        r = results.get(name)
        if r and "error" not in r:
            print(f"| {name} | {int(r['records'])} | {r['read_rec_s']} | {r['encode_rec_s']} | {r['write_rec_s']} | "
                  f"{r['serial_rec_s']} | {r['pipeline_rec_s']} | {r['pipeline_over_slowest']} | "
                  f"{r['pipeline_over_serial']} | {r['concurrent_read_rec_s']} / {r['concurrent_encode_rec_s']} | "
                  f"{r['cores_used']} |")
        elif r:
            print(f"| {name} | {r['error']} |")
    print("\n| tokenizer | peak RSS MB 1x / 10x records | Ray 2 workers / local time | identical shards |")
    print("|---|---|---|---|")
    for name in sorted(CASES):
        r = results.get(name)
        if r:
            print(f"| {name} | {r.get('peak_mb_1x')} / {r.get('peak_mb_10x')} | {r.get('ray_over_local', '-')} | "
                  f"{r.get('identical_shards', '-')} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
