"""The multimodal LM on this machine: training tokens/s, and generation tokens/s with and without the KV cache.

The model is the ``mnist_captions_lm`` experiment's (``experiments/mnist_captions_lm.py``), over a vocabulary of
its layout (BPE text of the experiment's size, specials, and 1024 image codes in spans of 7x7); training steps run
on random rows (speed does not depend on the ids); generation continues ``--batch`` prompts of a caption and a
begin-image token by ``--new`` ids, constrained, sampled at temperature 1, the same ids with and without the cache
(the uncached path recomputes the whole sequence at every step). The floor is numpy's GEMM throughput (one
``[4096, dim] x [dim, 4 dim]`` product) applied to ``6 x parameters`` FLOPs per trained token, so ``train/GEMM``
reads as the fraction of the machine's matmul speed the train step reaches.

    python benchmarks/bench_lm.py [--steps 5] [--batch 8] [--new 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_experiment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(fn, steps):
    fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class _ImageCodes:
    """The image modality's shape only (the benchmark never encodes or decodes media)."""

    modality = "image"
    vocab_size = 1024
    codes_shape = (7, 7)

    def encode(self, x):
        raise NotImplementedError

    def decode(self, codes):
        raise NotImplementedError


def _experiment():
    return load_experiment("mnist_captions_lm")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import optax

    from vqjax.lm import DecoderLM, MultimodalVocab, generate

    c = _experiment()
    vocab = MultimodalVocab.build(text=None, text_vocab_size=c.text_vocab_size, modalities={"image": _ImageCodes()})
    m = c.model
    model = DecoderLM(vocab_size=vocab.size, dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads,
                      num_kv_heads=m.num_kv_heads, mlp_dim=m.mlp_dim, dtype=m.dtype)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, vocab.size, (c.batch_size, c.seq_len)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(c.seq_len), tokens.shape)
    params = jax.jit(model.init)(jax.random.key(0), tokens[:1], positions[:1])
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    tx = optax.adamw(1e-3)
    opt = tx.init(params)

    @jax.jit
    def train_step(params, opt, tokens):
        def loss(p):
            logits, _ = model.apply(p, tokens, positions)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))
        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    state = [params, opt]

    def one():
        state[0], state[1] = train_step(state[0], state[1], tokens)
        jax.block_until_ready(state[0])

    train_s = _timed(one, args.steps)
    x = rng.normal(size=(4096, m.dim)).astype(np.float32)
    w = rng.normal(size=(m.dim, 4 * m.dim)).astype(np.float32)
    gemm_s = _timed(lambda: x @ w, args.steps)
    gemm_flops = 2 * 4096 * m.dim * 4 * m.dim / gemm_s
    train_tokens = c.batch_size * c.seq_len / train_s

    prompts = [np.append(vocab.encode([f"a handwritten {d}"], eos=False), vocab.begin_id("image"))
               for d in ("seven", "three", "one", "zero", "nine", "two", "five", "eight")[:args.batch]]
    prompts = (prompts * (args.batch // len(prompts) + 1))[:args.batch]
    gen = {}
    for cache in (True, False):
        run = lambda: generate(model, params, vocab, prompts, max_new_tokens=args.new, key=jax.random.key(1),
                               use_cache=cache)
        seconds = _timed(run, max(1, args.steps // 2))
        gen[cache] = (args.batch * args.new / seconds, run())
    same = all(np.array_equal(a, b) for a, b in zip(gen[True][1], gen[False][1]))
    result = {"params": num_params, "train_tokens_per_s": train_tokens,
              "train_vs_gemm": train_tokens * 6 * num_params / gemm_flops,
              "gen_tokens_per_s_cache": gen[True][0], "gen_tokens_per_s_no_cache": gen[False][0],
              "cache_speedup": gen[True][0] / gen[False][0], "same_ids_with_and_without_cache": same,
              "numpy_gemm_gflops": gemm_flops / 1e9}
    print(f"model: {num_params:,} parameters, vocabulary {vocab.size}, rows {c.batch_size} x {c.seq_len}")
    print(f"train: {train_tokens:,.0f} tokens/s = {result['train_vs_gemm']:.2f} of numpy's GEMM throughput "
          f"({result['numpy_gemm_gflops']:.1f} GFLOP/s)")
    print(f"generate ({args.batch} x {args.new} ids): {gen[True][0]:,.0f} tokens/s with the KV cache, "
          f"{gen[False][0]:,.0f} without ({result['cache_speedup']:.1f}x); same ids: {same}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
