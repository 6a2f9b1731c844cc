"""Link prediction on knowledge graphs: ``train_and_evaluate_links(config, workdir)``.

Entities are embedded from their NodePiece tokens (``config.encoder`` 'mlp' or 'transformer') or, for the
baseline, by a per-entity table ('embedding'); relations are RotatE rotations or DistMult diagonals with a
reciprocal row per relation, so a head query ``(?, r, t)`` is the tail query ``(t, r + R, ?)``. Training draws
batches of train triples (an epoch-wise permutation keyed by (seed, epoch), so a resumed run sees the same
batches), scores each of its 2B queries against its answer and ``num_negatives`` shared random entities, and
minimises the self-adversarial negative-sampling loss (Sun et al. 2019)::

    L = -mean log σ(s⁺) - mean Σ_j softmax(α s⁻)_j log σ(-s⁻_j)

Evaluation is filtered ranking over all entities (other known answers from train, valid and test removed, ties
counted half): MRR and Hits@1/3/10 on the valid split every ``eval_every_steps``, and on the test split at the
end. The same machinery as the image tokenizers: a mesh with the batch split along ``'data'``, orbax checkpoints
(async, interval and SIGTERM) with exact resume, a ``FloatingPointError`` on a non-finite loss, metrics in
``metrics.jsonl`` and TensorBoard, and figures.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data.graphs import load_kg
from vqjax.graph import NodePieceVocab
from vqjax.graph.models import LinkPredictor, score_all
from vqjax.train import evaluate, reports
from vqjax.train.config import check_link_config
from vqjax.train.loop import (_to_host, data_mesh, make_optimizer, open_checkpoints, prepare_workdir,
                              run_steps, write_run_files)

__all__ = ["LinkState", "train_and_evaluate_links", "build_link_model", "count_params"]


class LinkState(NamedTuple):
    """Step (int32), parameters and optimizer state of a link-prediction run."""

    step: jax.Array
    params: Any
    opt_state: Any


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def build_link_model(config: ml_collections.ConfigDict, workdir: str | None = None):
    """The data, NodePiece vocabulary and tokens (token encoders), and :class:`LinkPredictor` a config describes.

    Returns ``(splits, model, tokens, distances)`` (``tokens``/``distances`` are ``None`` for the baseline); the
    vocabulary is saved as ``workdir/vocab.json`` when ``workdir`` is given.
    """
    splits = load_kg(config.dataset, root=config.data_root, seed=config.seed)
    tokens = distances = None
    vocab_size = 0
    if config.encoder != "embedding":
        n = config.nodepiece
        vocab = NodePieceVocab.build(splits.graph(), num_anchors=min(n.num_anchors, splits.num_entities),
                                     anchors_per_node=min(n.anchors_per_node, splits.num_entities),
                                     relations_per_node=n.relations_per_node, strategy=n.strategy, seed=config.seed)
        node_tokens = vocab.tokenize(splits.graph())
        tokens, distances = node_tokens.tokens, node_tokens.distances
        vocab_size = vocab.size
        if workdir is not None:
            vocab.save(os.path.join(workdir, "vocab.json"))
    model = LinkPredictor(splits.num_entities, splits.num_relations, config.dim, config.scorer, config.encoder,
                          vocab_size, config.num_layers, config.num_heads, config.max_distance, float(config.gamma))
    return splits, model, tokens, distances


def _train_step(model, tx, cfg, state: LinkState, train, tokens, distances, batch_sharding):
    """One step of self-adversarial negative sampling on a batch of train triples and their reciprocals."""
    seed, batch, negatives, temperature = cfg
    key = jax.random.fold_in(jax.random.key(seed), state.step)
    per_epoch = train.shape[0] // batch
    epoch, offset = state.step // per_epoch, (state.step % per_epoch) * batch
    order = jax.random.permutation(jax.random.fold_in(jax.random.key(seed + 1), epoch), train.shape[0])
    idx = jax.lax.with_sharding_constraint(jax.lax.dynamic_slice(order, (offset,), (batch,)), batch_sharding)
    h, r, t = train[idx, 0], train[idx, 1], train[idx, 2]
    queries = jnp.concatenate([h, t])
    rels = jnp.concatenate([r, r + model.num_relations])
    answers = jnp.concatenate([t, h])
    negs = jax.random.randint(key, (negatives,), 0, model.num_entities)

    def loss_fn(params):
        pos, neg = model.apply({"params": params}, queries, rels, answers, negs, tokens, distances,
                               method="with_negatives")
        weights = (jax.lax.stop_gradient(jax.nn.softmax(temperature * neg, axis=-1)) if temperature > 0
                   else jnp.full(neg.shape, 1.0 / neg.shape[-1]))
        pos_loss = -jnp.mean(jax.nn.log_sigmoid(pos))
        neg_loss = -jnp.mean(jnp.sum(weights * jax.nn.log_sigmoid(-neg), axis=-1))
        return 0.5 * (pos_loss + neg_loss), {"pos_loss": pos_loss, "neg_loss": neg_loss}

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return LinkState(state.step + 1, params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}


def _embed_all(model, params, tokens, distances):
    return model.apply({"params": params}, tokens, distances, method="all_entities")


def _rank_step(model, params, emb, entities, rels, targets, known):
    """Filtered ranks of the answers ``targets`` of queries ``(entities, rels)`` among all entities."""
    scores = score_all(model.scorer, emb[entities], params["relations"][rels], emb, gamma=model.gamma)
    return evaluate.filtered_rank(scores, targets, known)


def train_and_evaluate_links(config: ml_collections.ConfigDict, workdir: str, *, devices=None,
                             progress: bool = True) -> dict:
    """Trains the link predictor ``config`` describes in ``workdir`` (resuming from its latest checkpoint) and
    returns the filtered test metrics (``mrr``, ``hits@1``, ``hits@3``, ``hits@10``, ``mean_rank``) with the
    parameter count.

    Writes ``config.json``, ``run.json``, ``vocab.json`` (token encoders), ``checkpoints/``, ``metrics.jsonl``,
    ``tensorboard/``, ``loss_curves.png`` and ``ranking_metrics.png``.

    Raises:
      ValueError: a bad config or workdir (before anything is computed); FileNotFoundError: the dataset's files
        are missing; FloatingPointError: the loss became NaN or Inf (the last checkpoint is kept).
    """
    check_link_config(config)
    workdir = prepare_workdir(workdir)
    splits, model, tokens, distances = build_link_model(config, workdir)
    if config.batch_size > splits.train.shape[0]:
        raise ValueError(f"config.batch_size ({config.batch_size}) must be <= the {splits.train.shape[0]} train "
                         f"triples of {config.dataset!r}")
    replicated, batch_sharding = data_mesh(config, devices)
    def global_array(x, sharding):
        """A global array from host data that every process holds whole (works on one host or many)."""
        x = np.asarray(x, np.int32) if x.dtype != bool else x
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    train = global_array(splits.train, replicated)
    if tokens is not None:
        tokens, distances = global_array(tokens, replicated), global_array(distances, replicated)
    tx = make_optimizer(config.optimizer, config.num_train_steps)

    def init_state(key):
        one = jnp.zeros((1,), jnp.int32)
        params = model.init(key, one, one, one, tokens, distances)["params"]
        return LinkState(jnp.int32(0), params, tx.init(params))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    num_params = count_params(abstract.params)
    write_run_files(workdir, config, {"task": "link_prediction", "dataset": config.dataset, "encoder": config.encoder,
                                      "scorer": config.scorer, "num_entities": splits.num_entities,
                                      "num_relations": splits.num_relations, "num_params": num_params})

    state_sharding = jax.tree.map(lambda _: replicated, abstract)
    mgr, state = open_checkpoints(workdir, config, init_state, abstract, state_sharding)
    start = int(state.step)

    cfg = (int(config.seed), int(config.batch_size), int(config.num_negatives),
           float(config.adversarial_temperature))
    train_step = jax.jit(functools.partial(_train_step, model, tx, cfg, batch_sharding=batch_sharding),
                         in_shardings=(state_sharding, replicated, replicated, replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=0)
    embed_all = jax.jit(functools.partial(_embed_all, model), out_shardings=replicated)
    rank_step = jax.jit(functools.partial(_rank_step, model),
                        in_shardings=(replicated, replicated, batch_sharding, batch_sharding, batch_sharding,
                                      batch_sharding),
                        out_shardings=batch_sharding)
    known = evaluate.KnownAnswers(np.concatenate([splits.train, splits.valid, splits.test]), splits.num_entities,
                                  splits.num_relations)
    R = splits.num_relations

    def run_eval(step, split):
        triples = splits.split(split)
        if config.max_eval_triples is not None:
            triples = triples[:config.max_eval_triples]
        ents = np.concatenate([triples[:, 0], triples[:, 2]])        # tail queries, then head queries as reciprocals
        rels = np.concatenate([triples[:, 1], triples[:, 1] + R])
        targets = np.concatenate([triples[:, 2], triples[:, 0]])
        ranks = []
        emb = embed_all(state.params, tokens, distances)
        b = config.eval_batch_size
        for s in range(0, ents.size, b):
            e, r, t = ents[s:s + b], rels[s:s + b], targets[s:s + b]
            pad = b - e.size
            e, r, t = (np.pad(x, (0, pad), mode="edge") for x in (e, r, t))
            got = rank_step(state.params, emb, *(global_array(x, batch_sharding) for x in (e, r, t)),
                            global_array(known.mask(e, r), batch_sharding))
            ranks.append(_to_host(got)[:b - pad])
        result = evaluate.ranking_metrics(np.concatenate(ranks))
        if writer is not None:
            writer.write(step, "eval" if split == "valid" else split, result)
            reports.save_curves(workdir)
        return result

    writer = reports.MetricWriter(workdir, resume_step=start) if jax.process_index() == 0 else None

    def advance():
        nonlocal state
        state, metrics = train_step(state, train, tokens, distances)
        return metrics

    end = run_steps(advance, lambda: state, mgr, start=start, config=config, writer=writer, progress=progress,
                    evaluate=lambda step: run_eval(step, "valid"), hint="Lower config.optimizer.learning_rate.")
    result = run_eval(end, "test")
    if writer is not None:
        writer.close()
    return {"step": end, **result, "num_params": num_params}
