"""Task ``'generative_retrieval'`` (TIGER, Rajput et al. 2023): every item is a code tuple -- semantic IDs from a
``semantic_ids`` run (``config.ids='semantic'``; trained first in ``workdir/semantic_ids`` from
``config.semantic_ids`` unless ``config.ids_path`` names a finished run or exported artifact on the same split) or
random tuples of the same shape (``config.ids='random'``, the baseline) -- and a decoder-only Transformer
(:class:`vqjax.lm.DecoderLM`) learns the users' histories as token sequences; a recommendation is a trie-constrained
beam search (:func:`vqjax.lm.retrieval.beam_search`), so each of the ``beam_size`` results is a catalogue item;
items never seen in training join the top 10 through the first ``new_item_prefix`` codes of the generated tuples,
at most ``new_item_fraction`` of it (TIGER's cold-start retrieval, :func:`~vqjax.lm.retrieval.with_new_items`).
Training, evaluation and the test are :mod:`vqjax.train.tasks.recommender`'s.
"""

from __future__ import annotations

import functools
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.evals import recommendation as recsys_eval
from vqjax.lm.model import DecoderLM
from vqjax.lm.retrieval import beam_search, build_trie, item_tokens, with_new_items
from vqjax.models.semantic_ids import disambiguate, random_ids
from vqjax.tokenizers import Tokenizer
from vqjax.train.config import check_positive, core_config, optimizer_config
from vqjax.train.core import train_and_evaluate
from vqjax.train.tasks import Task, register_task
from vqjax.train.tasks import semantic_ids as sid
from vqjax.train.tasks.recommender import (
    PARTS,
    RecommenderParts,
    RecState,
    check_common,
    optimizer_step,
    report,
    runlocal_common,
    setup,
    split_fields,
)

__all__ = ["default_config", "runlocal", "check", "item_ids", "parts", "TASK", "ID_KINDS"]

ID_KINDS = ("semantic", "random")


def default_config() -> ml_collections.ConfigDict:
    """TIGER-style generative retrieval: semantic IDs (3 x 64 codes + extra level), histories of 20 items, a
    2-layer decoder of width 64 (CPU-sized; TIGER's is 4 layers of 128), beam 20."""
    c = split_fields(core_config("generative_retrieval"))
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


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """40 steps of a 1-layer decoder of width 32, beam 10, the semantic IDs' own runlocal."""
    c = runlocal_common(c)
    c.semantic_ids = sid.runlocal(c.semantic_ids)
    c.model.update(dim=32, num_layers=1, num_heads=2, mlp_dim=64)
    c.max_items, c.beam_size = 8, 10
    return c


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad generative-retrieval config (its ``semantic_ids`` part by that task's checks)."""
    check_common(config)
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


def item_ids(config: ml_collections.ConfigDict, splits, workdir: str, devices=None
             ) -> tuple[np.ndarray, tuple[int, ...], str]:
    """``(codes [N, L'], level sizes, description)`` of the catalogue's items for a generative-retrieval config
    (semantic IDs trained on ``devices`` in ``workdir/semantic_ids`` when ``config.ids_path`` is None).

    Raises:
      ValueError: semantic IDs made on another split or catalogue.
    """

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

            train_and_evaluate(sub, path, devices=devices, progress=False)
    tok = Tokenizer.load(path)
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

    return optimizer_step(tx, state, loss_fn)


def parts(config, splits, workdir, devices=None) -> RecommenderParts:
    codes, sizes, described = item_ids(config, splits, workdir, devices)
    trie = build_trie(codes, sizes)
    m = config.model
    model = DecoderLM(vocab_size=1 + int(sum(sizes)), dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads,
                      mlp_dim=m.mlp_dim, dtype=config.precision)
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

    return RecommenderParts(init_params, functools.partial(_lm_step, model), lambda w: item_tokens(codes, w, sizes), ranker,
                  f"generative, {described}",
                  {"ids": config.ids, "level_sizes": list(sizes), "tokens_per_item": len(sizes)})


PARTS["generative_retrieval"] = parts
TASK = register_task(Task("generative_retrieval", default_config, check, runlocal, setup, report,
                          free_fields=("semantic_ids.quantizer_kwargs",)))
