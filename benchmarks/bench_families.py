"""Train steps of the quantizer families: vqjax next to vector-quantize-pytorch 1.32 (CPU torch), same shapes,
same run.

One train step = forward, backward to the input (straight-through plus the auxiliary losses) and, for RVQ, the
EMA codebook update. Each configuration runs in its own subprocess so that ``peak MB`` is that process's own
growth of the peak resident set during the steps (the peer's address space is capped at ``--peer-mem-gb``; a
peer that dies for memory is reported as such). ``compile s`` is vqjax's lower-and-compile time of the step.

    python benchmarks/bench_families.py [--steps 3] [--only fsq lfq14] [--json out.json]

Configurations (the issue's): FSQ levels (8,8,8,5,5,5) at 65536 tokens; LFQ with 2^14 codes at 16384 tokens,
2^16 codes at 4096 and 16384 tokens, 2^18 codes at 16384 tokens, entropy weight 0.1; RVQ 8 x 1024 codes,
D=128, EMA codebooks, at 16384 tokens. vector-quantize-pytorch computes the exact codebook entropy over all 2^d
codes. vqjax's LFQ rows without a suffix use its default factorised (grouped) entropy documented in
``vqjax.quantizers.lfq``; the ``_exact`` rows use ``entropy_group_size=None``, the exact entropy computed in
memory-bounded chunks: those are the like-for-like comparison. Both peers run straight-through (for RVQ the peer's
default rotation trick is switched off).
"""

from __future__ import annotations

import argparse
import json
import time

from _common import cap_memory, gemm_floor_ms, peak_mb, rss_mb, spawn, timed

CONFIGS = {
    "fsq": dict(kind="fsq", n=65536, levels=(8, 8, 8, 5, 5, 5)),
    "lfq14": dict(kind="lfq", n=16384, bits=14),
    "lfq14_exact": dict(kind="lfq", n=16384, bits=14, exact=True),
    "lfq16_4k": dict(kind="lfq", n=4096, bits=16),
    "lfq16_4k_exact": dict(kind="lfq", n=4096, bits=16, exact=True),
    "lfq16_16k": dict(kind="lfq", n=16384, bits=16),
    "lfq18": dict(kind="lfq", n=16384, bits=18),
    "rvq": dict(kind="rvq", n=16384, dim=128, levels=8, codes=1024),
}








def run_vqjax(cfg, steps):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import vqjax
    from vqjax.nn import STATS, ResidualVQ

    rng = np.random.default_rng(0)
    if cfg["kind"] == "rvq":
        x = jnp.asarray(rng.normal(size=(cfg["n"], cfg["dim"])), jnp.float32)
        module = ResidualVQ(cfg["levels"], cfg["codes"], cfg["dim"], codebook_learning="ema", decay=0.8, beta=1.0)
        state = module.init(jax.random.key(0), x[:8])

        def step(state, x):
            def loss(x):
                q, upd = module.apply(state, x, train=True, mutable=[STATS])
                return jnp.sum(q.values) + q.loss, upd
            grad, upd = jax.grad(loss, has_aux=True)(x)
            return grad, {**state, **upd}
    else:
        width = len(cfg["levels"]) if cfg["kind"] == "fsq" else cfg["bits"]
        x = jnp.asarray(rng.normal(size=(cfg["n"], width)), jnp.float32)
        state = None
        if cfg["kind"] == "fsq":
            quantize = lambda x: vqjax.fsq(x, cfg["levels"])
        else:
            group = None if cfg.get("exact") else 8          # None: the exact entropy over all 2^d codes
            quantize = lambda x: vqjax.lfq(x, entropy_weight=0.1, entropy_group_size=group)

        def step(state, x):
            def loss(x):
                q = quantize(x)
                return jnp.sum(q.values) + q.loss
            return jax.grad(loss)(x), state

    jitted = jax.jit(step)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(state, x).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    base = rss_mb()
    t0 = time.perf_counter()
    grad, state = jitted(state, x)
    jax.block_until_ready(grad)
    first = time.perf_counter() - t0

    def one():
        nonlocal state
        grad, state = jitted(state, x)
        jax.block_until_ready(grad)

    step_s = timed(one, steps)
    extra = {}
    if cfg["kind"] == "rvq":
        # The 8 greedy nearest-code searches alone, against the floor of 8 chunked GEMMs with a running minimum.
        from vqjax.quantizers.multisearch import greedy_encode
        books = jnp.stack([state[STATS][f"level_{i}"]["codebook_state"].codebook for i in range(cfg["levels"])])
        encode = jax.jit(greedy_encode)
        encode(x, books).block_until_ready()
        extra["search_ms"] = timed(lambda: encode(x, books).block_until_ready(), steps) * 1e3
    xla_mb = None if mem is None else (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                       + mem.output_size_in_bytes) / 2**20
    return dict(step_ms=step_s * 1e3, first_call_s=first, compile_s=compile_s, peak_mb=peak_mb() - base,
                xla_mb=xla_mb, **extra)


def run_peer(cfg, steps):
    import torch
    from vector_quantize_pytorch import FSQ, LFQ, ResidualVQ

    torch.manual_seed(0)
    if cfg["kind"] == "fsq":
        module = FSQ(levels=list(cfg["levels"]))
        x = torch.randn(1, cfg["n"], len(cfg["levels"]))
        aux = lambda out: 0.0
    elif cfg["kind"] == "lfq":
        module = LFQ(dim=cfg["bits"], codebook_size=2 ** cfg["bits"], entropy_loss_weight=0.1, diversity_gamma=1.0)
        x = torch.randn(1, cfg["n"], cfg["bits"])
        aux = lambda out: out[2].sum()
    else:
        # rotation_trick=False: vqjax's RVQ step here is straight-through (the peer defaults to the rotation trick).
        module = ResidualVQ(dim=cfg["dim"], num_quantizers=cfg["levels"], codebook_size=cfg["codes"], decay=0.8,
                            commitment_weight=1.0, rotation_trick=False)
        x = torch.randn(1, cfg["n"], cfg["dim"])
        aux = lambda out: out[2].sum()
    module.train()
    base = rss_mb()

    def one():
        xin = x.clone().requires_grad_(True)
        out = module(xin)
        (out[0].sum() + aux(out)).backward()

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    step_s = timed(one, steps)
    return dict(step_ms=step_s * 1e3, first_call_s=first, peak_mb=peak_mb() - base)


def run_gemm(cfg, steps):
    """RVQ's floor: one chunked GEMM with a running row minimum per level (:func:`_common.gemm_floor_ms`)."""
    if cfg["kind"] != "rvq":
        return {}
    return dict(gemm_ms=gemm_floor_ms(cfg["n"], cfg["dim"], cfg["codes"], steps, levels=cfg["levels"]))


RUNNERS = {"vqjax": run_vqjax, "vector-quantize-pytorch": run_peer, "numpy GEMM": run_gemm}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--runners", nargs="+", choices=sorted(RUNNERS), default=["vqjax", "vector-quantize-pytorch", "numpy GEMM"])
    parser.add_argument("--peer-mem-gb", type=float, default=20.0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runner, config, steps, mem = args.child
        cap_memory(float(mem))
        print(json.dumps(RUNNERS[runner](CONFIGS[config], int(steps))))
        return

    def ratio(g, v, key):
        return f"{g['gemm_ms'] / v[key]:.2f}" if "gemm_ms" in g and key in v else "-"

    rows = []
    for name in args.only or list(CONFIGS):
        res = {}
        for runner in args.runners:
            mem = args.peer_mem_gb if runner == "vector-quantize-pytorch" else 0
            if runner == "numpy GEMM" and CONFIGS[name]["kind"] != "rvq":
                continue
            res[runner] = spawn(__file__, [runner, name, str(args.steps), str(mem)], args.timeout)
            print(f"{name} {runner}: {res[runner]}", flush=True)
        rows.append({"config": name, **CONFIGS[name], **res})

    print(f"\n{'config':10s} {'tokens':>7s} {'vqjax ms':>9s} {'peer ms':>10s} {'speed-up':>9s} {'vqjax MB':>9s} "
          f"{'XLA MB':>7s} {'peer MB':>8s} {'compile s':>10s} {'search/GEMM':>11s} {'step/GEMM':>9s}")
    for row in rows:
        v, p, g = row.get("vqjax", {}), row.get("vector-quantize-pytorch", {}), row.get("numpy GEMM", {})
        fmt = lambda r, key, f="{:.1f}": f.format(r[key]) if r.get(key) is not None else "-"
        speed = f"{p['step_ms'] / v['step_ms']:.1f}x" if "step_ms" in p and "step_ms" in v else (
            "peer died" if "error" in p else "-")
        print(f"{row['config']:10s} {row['n']:>7d} {fmt(v, 'step_ms'):>9s} "
              f"{fmt(p, 'step_ms') if 'error' not in p else 'died':>10s} {speed:>9s} {fmt(v, 'peak_mb', '{:.0f}'):>9s} "
              f"{fmt(v, 'xla_mb', '{:.0f}'):>7s} {fmt(p, 'peak_mb', '{:.0f}') if 'error' not in p else 'died':>8s} "
              f"{fmt(v, 'compile_s', '{:.2f}'):>10s} {ratio(g, v, 'search_ms'):>11s} {ratio(g, v, 'step_ms'):>9s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
