"""Training throughput you can compare across machines: per task, float32 against bfloat16 and replicated against
FSDP, all in one run on whatever devices JAX sees.

For each task and setting: the step time (median of ``--steps`` steps after two warm-up steps), examples and
tokens per second, and the model FLOPs utilisation: the step's FLOPs as XLA's cost analysis counts them, per
second, against the peak the same run measures for this machine (a ``jnp`` matmul of the step's dtype on one
device; on CPU that is the machine's own GEMM rate, so MFU reads as "fraction of what this CPU's matmul does").
Then the compiled memory ``config.remat`` saves (``memory_analysis``'s scratch bytes, one step, float32), measured
in a child process whose XLA CPU scheduler schedules for memory as the GPU and TPU compilers do.

    python benchmarks/bench_train.py [--tasks mnist_vq,speech_codec,umls_text_lm] [--steps 10] [--json out.json]
    python benchmarks/bench_train.py --dry        # runlocal configs, bf16 under FSDP, one timed step, no remat (make test)

On CPU the devices are ``--cpu_devices`` fake host devices (default 2), so FSDP has something to split; the table
says which device ran it. Nothing here asserts a time: ratios within one run are the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_experiment, spawn, timed  # noqa: E402

TASKS = ("mnist_vq", "speech_codec", "umls_text_lm")
SETTINGS = (("float32", "replicated"), ("bfloat16", "replicated"), ("float32", "fsdp"), ("bfloat16", "fsdp"))
DRY_SETTINGS = (("bfloat16", "fsdp"),)
# On CPU, XLA's default scheduler favours concurrency and computes a rematerialised block's recomputation early;
# this flag makes it schedule for memory (what the GPU and TPU compilers do), so remat's saving shows.
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _set_cpu_devices(n: int, extra: str = "") -> None:
    """Fake host devices on CPU (read when JAX starts; harmless on an accelerator)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={n}"
    os.environ["XLA_FLAGS"] = (flags + " " + extra).strip()


def experiment(name: str, dry: bool):
    """The experiment's config (``runlocal`` when ``dry``) with its data in the default data folder."""
    c = load_experiment(name, "runlocal" if dry else None)
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 10 ** 6
    return c


def tokens_per_example(config, run) -> float:
    """Tokens one training example stands for: an LM row's length, a tokenizer's codes per training crop."""
    if config.task == "lm":
        return float(config.seq_len)
    spec = run.spec or {}
    if spec.get("tokens_per_second") and "crop_seconds" in config:
        return float(spec["tokens_per_second"]) * float(config.crop_seconds)
    shape = [s for s in spec.get("codes_shape", []) if s is not None]
    return float(math.prod(shape)) if shape else float("nan")


def matmul_peak(dtype: str, device, n: int = 2048) -> float:
    """FLOP/s of an ``n x n`` ``jnp`` matmul in ``dtype`` on ``device`` (median of 10 after a warm-up)."""
    import jax
    import jax.numpy as jnp

    a = jax.device_put(jnp.ones((n, n), dtype), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    return 2 * n ** 3 / timed(lambda: f(a).block_until_ready(), 10)


def measure(name: str, precision: str, sharding: str, steps: int, dry: bool, workdir: str) -> dict:
    """One task under one setting: compiled FLOPs and memory, then timed steps."""
    import jax

    from vqjax.train.cost import compiled_cost
    from vqjax.train.tasks import get_task

    c = experiment(name, dry)
    c.precision, c.sharding = precision, sharding
    c.num_train_steps = max(c.num_train_steps, steps + 3)
    task = get_task(c.task)
    task.check_config(c)
    run = task.setup(c, workdir, devices=jax.devices())
    sharding_tree = run.state_sharding or jax.tree.map(lambda _: run.replicated, run.abstract)
    state = jax.jit(run.init_state, out_shardings=sharding_tree)(jax.random.key(c.seed))
    step = run.make_step(0)
    cost = compiled_cost(step.lower(state))
    for _ in range(2):
        state, metrics = step(state)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = step(state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    examples = c.batch_size / step_s
    devices = len(jax.devices())
    return {"task": name, "precision": precision, "sharding": sharding, "step_ms": step_s * 1e3,
            "examples_per_s": examples, "tokens_per_s": examples * tokens_per_example(c, run),
            "flops_per_step": cost["flops"] * devices, "temp_mb": cost["temp_bytes"] / 2**20,
            "loss": float(metrics["loss"])}


def remat_child(name: str) -> dict:
    """In its own process (memory scheduler on CPU): one float32 step's scratch memory with and without remat."""
    import jax

    from vqjax.train.cost import compiled_cost
    from vqjax.train.tasks import get_task

    out = {}
    for remat in (False, True):
        c = experiment(name, False)
        c.remat = remat
        task = get_task(c.task)
        with tempfile.TemporaryDirectory() as workdir:
            run = task.setup(c, workdir, devices=jax.devices()[:1])
            state = jax.jit(run.init_state)(jax.random.key(c.seed))
            out[str(remat)] = compiled_cost(run.make_step(0).lower(state))
    plain, remat = out["False"], out["True"]
    return {"task": name, "temp_mb": plain["temp_bytes"] / 2**20, "temp_mb_remat": remat["temp_bytes"] / 2**20,
            "saving": 1.0 - remat["temp_bytes"] / max(plain["temp_bytes"], 1),
            "flops_ratio": remat["flops"] / max(plain["flops"], 1.0)}


def table(rows: list[dict], peaks: dict, remat: list[dict], device: str) -> str:
    lines = [f"device: {device}; matmul peak measured in this run: " +
             ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()), "",
             "| task | precision | sharding | step ms | examples/s | tokens/s | GFLOP/step | MFU | step scratch MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['precision']} | {r['sharding']} | {r['error']} | | | | | |")
            continue
        mfu = r["flops_per_step"] / (r["step_ms"] / 1e3) / peaks[r["precision"]]
        lines.append(f"| {r['task']} | {r['precision']} | {r['sharding']} | {r['step_ms']:.1f} | "
                     f"{r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['flops_per_step'] / 1e9:.2f} | "
                     f"{100 * mfu:.1f}% | {r['temp_mb']:.1f} |")
    if remat:
        lines += ["", "| task | step scratch MB | with remat | saving | FLOPs with remat / without |",
                  "| --- | --- | --- | --- | --- |"]
        for r in remat:
            if "error" in r:
                lines.append(f"| {r.get('task', '?')} | {r['error']} | | | |")
                continue
            lines.append(f"| {r['task']} | {r['temp_mb']:.1f} | {r['temp_mb_remat']:.1f} | "
                         f"{100 * r['saving']:.0f}% | {r['flops_ratio']:.2f} |")
    return "\n".join(lines)


def steps_for(bench_json: str, name: str, seconds: float) -> int:
    """Train steps that fill about ``seconds`` at the float32 replicated step time ``bench_json`` measured for
    ``name`` (compilation and evaluation come on top), at least 20."""
    with open(bench_json) as fh:
        rows = [r for r in json.load(fh)["rows"] if r["task"] == name and "step_ms" in r]
    if not rows:
        return 20
    row = next((r for r in rows if (r["precision"], r["sharding"]) == ("float32", "replicated")), rows[0])
    return max(20, int(seconds / (row["step_ms"] / 1e3)))


# The held-out metrics the report shows per experiment, where the run has them.
REPORT_METRICS = ("psnr", "ssim", "usage", "perplexity", "stoi", "pesq", "mel_distance", "bits_per_token")


def report(folder: str, experiments: list[str]) -> str:
    """One table: the bench (``folder/bench.json``), then each experiment's training in ``folder/NAME``: steps,
    wall seconds (start-up, compilation and evaluation included) and its final held-out metrics."""
    with open(os.path.join(folder, "bench.json")) as fh:
        bench = json.load(fh)
    lines = [table(bench["rows"], bench["peaks"], bench["remat"], bench["device"]), "",
             "| training | steps | seconds | held-out metrics |", "| --- | --- | --- | --- |"]
    for name in experiments:
        try:
            with open(os.path.join(folder, f"{name}.time.json")) as fh:
                timing = json.load(fh)
            with open(os.path.join(folder, name, "metrics.jsonl")) as fh:
                evals = [r for r in map(json.loads, fh) if r.get("split") in ("eval", "test")]
        except OSError as err:
            lines.append(f"| {name} | not run ({err.strerror}) | | |")
            continue
        last = {k: v for r in evals if r["step"] == evals[-1]["step"] for k, v in r.items()} if evals else {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items()) if isinstance(v, (int, float))
                          and k.rsplit("/", 1)[-1] in REPORT_METRICS and ("/" not in k or k.startswith("vqjax")))
        lines.append(f"| {name} | {timing['steps']} | {timing['seconds']} | {shown} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--cpu_devices", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", nargs="*", default=None)
    parser.add_argument("--steps_for", nargs=3, default=None, metavar=("BENCH_JSON", "TASK", "SECONDS"),
                        help="print the train steps that fill SECONDS at TASK's measured step time")
    parser.add_argument("--report", nargs="+", default=None, metavar=("FOLDER", "EXPERIMENT"),
                        help="print the accelerator check's table from FOLDER")
    args = parser.parse_args()
    if args.steps_for:
        print(steps_for(args.steps_for[0], args.steps_for[1], float(args.steps_for[2])))
        return
    if args.report:
        print(report(args.report[0], args.report[1:]))
        return
    if args.child is not None:                      # remat TASK
        _set_cpu_devices(1, MEMORY_SCHEDULER)
        print(json.dumps(remat_child(args.child[1])))
        return
    _set_cpu_devices(args.cpu_devices)
    import jax

    tasks = [t for t in args.tasks.split(",") if t]
    settings = DRY_SETTINGS if args.dry else SETTINGS
    steps = 1 if args.dry else args.steps
    device = jax.devices()[0]
    label = f"{len(jax.devices())} x {device.device_kind} ({device.platform})"
    peaks = {p: matmul_peak(p, device, 512 if args.dry else 2048) for p in ("float32", "bfloat16")}
    rows = []
    for name in tasks:
        for precision, sharding in settings:
            with tempfile.TemporaryDirectory() as workdir:
                try:
                    rows.append(measure(name, precision, sharding, steps, args.dry, workdir))
                except Exception as err:  # noqa: BLE001 - a task that cannot run here is reported, not fatal
                    rows.append({"task": name, "precision": precision, "sharding": sharding,
                                 "error": f"{type(err).__name__}: {str(err)[:120]}"})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    # remat's memory needs a process of its own (the XLA flag above); the dry run skips it.
    remat = [] if args.dry else [spawn(os.path.abspath(__file__), ["remat", name], timeout=1200) for name in tasks]
    print(table(rows, peaks, remat, label))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": label, "peaks": peaks, "rows": rows, "remat": remat}, fh, indent=2)


if __name__ == "__main__":
    main()
