"""Task ``'link_prediction'``: link prediction on knowledge graphs with NodePiece entity tokens.

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

from vqjax.data.graphs import KG_DATASETS, load_kg
from vqjax.evals import ranking as ranking_eval
from vqjax.graph import STRATEGIES, NodePieceVocab
from vqjax.graph.models import ENCODERS, SCORERS, LinkPredictor, score_all
from vqjax.tokenizers.graph import GraphTokenizer
from vqjax.train import reports
from vqjax.train.config import check_positive, core_config, optimizer_config
from vqjax.train.core import data_mesh, make_optimizer, to_host
from vqjax.train.cost import FedStep
from vqjax.train.sharding import compute_dtype, gathering_params, state_shardings
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["LinkState", "default_config", "check", "runlocal", "setup", "report", "build_link_model",
           "count_params", "TASK"]


class LinkState(NamedTuple):
    """Step (int32), parameters and optimizer state of a link-prediction run."""

    step: jax.Array
    params: Any
    opt_state: Any


def default_config() -> ml_collections.ConfigDict:
    """Every field of a link-prediction experiment, with defaults: RotatE on UMLS with NodePiece entities (MLP
    encoder); ``encoder='embedding'`` is the per-node embedding baseline."""
    c = core_config("link_prediction")
    c.dataset = "umls"
    c.data_root = ml_collections.FieldReference(None, field_type=str)
    c.encoder = "mlp"                 # 'mlp' | 'transformer' (NodePiece tokens) | 'embedding' (one vector per node)
    c.scorer = "rotate"               # 'rotate' | 'distmult'
    c.dim = 64
    c.gamma = 12.0                    # RotatE margin
    c.num_layers = 2                  # Transformer encoder
    c.num_heads = 4
    c.max_distance = 10
    c.nodepiece = ml_collections.ConfigDict(dict(num_anchors=40, anchors_per_node=10, relations_per_node=12,
                                                 strategy="mix"))
    c.batch_size = 256
    c.num_negatives = 128
    c.adversarial_temperature = 1.0   # self-adversarial negative weights (Sun et al. 2019); 0: uniform
    c.eval_batch_size = 256
    c.max_eval_triples = ml_collections.FieldReference(None, field_type=int)
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    c.optimizer = optimizer_config(3e-3)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """20 steps, 16-d, 100 eval triples."""
    c.dim, c.batch_size, c.num_negatives, c.eval_batch_size = 16, 64, 16, 40
    c.max_eval_triples = 100
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 5, 10, 10
    c.optimizer.warmup_steps = 5
    return c


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad link-prediction config with a message naming the field, before any data is read."""
    if config.dataset not in KG_DATASETS:
        raise ValueError(f"config.dataset must be one of {KG_DATASETS}; got {config.dataset!r}")
    if config.encoder not in ENCODERS:
        raise ValueError(f"config.encoder must be one of {ENCODERS}; got {config.encoder!r}")
    if config.scorer not in SCORERS:
        raise ValueError(f"config.scorer must be one of {SCORERS}; got {config.scorer!r}")
    check_positive(config, "dim", "batch_size", "num_negatives", "eval_batch_size", "num_layers", "num_heads",
                   "max_distance", "nodepiece.num_anchors", "nodepiece.anchors_per_node")
    if config.max_eval_triples is not None:
        check_positive(config, "max_eval_triples")
    if config.scorer == "rotate" and config.dim % 2:
        raise ValueError(f"config.dim must be even for scorer='rotate' (complex embeddings); got {config.dim}")
    if config.encoder == "transformer" and config.dim % config.num_heads:
        raise ValueError(f"config.dim ({config.dim}) must be divisible by config.num_heads ({config.num_heads})")
    n = config.nodepiece
    if n.anchors_per_node > n.num_anchors:
        raise ValueError(f"config.nodepiece.anchors_per_node ({n.anchors_per_node}) must be <= "
                         f"config.nodepiece.num_anchors ({n.num_anchors})")
    if isinstance(n.relations_per_node, bool) or not isinstance(n.relations_per_node, int) or n.relations_per_node < 0:
        raise ValueError(f"config.nodepiece.relations_per_node must be an int >= 0; got {n.relations_per_node!r}")
    if n.strategy not in STRATEGIES:
        raise ValueError(f"config.nodepiece.strategy must be one of {STRATEGIES}; got {n.strategy!r}")
    if config.adversarial_temperature < 0:
        raise ValueError(f"config.adversarial_temperature must be >= 0; got {config.adversarial_temperature}")


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def build_link_model(config: ml_collections.ConfigDict, workdir: str | None = None):
    """The data, NodePiece vocabulary and tokens (token encoders), and :class:`LinkPredictor` a config describes.

    Returns ``(splits, model, tokens, distances)`` (``tokens``/``distances`` are ``None`` for the baseline). With
    ``workdir``, the tokens are written there as a graph tokenizer artifact (``spec.json``, ``vocab.json``,
    ``node_tokens.npz``: :class:`vqjax.tokenizers.GraphTokenizer`, loadable with ``vqjax.Tokenizer.load(workdir)``).
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
        if workdir is not None and jax.process_index() == 0:
            GraphTokenizer.from_tokens(vocab, node_tokens).export(workdir)
    model = LinkPredictor(splits.num_entities, splits.num_relations, config.dim, config.scorer, config.encoder,
                          vocab_size, config.num_layers, config.num_heads, config.max_distance, float(config.gamma),
                          dtype=compute_dtype(config.precision))
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
    return ranking_eval.filtered_rank(scores, targets, known)


def _global_array(x, sharding):
    """A global array from host data that every process holds whole (works on one host or many)."""
    x = np.asarray(x, np.int32) if x.dtype != bool else x
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Loads the graph, builds the vocabulary (saved as ``workdir/vocab.json``), the model and the steps."""
    splits, model, tokens, distances = build_link_model(config, workdir)
    for name in ("train", "valid", "test"):
        if splits.split(name).shape[0] == 0:
            raise ValueError(f"split {name!r} of dataset {config.dataset!r} is empty; link prediction needs train, "
                             f"valid and test triples")
    if config.batch_size > splits.train.shape[0]:
        raise ValueError(f"config.batch_size ({config.batch_size}) must be <= the {splits.train.shape[0]} train "
                         f"triples of {config.dataset!r}")
    replicated, batch_sharding = data_mesh({"batch_size": config.batch_size,
                                            "eval_batch_size": config.eval_batch_size}, devices)
    train = _global_array(splits.train, replicated)
    if tokens is not None:
        tokens, distances = _global_array(tokens, replicated), _global_array(distances, replicated)
    tx = make_optimizer(config.optimizer, config.num_train_steps)

    def init_state(key):
        one = jnp.zeros((1,), jnp.int32)
        params = model.init(key, one, one, one, tokens, distances)["params"]
        return LinkState(step=jnp.int32(0), params=params, opt_state=tx.init(params))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    state_sharding = state_shardings(abstract, replicated.mesh, config.sharding)
    num_params = count_params(abstract.params)
    cfg = (int(config.seed), int(config.batch_size), int(config.num_negatives),
           float(config.adversarial_temperature))
    step = gathering_params(functools.partial(_train_step, model, tx, cfg, batch_sharding=batch_sharding),
                            replicated.mesh, config.sharding)
    train_step = jax.jit(step, in_shardings=(state_sharding, replicated, replicated, replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=0)
    embed_all = jax.jit(functools.partial(_embed_all, model), out_shardings=replicated)
    rank_step = jax.jit(functools.partial(_rank_step, model),
                        in_shardings=(state_sharding.params, replicated, batch_sharding, batch_sharding,
                                      batch_sharding, batch_sharding),
                        out_shardings=batch_sharding)
    known = ranking_eval.KnownAnswers(np.concatenate([splits.train, splits.valid, splits.test]), splits.num_entities,
                                  splits.num_relations)
    R = splits.num_relations

    def ranking(split):
        def run(state, step):
            triples = splits.split(split)
            if config.max_eval_triples is not None:
                triples = triples[:config.max_eval_triples]
            ents = np.concatenate([triples[:, 0], triples[:, 2]])     # tail queries, then head queries as reciprocals
            rels = np.concatenate([triples[:, 1], triples[:, 1] + R])
            targets = np.concatenate([triples[:, 2], triples[:, 0]])
            ranks = []
            emb = embed_all(state.params, tokens, distances)
            b = config.eval_batch_size
            for s in range(0, ents.size, b):
                e, r, t = ents[s:s + b], rels[s:s + b], targets[s:s + b]
                pad = b - e.size
                e, r, t = (np.pad(x, (0, pad), mode="edge") for x in (e, r, t))
                got = rank_step(state.params, emb, *(_global_array(x, batch_sharding) for x in (e, r, t)),
                                _global_array(known.mask(e, r), batch_sharding))
                ranks.append(to_host(got)[:b - pad])
            return ranking_eval.ranking_metrics(np.concatenate(ranks))
        return run

    def make_step(start):
        return FedStep(train_step, lambda: (train, tokens, distances))

    def test(state, step):
        return {**ranking("test")(state, step), "num_params": num_params}

    info = {"dataset": config.dataset, "encoder": config.encoder, "scorer": config.scorer,
            "num_entities": splits.num_entities, "num_relations": splits.num_relations, "num_params": num_params}
    return Run(init_state=init_state, make_step=make_step, evaluate=ranking("valid"), replicated=replicated,
               info=info, hint="Lower config.optimizer.learning_rate.", test=test, abstract=abstract,
               state_sharding=state_sharding)


def report(result: dict, workdir: str) -> str:
    """The filtered test metrics of a link-prediction run as a table, and where its figures are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}"), ("MRR", f"{result['mrr']:.4f}"), ("Hits@1", f"{result['hits@1']:.4f}"),
            ("Hits@3", f"{result['hits@3']:.4f}"), ("Hits@10", f"{result['hits@10']:.4f}"),
            ("mean rank", f"{result['mean_rank']:.1f}"), ("parameters", f"{result['num_params']:,}")]
    return reports.result_table("filtered test metric", rows, ("loss_curves.png", "ranking_metrics.png"), workdir,
                                [f"metrics: {os.path.join(workdir, 'metrics.jsonl')}"], result)


TASK = register_task(Task("link_prediction", default_config, check, runlocal, setup, report))
