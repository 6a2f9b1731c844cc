"""Sampling from a :class:`~vqjax.lm.DecoderLM` with a KV cache, and constrained decoding so every generated
modality span decodes.

    out = generate(model, params, vocab, prompts, max_new_tokens=60, key=jax.random.key(0), temperature=0.8,
                   top_k=50, top_p=0.95)                     # list of int32 arrays: prompt + generated ids
    span_validity(vocab, out)                                # fraction of generated modality spans that decode

Constraints (``constrained=True``), a small state machine per sequence run inside the sampling loop: outside a
span, text ids, any modality's begin token and EOS may follow; after ``begin_m`` only modality ``m``'s codes may
follow, exactly ``span_length(m)`` of them, then only ``end_m`` (a variable-length modality: ``end_m`` may also
come after any whole number of frames, :meth:`~vqjax.lm.MultimodalVocab.frame_length` codes each, once the span
holds :meth:`~vqjax.lm.MultimodalVocab.min_span_length` codes); after EOS only PAD. PAD and BOS are never sampled.
A prompt may end inside an open span (e.g. a caption then ``begin_image``): the state starts where the prompt left.
A modality whose tokenizer decodes only some code rows (the graph tokenizer: the token rows of existing nodes;
:meth:`~vqjax.lm.MultimodalVocab.valid_rows`) is constrained further, as a trie: at each position of its span only
codes that continue some valid row matching the codes so far may follow, so the span always names a node.

Sampling: ``temperature`` (0 = greedy), ``top_k`` (keep the k most likely), ``top_p`` (keep the smallest set whose
probability reaches p), all after the constraint mask; deterministic for a ``key``. Prompts of different lengths are
left-padded (their padding is invalid in the cache and their positions start at 0 at their first id).
``use_cache=False`` recomputes the whole sequence at every step (for the speed comparison).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.lm.model import DecoderLM, init_cache

__all__ = ["generate", "span_validity", "ConstraintTables", "constraint_tables", "allowed_mask", "advance_state",
           "initial_state", "sample_logits"]


class ConstraintTables(NamedTuple):
    """Per-modality id ranges (index 0 is "no modality"): ``start``, ``stop``, ``span`` (the most codes),
    ``frame`` (codes per frame; ``span`` for a fixed-length modality), ``min_span`` (the fewest codes before
    ``end``), ``begin``, ``end`` int32 ``[M + 1]``; the valid code rows of restricted modalities as ids, ``rows`` int32 ``[R, S]`` (padded with -1)
    with their modality ``row_mod`` int32 ``[R]`` and ``restricted`` bool ``[M + 1]``; and the vocabulary's
    ``text_size``, ``eos``, ``pad``, ``size`` as Python ints."""

    start: jax.Array
    stop: jax.Array
    span: jax.Array
    frame: jax.Array
    min_span: jax.Array
    begin: jax.Array
    end: jax.Array
    rows: jax.Array
    row_mod: jax.Array
    restricted: jax.Array
    text_size: int
    eos: int
    pad: int
    size: int


def constraint_tables(vocab) -> ConstraintTables:
    names = vocab.modalities
    col = lambda f: jnp.asarray([-1] + [f(n) for n in names], jnp.int32)
    width = max([vocab.span_length(n) for n in names], default=1)
    rows, row_mod, restricted = [np.zeros((0, width), np.int32)], [np.zeros((0,), np.int32)], [False]
    for i, name in enumerate(names):
        valid = vocab.valid_rows(name)
        restricted.append(valid is not None)
        if valid is not None:
            ids = np.full((len(valid), width), -1, np.int32)
            ids[:, :valid.shape[1]] = valid + vocab.range(name)[0]
            rows.append(ids)
            row_mod.append(np.full(len(valid), i + 1, np.int32))
    return ConstraintTables(col(lambda n: vocab.range(n)[0]), col(lambda n: vocab.range(n)[1]),
                            col(vocab.span_length), col(vocab.frame_length), col(vocab.min_span_length),
                            col(vocab.begin_id), col(vocab.end_id),
                            jnp.asarray(np.concatenate(rows)), jnp.asarray(np.concatenate(row_mod)),
                            jnp.asarray(restricted), vocab.text_size, vocab.eos_id, vocab.pad_id, vocab.size)


def _row_ids(tables: ConstraintTables, count: jax.Array) -> jax.Array:
    """``[B, R]``: each valid row's id at span position ``count[b]`` (-1 past its end)."""
    pos = jnp.clip(count, 0, tables.rows.shape[1] - 1)
    return jnp.take(tables.rows.T, pos, axis=0)


def allowed_mask(tables: ConstraintTables, mode: jax.Array, count: jax.Array, done: jax.Array,
                 alive: jax.Array | None = None) -> jax.Array:
    """bool ``[B, V]``: ids allowed next for sequences in ``mode`` (0 free, ``i + 1`` inside modality ``i``'s span)
    after ``count`` codes of the span, or finished (``done``); ``alive [B, R]`` marks the valid rows that still
    match the span's codes (restricted modalities)."""
    ids = jnp.arange(tables.size)[None, :]
    is_begin = (ids[:, :, None] == tables.begin[None, None, 1:]).any(-1)
    free = (ids < tables.text_size) | is_begin | (ids == tables.eos)
    start, stop, span, frame, least, end = (t[mode][:, None] for t in (tables.start, tables.stop, tables.span,
                                                                        tables.frame, tables.min_span, tables.end))
    codes = (ids >= start) & (ids < stop)
    if alive is not None and tables.rows.shape[0]:
        b = mode.shape[0]
        next_ids = _row_ids(tables, count)
        live = alive & (next_ids >= 0)
        trie = jnp.zeros((b, tables.size), bool).at[jnp.arange(b)[:, None], jnp.maximum(next_ids, 0)].max(live)
        codes = jnp.where(tables.restricted[mode][:, None], codes & trie, codes)
    n = count[:, None]
    may_end = (n == span) | ((n > 0) & (n >= least) & (n % jnp.maximum(frame, 1) == 0))
    inside = (codes & (n < span)) | ((ids == end) & may_end)
    allowed = jnp.where(mode[:, None] > 0, inside, free)
    return jnp.where(done[:, None], ids == tables.pad, allowed)


def advance_state(tables: ConstraintTables, mode, count, done, alive, token):
    """The state ``(mode, count, done, alive)`` after emitting ``token [B]``."""
    begins = token[:, None] == tables.begin[None, 1:]
    opened = jnp.where(begins.any(-1), jnp.argmax(begins, -1) + 1, 0)
    closing = (mode > 0) & (token == tables.end[mode])
    new_mode = jnp.where(mode > 0, jnp.where(closing, 0, mode), opened)
    new_count = jnp.where((mode > 0) & ~closing, count + 1, 0)
    in_span = (mode > 0) & ~closing
    matched = alive & (_row_ids(tables, count) == token[:, None])
    fresh = tables.row_mod[None, :] == opened[:, None]
    alive = jnp.where(in_span[:, None], matched, jnp.where((mode == 0)[:, None], fresh, alive))
    return new_mode, new_count, done | (token == tables.eos), alive


def initial_state(vocab, tables: ConstraintTables, prompt: np.ndarray) -> tuple[int, int, bool, np.ndarray]:
    """``(mode, count, done, alive)`` after a prompt (a prompt ending inside an open span continues it); ``alive``
    bool ``[R]`` marks the valid rows matching the open span's codes."""
    mode, count, done = 0, 0, False
    names = vocab.modalities
    begins = {vocab.begin_id(n): i + 1 for i, n in enumerate(names)}
    rows, row_mod = np.asarray(tables.rows), np.asarray(tables.row_mod)
    alive = np.ones(rows.shape[0], bool)
    for t in np.asarray(prompt).tolist():
        if mode:
            if t == vocab.end_id(names[mode - 1]):
                mode, count = 0, 0
            else:
                if count < rows.shape[1]:
                    alive &= rows[:, count] == t
                count += 1
        elif t in begins:
            mode, count = begins[t], 0
            alive = row_mod == mode
        done = done or t == vocab.eos_id
    return mode, count, done, alive


def sample_logits(key, logits: jax.Array, allowed: jax.Array, temperature: float, top_k: int | None,
                  top_p: float | None) -> jax.Array:
    """int32 ``[B]`` ids from float32 ``logits [B, V]`` restricted to ``allowed``."""
    logits = jnp.where(allowed, logits, -jnp.inf)
    if temperature == 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, -1)
        before = jnp.cumsum(probs, -1) - probs                   # mass of the strictly more likely ids
        cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf), -1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, -1).astype(jnp.int32)


def _check_sampling(temperature, top_k, top_p, max_new_tokens):
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be a positive int; got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"generate: temperature must be >= 0; got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must lie in (0, 1]; got {top_p!r}")


def _id_arrays(vocab, prompts, name):
    prompts = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    if not prompts or min(len(p) for p in prompts) == 0:
        raise ValueError(f"generate: {name} must be a non-empty list of non-empty id arrays")
    for p in prompts:
        if p.min() < 0 or p.max() >= vocab.size:
            raise ValueError(f"generate: {name[:-1]} ids must lie in [0, {vocab.size}); got ids from {p.min()} to "
                             f"{p.max()}")
    return prompts


def generate(model: DecoderLM, params, vocab, prompts: Sequence[np.ndarray], *, max_new_tokens: int, key,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             constrained: bool = True, use_cache: bool = True, guidance: float = 1.0,
             uncond_prompts: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Continues each prompt (int ids) by up to ``max_new_tokens`` ids; stops a sequence at EOS.

    Classifier-free guidance (``guidance`` != 1): each prompt runs beside its ``uncond_prompts`` counterpart (the
    same request without its condition, e.g. ``[BOS, begin_image]`` beside ``[BOS, caption, begin_image]``), both
    fed the same sampled ids, and ids are drawn from ``log p_u + guidance * (log p_c - log p_u)``; 1 is plain
    conditional sampling, larger values follow the condition more closely. An unconditional prompt must leave the
    constraint state its prompt leaves (both inside the same open span, or both outside one).

    Returns:
      one int32 array per prompt: the prompt, then the generated ids up to and including EOS (or the budget).
    """
    _check_sampling(temperature, top_k, top_p, max_new_tokens)
    if not np.isfinite(guidance) or guidance < 0:
        raise ValueError(f"generate: guidance must be a finite number >= 0 (1: off); got {guidance!r}")
    guided = float(guidance) != 1.0
    prompts = _id_arrays(vocab, prompts, "prompts")
    tables = constraint_tables(vocab)
    states = [initial_state(vocab, tables, p) for p in prompts]
    rows = prompts
    if guided:
        if uncond_prompts is None or len(uncond_prompts) != len(prompts):
            raise ValueError(f"generate: guidance={guidance} needs uncond_prompts, one per prompt ({len(prompts)}); "
                             f"got {None if uncond_prompts is None else len(uncond_prompts)}")
        uncond_prompts = _id_arrays(vocab, uncond_prompts, "uncond_prompts")
        for i, u in enumerate(uncond_prompts):
            mine, theirs = states[i], initial_state(vocab, tables, u)
            if mine[:3] != theirs[:3] or not np.array_equal(mine[3], theirs[3]):
                raise ValueError(f"generate: uncond_prompts[{i}] leaves the constraint state (mode, count, done) "
                                 f"{theirs[:3]}, its prompt {mine[:3]}: both must stop at the same place of a span")
        rows = prompts + uncond_prompts
    plen = max(len(p) for p in rows)
    tokens = np.full((len(rows), plen), vocab.pad_id, np.int32)
    valid = np.zeros((len(rows), plen), np.int32)
    positions = np.zeros((len(rows), plen), np.int32)
    for i, p in enumerate(rows):
        tokens[i, plen - len(p):] = p
        valid[i, plen - len(p):] = 1
        positions[i, plen - len(p):] = np.arange(len(p))
    mode, count, done = (np.asarray([s[i] for s in states]) for i in range(3))
    alive = np.stack([s[3] for s in states])
    run = _sampler(model, tables, max_new_tokens, float(temperature), top_k, top_p, bool(constrained),
                   bool(use_cache), float(guidance))
    new = np.asarray(run(params, jnp.asarray(tokens), jnp.asarray(valid), jnp.asarray(positions),
                         jnp.asarray(mode, jnp.int32), jnp.asarray(count, jnp.int32), jnp.asarray(done, bool),
                         jnp.asarray(alive), key))
    out = []
    for p, row in zip(prompts, new):
        stop = np.nonzero(row == vocab.eos_id)[0]
        out.append(np.concatenate([p, row[: stop[0] + 1 if stop.size else len(row)]]).astype(np.int32))
    return out


_SAMPLERS: dict = {}


def _sampler(model, tables, steps, temperature, top_k, top_p, constrained, use_cache, guidance):
    key = (model, tables.size, tables.text_size, tuple(np.asarray(tables.begin).tolist()),
           tuple(np.asarray(tables.span).tolist()), tuple(np.asarray(tables.frame).tolist()),
           tuple(np.asarray(tables.min_span).tolist()), tables.rows.shape, hash(np.asarray(tables.rows).tobytes()),
           steps, temperature, top_k, top_p, constrained, use_cache, guidance)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = jax.jit(lambda *a: _run(model, tables, steps, temperature, top_k, top_p, constrained,
                                                 use_cache, guidance, *a))
    return _SAMPLERS[key]


def _run(model, tables, steps, temperature, top_k, top_p, constrained, use_cache, guidance, params, tokens, valid,
         positions, mode, count, done, alive, rng):
    """The sampling loop; with guidance the model rows are the prompts then their unconditional twins (``2B``),
    the constraint state is the prompts' (``B``)."""
    b, plen = tokens.shape
    guided = guidance != 1.0
    twice = (lambda x: jnp.concatenate([x, x])) if guided else (lambda x: x)

    def mix(logits):
        if not guided:
            return logits
        cond, uncond = jnp.split(jax.nn.log_softmax(logits, -1), 2)
        return uncond + guidance * (cond - uncond)
    total = plen + steps
    next_pos = positions[:, -1] + 1
    if use_cache:
        cache = init_cache(model, b, total)
        logits, cache = model.apply(params, tokens, positions, valid, cache=cache)
        last = logits[:, -1]
        carry0 = cache
    else:
        buf_tokens = jnp.concatenate([tokens, jnp.full((b, steps), tables.pad, jnp.int32)], 1)
        buf_valid = jnp.concatenate([valid, jnp.zeros((b, steps), jnp.int32)], 1)
        buf_pos = jnp.concatenate([positions, next_pos[:, None] + jnp.arange(steps)[None]], 1)
        last = model.apply(params, tokens, positions, valid)[0][:, -1]
        carry0 = (buf_tokens, buf_valid, buf_pos)

    def body(carry, i):
        state, last, mode, count, done, alive, rng = carry
        rng, sub = jax.random.split(rng)
        if constrained:
            allowed = allowed_mask(tables, mode, count, done, alive)
        else:
            ids = jnp.arange(tables.size)[None]
            allowed = jnp.where(done[:, None], ids == tables.pad, (ids != tables.pad) & (ids != tables.pad + 1))
        tok = sample_logits(sub, mix(last), allowed, temperature, top_k, top_p)
        tok = jnp.where(done, tables.pad, tok)
        fed = twice(tok)
        now_valid = twice((~done).astype(jnp.int32))
        pos = next_pos + i
        if use_cache:
            logits, state = model.apply(params, fed[:, None], pos[:, None], now_valid[:, None], cache=state)
            new_last = logits[:, 0]
        else:
            bt, bv, bp = state
            bt = jax.lax.dynamic_update_slice_in_dim(bt, fed[:, None], plen + i, 1)
            bv = jax.lax.dynamic_update_slice_in_dim(bv, now_valid[:, None], plen + i, 1)
            state = (bt, bv, bp)
            logits = model.apply(params, bt, bp, jnp.where(bv > 0, 1, 0))[0]
            new_last = jax.lax.dynamic_index_in_dim(logits, plen + i, 1, keepdims=False)
        mode, count, done_next, alive = advance_state(tables, mode, count, done, alive, tok)
        return (state, new_last, mode, count, done_next, alive, rng), tok

    _, toks = jax.lax.scan(body, (carry0, last, mode, count, done, alive, rng), jnp.arange(steps))
    return toks.T


def span_validity(vocab, sequences: Sequence[np.ndarray], prompts: Sequence[np.ndarray] | None = None) -> dict:
    """Of the modality spans in ``sequences`` (after their prompts, when given): ``spans`` (finished ones),
    ``valid`` (well formed and decoded), ``fraction`` (valid / spans; 1.0 when there are none) and ``unfinished``
    (a span still open where a sequence ran out of budget without EOS: neither valid nor invalid)."""
    total = good = unfinished = 0
    for i, seq in enumerate(sequences):
        seq = np.asarray(seq)
        skip = 0 if prompts is None else len(prompts[i])
        pieces = vocab.spans(seq)
        for j, (kind, start, stop, problem) in enumerate(pieces):
            # Pieces inside the prompt are not the model's; a span the prompt left open is (its fate is generated).
            if kind in ("text", "special") or stop < skip or (stop == skip and problem is None):
                continue
            if problem is not None and j == len(pieces) - 1 and stop == len(seq) and seq[-1] != vocab.eos_id:
                unfinished += 1
                continue
            total += 1
            if problem is None:
                try:
                    vocab.decode(seq[start:stop])
                    good += 1
                except ValueError:
                    pass
    return {"spans": total, "valid": good, "fraction": good / total if total else 1.0, "unfinished": unfinished}
