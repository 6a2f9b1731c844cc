"""Tasks ``'generative_retrieval'`` and ``'sasrec'``: next-item recommendation on MovieLens-100k's leave-one-out
split, judged by one harness (:mod:`vqjax.train.recsys_eval`).

``generative_retrieval`` (TIGER): every item is a code tuple -- semantic IDs from a ``semantic_ids`` run
(``config.ids='semantic'``; trained first in ``workdir/semantic_ids`` from ``config.semantic_ids`` unless
``config.ids_path`` names a finished run or exported artifact on the same split) or random tuples of the same shape
(``config.ids='random'``, the baseline) -- and a decoder-only Transformer (:class:`vqjax.lm.DecoderLM`) learns the
users' histories as token sequences; a recommendation is a trie-constrained beam search
(:func:`vqjax.models.retrieval.beam_search`), so each of the ``beam_size`` results is a catalogue item; items never seen in training join the top 10 through
the first ``new_item_prefix`` codes of the generated tuples, at most ``new_item_fraction`` of it (TIGER's cold-start retrieval,
:func:`~vqjax.models.retrieval.with_new_items`).

``sasrec``: :class:`vqjax.models.retrieval.SASRec` over item ids, trained with the full softmax over the catalogue
(``loss='ce'``) or the original binary loss with one sampled negative per position (``loss='bce'``); a
recommendation is the top of the scores of all items.

Both train on windows of the training histories (:func:`vqjax.data.recommendation.training_windows`, every item a
target once per epoch; batches keyed by (seed, epoch), so a resumed run sees the same batches), evaluate Recall and
NDCG @5/@10 on the validation items every ``eval_every_steps``, and at the end on the test items, overall and
separately for the cold items withheld from training, with the popularity baseline on the same split; the test
writes ``retrieval.json`` and ``retrieval.png``. :func:`vqjax.train.recsys_eval.compare_runs` puts runs side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data.recommendation import RECOMMENDATION_DATASETS, training_windows, window_batch
from vqjax.models.retrieval import SASRec, beam_search, build_trie, item_tokens, with_new_items
from vqjax.train import recsys_eval, reports
from vqjax.train.config import check_positive, core_config, optimizer_config
from vqjax.train.core import data_mesh, make_optimizer
from vqjax.train.tasks import Run, Task, register_task
from vqjax.train.tasks import semantic_ids as sid

__all__ = ["RecState", "generative_config", "sasrec_config", "item_ids", "load_ranker", "GENERATIVE", "SASREC"]

ID_KINDS = ("semantic", "random")
SASREC_LOSSES = ("ce", "bce")


class RecState(NamedTuple):
    """Step, parameters, optimizer state and the run's key data."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def _split_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.dataset = "ml-100k"
    c.data_root = ml_collections.FieldReference(None, field_type=str)
    c.split_seed = 0
    c.cold_fraction = 0.1
    c.batch_size = 128
    c.eval_batch_size = 128
    c.max_eval_users = ml_collections.FieldReference(None, field_type=int)
    c.num_train_steps = 6000
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 1000
    return c


def generative_config() -> ml_collections.ConfigDict:
    """TIGER-style generative retrieval: semantic IDs (3 x 64 codes + extra level), histories of 20 items, a
    2-layer decoder of width 64 (CPU-sized; TIGER's is 4 layers of 128), beam 20."""
    c = _split_fields(core_config("generative_retrieval"))
    c.ids = "semantic"                 # 'semantic' | 'random'
    c.ids_path = ml_collections.FieldReference(None, field_type=str)
    c.semantic_ids = sid.default_config()
    c.max_items = 20
    c.model = ml_collections.ConfigDict(dict(dim=64, num_layers=2, num_heads=4, mlp_dim=256))
    c.beam_size = 20
    c.new_item_fraction = 0.1          # TIGER's epsilon: at most this share of a top-k list are unseen items
    c.new_item_prefix = 1              # ... that share this many leading codes with a generated item
    c.batch_size = 64
    c.num_train_steps = 3000
    c.eval_every_steps = 1000
    c.optimizer = optimizer_config(1e-3)
    c.optimizer.weight_decay = 0.05
    return c


def sasrec_config() -> ml_collections.ConfigDict:
    """SASRec: 2 blocks of width 64, histories of 50 items, full-softmax loss, dropout 0.2."""
    c = _split_fields(core_config("sasrec"))
    c.max_items = 50
    c.model = ml_collections.ConfigDict(dict(dim=64, num_layers=2, num_heads=2, dropout=0.2))
    c.loss = "ce"
    c.batch_size = 64
    c.num_train_steps = 3000
    c.eval_every_steps = 1000                      # 'ce' (full softmax) | 'bce' (one negative, as the paper)
    c.optimizer = optimizer_config(1e-3)
    return c


def _runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.batch_size, c.eval_batch_size, c.max_eval_users = 32, 32, 64
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 40, 10, 20, 20
    c.optimizer.warmup_steps = 5
    return c


def generative_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """40 steps of a 1-layer decoder of width 32, beam 10, the semantic IDs' own runlocal."""
    c = _runlocal(c)
    c.semantic_ids = sid.runlocal(c.semantic_ids)
    c.model.update(dim=32, num_layers=1, num_heads=2, mlp_dim=64)
    c.max_items, c.beam_size = 8, 10
    return c


def sasrec_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """40 steps of a 1-block SASRec of width 16."""
    c = _runlocal(c)
    c.model.update(dim=16, num_layers=1, num_heads=1)
    c.max_items = 10
    return c


def _check_common(config: ml_collections.ConfigDict) -> None:
    if config.dataset not in RECOMMENDATION_DATASETS:
        raise ValueError(f"config.dataset must be one of {RECOMMENDATION_DATASETS}; got {config.dataset!r}")
    if not 0.0 <= config.cold_fraction < 1.0:
        raise ValueError(f"config.cold_fraction must lie in [0, 1); got {config.cold_fraction}")
    check_positive(config, "batch_size", "eval_batch_size", "max_items", "model.dim", "model.num_layers",
                   "model.num_heads")
    if config.max_eval_users is not None:
        check_positive(config, "max_eval_users")
    if config.model.dim % config.model.num_heads:
        raise ValueError(f"config.model.dim ({config.model.dim}) must be divisible by config.model.num_heads "
                         f"({config.model.num_heads})")


def generative_check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad generative-retrieval config (its ``semantic_ids`` part by that task's checks)."""
    _check_common(config)
    if config.ids not in ID_KINDS:
        raise ValueError(f"config.ids must be one of {ID_KINDS}; got {config.ids!r}")
    check_positive(config, "beam_size", "model.mlp_dim")
    check_positive(config, "new_item_prefix")
    if not 0.0 <= config.new_item_fraction <= 1.0:
        raise ValueError(f"config.new_item_fraction must lie in [0, 1]; got {config.new_item_fraction}")
    if config.beam_size < max(recsys_eval.KS):
        raise ValueError(f"config.beam_size ({config.beam_size}) must be >= {max(recsys_eval.KS)} (the longest "
                         f"ranking scored)")
    sid.check(config.semantic_ids)


def sasrec_check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad SASRec config."""
    _check_common(config)
    if config.loss not in SASREC_LOSSES:
        raise ValueError(f"config.loss must be one of {SASREC_LOSSES}; got {config.loss!r}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ValueError(f"config.model.dropout must lie in [0, 1); got {config.model.dropout}")


def item_ids(config: ml_collections.ConfigDict, splits, workdir: str, devices=None
             ) -> tuple[np.ndarray, tuple[int, ...], str]:
    """``(codes [N, L'], level sizes, description)`` of the catalogue's items for a generative-retrieval config
    (semantic IDs trained on ``devices`` in ``workdir/semantic_ids`` when ``config.ids_path`` is None).

    Raises:
      ValueError: semantic IDs made on another split or catalogue.
    """
    from vqjax.models.semantic_ids import disambiguate, random_ids

    s = config.semantic_ids
    if config.ids == "random":
        levels, k = int(s.quantizer_kwargs.num_levels), int(s.quantizer_kwargs.codebook_size)
        raw = random_ids(splits.num_items, [k] * levels, int(config.seed))
        return disambiguate(raw, int(s.disambiguation_size)), (k,) * levels + (int(s.disambiguation_size),), \
            "random IDs"
    path = config.ids_path
    if path is None:
        path = os.path.join(workdir, "semantic_ids")
        sub = ml_collections.ConfigDict(s.to_dict())
        sub.update(dataset=config.dataset, data_root=config.data_root, split_seed=config.split_seed,
                   cold_fraction=config.cold_fraction)
        if not os.path.exists(os.path.join(path, "item_ids.npz")):
            from vqjax.train.core import train_and_evaluate

            train_and_evaluate(sub, path, devices=devices, progress=False)
    import vqjax

    tok = vqjax.Tokenizer.load(path)
    if tok.modality != "item":
        raise ValueError(f"config.ids_path {path!r} holds a {tok.modality!r} tokenizer; semantic IDs are 'item'")
    want = {"cold_fraction": float(config.cold_fraction), "split_seed": int(config.split_seed)}
    if tok.spec.get("split") != want or tok.num_items != splits.num_items or tok.spec.get("dataset") != config.dataset:
        raise ValueError(f"the semantic IDs in {path!r} were made on split {tok.spec.get('split')} of "
                         f"{tok.spec.get('dataset')!r} ({tok.num_items} items); this run uses {want} of "
                         f"{config.dataset!r} ({splits.num_items} items)")
    return tok.item_codes, tok.level_sizes, f"semantic IDs ({tok.spec.get('features')})"


def _lm_step(model, tx, state: RecState, tokens):
    seg = (tokens > 0).astype(jnp.int32)
    pos = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0)
    mask = (seg[:, 1:] * seg[:, :-1]).astype(jnp.float32)

    def loss_fn(params):
        logits, _ = model.apply({"params": params}, tokens[:, :-1], pos[:, :-1], seg[:, :-1])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state._replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def _sasrec_step(model, tx, loss_kind, state: RecState, window):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    inputs, targets = window[:, :-1], window[:, 1:]
    mask = ((inputs >= 0) & (targets >= 0)).astype(jnp.float32)
    k_drop, k_neg = jax.random.split(rng)

    def loss_fn(params):
        states = model.apply({"params": params}, inputs, train=True, rngs={"dropout": k_drop})
        if loss_kind == "ce":
            logits = model.apply({"params": params}, states, method=model.scores)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
        else:
            emb = params["item_embedding"]
            neg = jax.random.randint(k_neg, targets.shape, 0, model.num_items)
            pos_s = jnp.sum(states * emb[jnp.maximum(targets, 0) + 1], -1)
            neg_s = jnp.sum(states * emb[neg + 1], -1)
            nll = -jax.nn.log_sigmoid(pos_s) - jax.nn.log_sigmoid(-neg_s)
        return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state._replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads)}


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What differs between the two tasks: the model, its step on a batch of windows, and its ranker."""

    init_params: Callable
    step: Callable
    batch: Callable[[np.ndarray], np.ndarray]       # item windows -> the step's input
    ranker: Callable                                 # (params, histories [B, max_items]) -> items [B, >= 10]
    method: str
    info: dict


def _generative_parts(config, splits, workdir, devices=None) -> _Parts:
    from vqjax.lm.model import DecoderLM

    codes, sizes, described = item_ids(config, splits, workdir, devices)
    trie = build_trie(codes, sizes)
    m = config.model
    model = DecoderLM(vocab_size=1 + int(sum(sizes)), dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads,
                      mlp_dim=m.mlp_dim)
    length = (config.max_items + 1) * len(sizes)

    def init_params(key):
        t = jnp.zeros((1, length - 1), jnp.int32)
        return model.init(key, t, t, t + 1)["params"]

    beam, k = int(config.beam_size), max(recsys_eval.KS)
    new = np.ones(splits.num_items, bool)
    new[splits.warm_items()] = False
    max_new = int(round(float(config.new_item_fraction) * k))

    def ranker(params, hist):
        items, _ = beam_search(model, params, trie, jnp.asarray(item_tokens(codes, hist, sizes)), tuple(sizes), beam)
        return with_new_items(np.asarray(items), codes, new, k=k, max_new=max_new,
                              prefix_len=min(int(config.new_item_prefix), len(sizes)))

    return _Parts(init_params, functools.partial(_lm_step, model), lambda w: item_tokens(codes, w, sizes), ranker,
                  f"generative, {described}",
                  {"ids": config.ids, "level_sizes": list(sizes), "tokens_per_item": len(sizes)})


def _sasrec_parts(config, splits, workdir, devices=None) -> _Parts:
    m = config.model
    model = SASRec(splits.num_items, m.dim, m.num_layers, m.num_heads, config.max_items, float(m.dropout))

    def init_params(key):
        return model.init(key, jnp.zeros((1, config.max_items), jnp.int32))["params"]

    k = max(recsys_eval.KS)

    @jax.jit
    def ranker(params, hist):
        states = model.apply({"params": params}, hist)[:, -1]
        return jax.lax.top_k(model.apply({"params": params}, states, method=model.scores), k)[1]

    return _Parts(init_params, lambda tx, state, w: _sasrec_step(model, tx, config.loss, state, w), lambda w: w,
                  ranker, f"SASRec ({config.loss})", {"loss": config.loss})


def _setup(parts_fn, config, workdir, *, devices=None, stop=None) -> Run:
    splits = sid.load_split(config)
    parts = parts_fn(config, splits, workdir, devices)
    if stop is not None:
        stop.check("semantic IDs")
    replicated, batch_sharding = data_mesh({"batch_size": config.batch_size}, devices)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    windows = training_windows(splits.train, config.max_items + 1)

    def init_state(key):
        k_params, k_run = jax.random.split(key)
        params = parts.init_params(k_params)
        return RecState(jnp.int32(0), params, tx.init(params), jax.random.key_data(k_run))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    state_sharding = jax.tree.map(lambda _: replicated, abstract)
    step_fn = jax.jit(functools.partial(parts.step, tx), in_shardings=(state_sharding, batch_sharding),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
    rank_fn = parts.ranker
    seed, b = int(config.seed), int(config.batch_size)

    def make_step(start):
        counter = [start]

        def step(state):
            rows = window_batch(windows, seed, counter[0], b)
            counter[0] += 1
            return step_fn(state, jax.device_put(jnp.asarray(parts.batch(rows)), batch_sharding))
        return step

    def scores(split):
        def run(state, step):
            return recsys_eval.evaluate_ranker(lambda h: rank_fn(state.params, h), splits, split,
                                               max_items=config.max_items, batch_size=config.eval_batch_size,
                                               max_users=config.max_eval_users)
        return run

    split_info = {"dataset": config.dataset, "cold_fraction": float(config.cold_fraction),
                  "split_seed": int(config.split_seed), "max_eval_users": config.max_eval_users}

    def test(state, step):
        metrics = scores("test")(state, step)
        popular = recsys_eval.evaluate_ranker(recsys_eval.popularity_ranker(splits.train, splits.num_items), splits,
                                              "test", max_items=config.max_items, batch_size=config.eval_batch_size,
                                              max_users=config.max_eval_users)
        if jax.process_index() == 0:
            recsys_eval.write_result(workdir, parts.method, metrics, popular, {"split": split_info, **parts.info})
            recsys_eval.plot_comparison([("popularity", popular), (parts.method, metrics)],
                                        os.path.join(workdir, "retrieval.png"))
        return {**metrics, **{f"popularity/{k}": v for k, v in popular.items() if "@" in k}}

    num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params)))
    info = {"method": parts.method, "num_params": num_params, "training_windows": int(windows.shape[0]),
            "split": split_info, **parts.info}
    return Run(init_state=init_state, make_step=make_step, evaluate=scores("valid"), replicated=replicated,
               info=info, hint="Lower config.optimizer.learning_rate.", test=test, abstract=abstract,
               state_sharding=state_sharding)


def load_ranker(workdir: str, step: int | None = None) -> Callable[[Any], np.ndarray]:
    """The recommender a finished (or checkpointed) ``generative_retrieval`` or ``sasrec`` run trained, as
    ``histories -> int32 [U, 10]`` top-10 items, best first (histories: a list of item arrays, each non-empty, or
    a ``[U, max_items]`` matrix padded with -1 on the left).

    Raises:
      FileNotFoundError: no config or checkpoint in ``workdir``; ValueError: another task's run, or an empty history.
    """
    import json

    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_ranker: {workdir!r} holds no config.json (not a training workdir)")
    with open(path) as fh:
        config = ml_collections.ConfigDict(json.load(fh))
    parts_fn = {"generative_retrieval": _generative_parts, "sasrec": _sasrec_parts}.get(config.task)
    if parts_fn is None:
        raise ValueError(f"load_ranker: {workdir!r} is a {config.task!r} run; it needs generative_retrieval or "
                         f"sasrec")
    parts = parts_fn(config, sid.load_split(config), workdir)
    tx = make_optimizer(config.optimizer, config.num_train_steps)

    def init_state(key):
        params = parts.init_params(key)
        return RecState(jnp.int32(0), params, tx.init(params), jax.random.key_data(key))

    abstract = jax.eval_shape(init_state, jax.random.key(0))
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"load_ranker: {workdir!r} has no checkpoint")
        state = mgr.restore(step, args=ocp.args.StandardRestore(abstract))

    def rank(histories) -> np.ndarray:
        hist = histories if isinstance(histories, np.ndarray) and histories.ndim == 2 else \
            recsys_eval.history_matrix(histories, config.max_items)
        return np.asarray(parts.ranker(state.params, np.asarray(hist, np.int32)))[:, :max(recsys_eval.KS)]

    return rank


def report(result: dict, workdir: str) -> str:
    """Recall and NDCG on the test items (all, warm, cold) against popularity, and where the figure is."""
    workdir = os.path.abspath(workdir)
    rows = [("step", result["step"])]
    for k in recsys_eval.KS:
        for m in ("recall", "ndcg"):
            key = f"{m}@{k}"
            rows.append((key, f"{result[key]:.4f} (popularity {result[f'popularity/{key}']:.4f})"))
    if "cold/recall@10" in result:
        rows.append((f"cold items: recall@10 ({result['cold_users']} users)", f"{result['cold/recall@10']:.4f}"))
    return reports.result_table("test metric", rows, ("retrieval.png", "loss_curves.png"), workdir,
                                [f"result: {os.path.join(workdir, recsys_eval.RESULT_FILE)}"], result)


GENERATIVE = register_task(Task("generative_retrieval", generative_config, generative_check, generative_runlocal,
                                functools.partial(_setup, _generative_parts), report,
                                free_fields=("semantic_ids.quantizer_kwargs",)))
SASREC = register_task(Task("sasrec", sasrec_config, sasrec_check, sasrec_runlocal,
                            functools.partial(_setup, _sasrec_parts), report))
