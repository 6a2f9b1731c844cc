"""The compiled export (``tok.export_compiled`` + ``vqjax.tokenizers.load_compiled``) against the Python tokenizer,
same weights, same batches, one run: encode and decode time per batch (median of 20 after a warm-up), the
exported files' sizes, the time to load each, and whether codes and reconstructions are identical.

    python benchmarks/bench_compiled.py [--tokenizer runs/mnist_vq] [--batch 256] [--json out.json]

The tokenizer defaults to the MNIST tokenizer ``make demo`` trains; the batch is MNIST test digits (any image
tokenizer: uniform noise of its input shape when its dataset is not at hand). The machine's GEMM rate is printed
for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gemm_gflops, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=os.path.join(ROOT, "runs", "mnist_vq"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import jax

    import vqjax
    from vqjax.tokenizers import load_compiled

    if not os.path.exists(os.path.join(args.tokenizer, "spec.json")):
        print(f"train {args.tokenizer} first (make demo)")
        return
    t = time.perf_counter()
    tok = vqjax.Tokenizer.load(args.tokenizer)
    load_python = time.perf_counter() - t
    shape = tok.input_shape
    try:
        from vqjax.data import pipeline
        from vqjax.train.config import default_data_dir

        source = pipeline.get_source(tok.spec.get("dataset") or "vqjax_mnist", "test", default_data_dir())
        x = np.stack([np.asarray(source[i]["image"]) for i in range(args.batch)]).astype(np.float32) / 255.0
    except Exception:  # no dataset at hand: noise of the input shape times the same computation
        x = np.random.default_rng(0).uniform(0, 1, (args.batch, *shape)).astype(np.float32)
    folder = tempfile.mkdtemp(prefix="bench_compiled_")
    t = time.perf_counter()
    tok.export_compiled(folder)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    ctok = load_compiled(folder)
    load_compiled_s = time.perf_counter() - t

    def py_encode():
        return jax.block_until_ready(tok.encode(x))

    codes = np.asarray(py_encode())
    ccodes = ctok.encode(x)

    def py_decode():
        return jax.block_until_ready(tok.decode(codes))

    ctok.decode(ccodes)
    result = {
        "tokenizer": args.tokenizer, "batch": args.batch, "gemm_gflops": gemm_gflops(),
        "python_encode_ms": 1e3 * timed(py_encode, 20), "compiled_encode_ms": 1e3 * timed(lambda: ctok.encode(x), 20),
        "python_decode_ms": 1e3 * timed(py_decode, 20),
        "compiled_decode_ms": 1e3 * timed(lambda: ctok.decode(codes), 20),
        "identical_codes": bool(np.array_equal(codes, ccodes)),
        "identical_decodes": bool(np.array_equal(np.asarray(tok.decode(codes)), ctok.decode(codes))),
        "load_python_s": load_python, "load_compiled_s": load_compiled_s, "export_s": export_s,
        "exported_kb": {f: round(os.path.getsize(os.path.join(folder, f)) / 1024, 1) for f in sorted(os.listdir(folder))},
        "batch_axis": ctok.info["batch"], "platforms": ctok.info["platforms"],
    }
    for op in ("encode", "decode"):
        result[f"compiled_over_python_{op}"] = round(result[f"compiled_{op}_ms"] / result[f"python_{op}_ms"], 3)
    print(json.dumps(result, indent=1))
    print(f"\n| op | Python tokenizer ms / batch of {args.batch} | compiled export ms | compiled / Python |")
    print("|---|---|---|---|")
    for op in ("encode", "decode"):
        print(f"| {op} | {result[f'python_{op}_ms']:.2f} | {result[f'compiled_{op}_ms']:.2f} | "
              f"{result[f'compiled_over_python_{op}']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
