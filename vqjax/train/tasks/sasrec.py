"""Task ``'sasrec'``: :class:`vqjax.models.retrieval.SASRec` over item ids, trained with the full softmax over the
catalogue (``loss='ce'``) or the original binary loss with one sampled negative per position (``loss='bce'``); a
recommendation is the top of the scores of all items. Training, evaluation and the test are
:mod:`vqjax.train.tasks.recommender`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vqjax.evals import recommendation as recsys_eval
from vqjax.models.retrieval import SASRec
from vqjax.train.config import core_config, optimizer_config
from vqjax.train.sharding import compute_dtype
from vqjax.train.tasks import Task, register_task
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

__all__ = ["default_config", "runlocal", "check", "parts", "TASK", "SASREC_LOSSES"]

SASREC_LOSSES = ("ce", "bce")


def default_config() -> ml_collections.ConfigDict:
    """SASRec: 2 blocks of width 64, histories of 50 items, full-softmax loss, dropout 0.2."""
    c = split_fields(core_config("sasrec"))
    c.max_items = 50
    c.model = ml_collections.ConfigDict(dict(dim=64, num_layers=2, num_heads=2, dropout=0.2))
    c.loss = "ce"
    c.batch_size = 64
    c.num_train_steps = 3000
    c.eval_every_steps = 1000                      # 'ce' (full softmax) | 'bce' (one negative, as the paper)
    c.optimizer = optimizer_config(1e-3)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """40 steps of a 1-block SASRec of width 16."""
    c = runlocal_common(c)
    c.model.update(dim=16, num_layers=1, num_heads=1)
    c.max_items = 10
    return c


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad SASRec config."""
    check_common(config)
    if config.loss not in SASREC_LOSSES:
        raise ValueError(f"config.loss must be one of {SASREC_LOSSES}; got {config.loss!r}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ValueError(f"config.model.dropout must lie in [0, 1); got {config.model.dropout}")


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

    return optimizer_step(tx, state, loss_fn)


def parts(config, splits, workdir, devices=None) -> RecommenderParts:
    m = config.model
    model = SASRec(splits.num_items, m.dim, m.num_layers, m.num_heads, config.max_items, float(m.dropout),
                   dtype=compute_dtype(config.precision))

    def init_params(key):
        return model.init(key, jnp.zeros((1, config.max_items), jnp.int32))["params"]

    k = max(recsys_eval.KS)

    @jax.jit
    def ranker(params, hist):
        states = model.apply({"params": params}, hist)[:, -1]
        return jax.lax.top_k(model.apply({"params": params}, states, method=model.scores), k)[1]

    return RecommenderParts(init_params, lambda tx, state, w: _sasrec_step(model, tx, config.loss, state, w), lambda w: w,
                  ranker, f"SASRec ({config.loss})", {"loss": config.loss})


PARTS["sasrec"] = parts
TASK = register_task(Task("sasrec", default_config, check, runlocal, setup, report))
