"""VQ train step: vqjax next to vector-quantize-pytorch (CPU torch), and against the machine's GEMM floor.

One train step = forward (nearest-code search), backward (gradient to the input through the straight-through
estimator plus the commitment loss) and the EMA codebook update, at N=16384 tokens, for (D=256, K=4096) and
(D=64, K=65536). Every configuration runs in its own subprocess so that peak memory is the process's own:
``peak MB`` is the growth of the peak resident set over the steps (ru_maxrss after minus RSS before the first
step); for vqjax the XLA buffer assignment of the compiled step is printed too. The GEMM floor is numpy's
``x @ c.T`` of the same shapes in chunks of 1024 codes with a running row minimum (what the search computes,
without the index bookkeeping, and without writing the whole ``N x K`` product), timed in the same run;
``search/GEMM`` is the fraction of that throughput the vqjax nearest-code search reaches.

    python benchmarks/bench_vq.py [--steps 5] [--only vqjax] [--json out.json]

The peer is vector-quantize-pytorch 1.32 (``pip install 'vqjax[bench]'``); it is run with its defaults for an
EMA codebook (``decay=0.8``, ``commitment_weight=1``) and ``rotation_trick=False`` (its default is the rotation
trick; vqjax's step here is straight-through), and vqjax with the same. A peer run that dies for memory
(it builds N x K matrices) is reported as such; its address space is capped at ``--peer-mem-gb``.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import cap_memory, gemm_floor_ms, peak_mb, rss_mb, spawn, timed

SHAPES = [(16384, 256, 4096), (16384, 64, 65536)]








def run_vqjax(n, d, k, steps):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vqjax import search
    from vqjax.nn import STATS, VectorQuantizer

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    module = VectorQuantizer(k, d, codebook_learning="ema", decay=0.8, beta=1.0)
    variables = module.init(jax.random.key(0), x[:8])

    def step(variables, x):
        def loss(x):
            q, upd = module.apply(variables, x, train=True, mutable=[STATS])
            return jnp.sum(q.values) + q.loss, upd
        grad, upd = jax.grad(loss, has_aux=True)(x)
        return grad, {**variables, **upd}

    jitted = jax.jit(step, donate_argnums=0)
    compiled_mem = jax.jit(step).lower(variables, x).compile().memory_analysis()
    base = rss_mb()
    t0 = time.perf_counter()
    grad, variables = jitted(variables, x)
    jax.block_until_ready(grad)
    first = time.perf_counter() - t0

    def one():
        nonlocal variables
        grad, variables = jitted(variables, x)
        jax.block_until_ready(grad)

    step_s = timed(one, steps)
    search_fn = jax.jit(lambda x, c: search.nearest_code(x, c).codes)
    cb = variables[STATS]["codebook_state"].codebook
    search_fn(x, cb).block_until_ready()
    search_s = timed(lambda: search_fn(x, cb).block_until_ready(), steps)
    xla_mb = None if compiled_mem is None else (compiled_mem.temp_size_in_bytes + compiled_mem.argument_size_in_bytes
                                                + compiled_mem.output_size_in_bytes) / 2**20
    return dict(step_ms=step_s * 1e3, search_ms=search_s * 1e3, first_call_s=first,
                compile_s=first - step_s, peak_mb=peak_mb() - base, xla_mb=xla_mb)


def run_peer(n, d, k, steps):
    import torch
    from vector_quantize_pytorch import VectorQuantize

    torch.manual_seed(0)
    x = torch.randn(1, n, d)
    # Same estimator as vqjax's step (straight-through): the peer defaults to the rotation trick.
    vq = VectorQuantize(dim=d, codebook_size=k, decay=0.8, commitment_weight=1.0, rotation_trick=False)
    vq.train()
    base = rss_mb()

    def one():
        xin = x.clone().requires_grad_(True)
        quantized, _, loss = vq(xin)
        (quantized.sum() + loss.sum()).backward()

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    step_s = timed(one, steps)
    return dict(step_ms=step_s * 1e3, first_call_s=first, peak_mb=peak_mb() - base)


def run_gemm(n, d, k, steps):
    """The floor (:func:`_common.gemm_floor_ms`)."""
    return dict(gemm_ms=gemm_floor_ms(n, d, k, steps))


RUNNERS = {"vqjax": run_vqjax, "vector-quantize-pytorch": run_peer, "numpy GEMM": run_gemm}


def _child(name, n, d, k, steps, mem_gb):
    cap_memory(mem_gb)
    print(json.dumps(RUNNERS[name](n, d, k, steps)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", choices=sorted(RUNNERS), action="append")
    parser.add_argument("--peer-mem-gb", type=float, default=20.0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, n, d, k, steps, mem = args.child
        _child(name, int(n), int(d), int(k), int(steps), float(mem))
        return

    names = args.only or ["numpy GEMM", "vqjax", "vector-quantize-pytorch"]
    rows = []
    for n, d, k in SHAPES:
        res = {}
        for name in names:
            mem = args.peer_mem_gb if name == "vector-quantize-pytorch" else 0
            res[name] = spawn(__file__, [name, str(n), str(d), str(k), str(args.steps), str(mem)], args.timeout)
            print(f"N={n} D={d} K={k} {name}: {res[name]}", flush=True)
        rows.append({"N": n, "D": d, "K": k, **res})

    print(f"\n{'shape':24s} {'vqjax ms':>9s} {'peer ms':>9s} {'speed-up':>9s} {'GEMM ms':>8s} {'search/GEMM':>11s} "
          f"{'step/GEMM':>9s} {'vqjax MB':>9s} {'XLA MB':>7s} {'peer MB':>8s} {'compile s':>9s}")
    for row in rows:
        v, p, g = row.get("vqjax", {}), row.get("vector-quantize-pytorch", {}), row.get("numpy GEMM", {})
        fmt = lambda r, key, f="{:.0f}": f.format(r[key]) if r.get(key) is not None else "-"
        speed = f"{p['step_ms'] / v['step_ms']:.1f}x" if "step_ms" in p and "step_ms" in v else (
            "peer died" if "error" in p else "-")
        search_frac = f"{g['gemm_ms'] / v['search_ms']:.2f}" if "gemm_ms" in g and "search_ms" in v else "-"
        step_frac = f"{g['gemm_ms'] / v['step_ms']:.2f}" if "gemm_ms" in g and "step_ms" in v else "-"
        print(f"N={row['N']} D={row['D']} K={row['K']:<6d} {fmt(v, 'step_ms'):>9s} {fmt(p, 'step_ms'):>9s} "
              f"{speed:>9s} {fmt(g, 'gemm_ms'):>8s} {search_frac:>11s} {step_frac:>9s} {fmt(v, 'peak_mb'):>9s} "
              f"{fmt(v, 'xla_mb'):>7s} {fmt(p, 'peak_mb') if 'error' not in p else 'died':>8s} "
              f"{fmt(v, 'compile_s', '{:.2f}'):>9s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
