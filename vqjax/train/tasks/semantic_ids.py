"""Task ``'semantic_ids'``: an RQ-VAE that gives every catalogue item a short code tuple (TIGER's semantic IDs).

Set-up reads MovieLens-100k (:mod:`vqjax.data.recommendation`) and its leave-one-out split (``split_seed``,
``cold_fraction``), fits the item features on the items seen in training (:class:`ItemFeaturizer`: content LSA,
BPR item vectors fitted in JAX, or both) and writes them to the workdir. Training minimises the feature
reconstruction error plus the quantizer's loss on batches of the training items (an epoch-wise permutation keyed by
(seed, epoch), so a resumed run sees the same batches); the quantizer's k-means init, EMA codebooks and dead-code
reseeding come from ``quantizer_kwargs``. Evaluation reports the reconstruction error, per-level codebook usage and
perplexity over the items, and the raw collision rate (items sharing a tuple).

The final test assigns the IDs: the training items' tuples made collision-free by ``config.collisions``
(``'extra_level'``: TIGER's extra numbering level; ``'balanced'``: Sinkhorn re-assignment of the last level inside
colliding groups), then the cold items -- never seen in training -- get theirs from their content through
:func:`~vqjax.models.semantic_ids.assign_new`, exactly as a new item would. Both collision treatments are measured
on the same codes. It writes ``item_ids.npz`` (the artifact: ``vqjax.Tokenizer.load(workdir)`` is a
:class:`vqjax.SemanticIdTokenizer`), ``id_table.tsv`` (every item's tuple), ``collisions.json`` (the tuples several
items share before disambiguation, with their titles) and ``semantic_ids.png`` (codebook usage per level and
items per tuple).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data.recommendation import (
    check_recommendation_dataset,
    leave_one_out,
    load_recommendation,
    window_batch,
)
from vqjax.evals import figures
from vqjax.evals.figures import pyplot
from vqjax.models import model_from_spec, quantizer_vocab_size
from vqjax.models.semantic_ids import (
    COLLISION_MODES,
    FEATURES,
    ItemFeaturizer,
    assign_new,
    balanced_last_level,
    collision_stats,
    disambiguate,
    fit_bpr,
    item_terms,
)
from vqjax.tokenizers.items import write_item_ids
from vqjax.train import reports, scaffold
from vqjax.train.config import check_positive, core_config, optimizer_config, plain
from vqjax.train.core import data_mesh, make_optimizer
from vqjax.train.cost import FedStep
from vqjax.train.sharding import gathering_params, state_shardings
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["ItemIdState", "default_config", "check", "runlocal", "setup", "report", "load_split", "item_features",
           "genre_coherence", "level_usage", "TASK"]


class ItemIdState(NamedTuple):
    """Step, RQ-VAE parameters, codebook statistics, optimizer state and the run's key data."""
    step: jax.Array
    params: Any
    vq_stats: Any
    opt_state: Any
    rng: jax.Array


def default_config() -> ml_collections.ConfigDict:
    """An RQ-VAE of 3 levels x 64 codes on content + collaborative features of MovieLens-100k, 10% of the test
    items withheld as cold items, TIGER's extra level against collisions."""
    c = core_config("semantic_ids")
    c.dataset = "ml-100k"
    c.data_root = ml_collections.FieldReference(None, field_type=str)
    c.split_seed = 0
    c.cold_fraction = 0.1
    c.features = "both"                      # 'content' | 'collaborative' | 'both'
    c.content_dim = 64
    c.cf = ml_collections.ConfigDict(dict(dim=64, steps=3000, batch_size=4096, learning_rate=0.01,
                                          weight_decay=1e-4))
    c.hidden = (256, 128)
    c.latent_dim = 32
    c.quantizer = "rvq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(num_levels=3, codebook_size=64, codebook_init="kmeans",
                                                        codebook_learning="ema", dead_code_threshold=1.0, beta=0.25))
    c.collisions = "extra_level"             # 'extra_level' (TIGER) | 'balanced' (Sinkhorn, LC-Rec)
    c.disambiguation_size = 64               # codes of the extra level
    c.sinkhorn = ml_collections.ConfigDict(dict(epsilon=0.05, iters=200))
    c.batch_size = 256
    c.num_train_steps = 3000
    c.log_every_steps = 100
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    c.optimizer = optimizer_config(1e-3)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """60 steps, small features and codebooks, BPR 200 steps."""
    c.content_dim, c.cf.dim, c.cf.steps, c.cf.batch_size = 16, 16, 200, 1024
    c.hidden, c.latent_dim = (64,), 16
    c.quantizer_kwargs.codebook_size = 16
    c.disambiguation_size = 64
    c.batch_size = 128
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 60, 20, 30, 30
    c.optimizer.warmup_steps = 10
    return c


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad semantic-ID config, naming the field, before any data is read."""
    check_recommendation_dataset(config.dataset)
    if config.features not in FEATURES:
        raise ValueError(f"config.features must be one of {FEATURES}; got {config.features!r}")
    if config.collisions not in COLLISION_MODES:
        raise ValueError(f"config.collisions must be one of {COLLISION_MODES}; got {config.collisions!r}")
    if not 0.0 <= config.cold_fraction < 1.0:
        raise ValueError(f"config.cold_fraction must lie in [0, 1); got {config.cold_fraction}")
    check_positive(config, "content_dim", "cf.dim", "cf.steps", "cf.batch_size", "latent_dim", "batch_size",
                   "disambiguation_size", "sinkhorn.iters")
    if not config.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in config.hidden):
        raise ValueError(f"config.hidden must be a non-empty tuple of positive ints; got {config.hidden!r}")
    if config.quantizer not in ("rvq", "pq", "aq"):
        raise ValueError(f"config.quantizer must give a code tuple per item ('rvq', 'pq' or 'aq'); got "
                         f"{config.quantizer!r}")
    if config.collisions == "balanced" and config.quantizer != "rvq":
        raise ValueError(f"config.collisions='balanced' re-assigns a residual quantizer's last level; it needs "
                         f"config.quantizer='rvq', got {config.quantizer!r}")
    if not config.sinkhorn.epsilon > 0:
        raise ValueError(f"config.sinkhorn.epsilon must be > 0; got {config.sinkhorn.epsilon}")


def load_split(config: ml_collections.ConfigDict):
    """The leave-one-out split a recommendation config names (``dataset``, ``data_root``, ``cold_fraction``,
    ``split_seed``); every recommendation task reads its data through this."""
    data = load_recommendation(config.dataset, config.data_root)
    return leave_one_out(data, cold_fraction=float(config.cold_fraction), seed=int(config.split_seed))


def item_features(config: ml_collections.ConfigDict, splits) -> tuple[ItemFeaturizer, np.ndarray, np.ndarray]:
    """``(featurizer, features [N, D] of every item, warm item indices)``: the featurizer is fitted on the items
    seen in training only; cold items' features come from their content as a new item's would."""
    cat = splits.data.catalogue
    docs = [item_terms(t, y, g) for t, y, g in zip(cat.titles, cat.years, cat.genres)]
    warm = splits.warm_items()
    cf = has_cf = None
    if config.features != "content":
        c = config.cf
        cf, has_cf = fit_bpr(splits.train, splits.num_items, dim=c.dim, steps=c.steps, batch_size=c.batch_size,
                             learning_rate=c.learning_rate, weight_decay=c.weight_decay, seed=int(config.seed))
    featurizer = ItemFeaturizer.fit(config.features, [docs[i] for i in warm], content_dim=config.content_dim,
                                    cf=None if cf is None else cf[warm])
    return featurizer, featurizer.features(docs, cf, has_cf), warm


def _train_step(model, tx, state: ItemIdState, x):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        (recon, q), upd = model.apply({"params": params, "vq_stats": state.vq_stats}, x, train=True,
                                      mutable=["vq_stats"], rngs={"vq": rng})
        recon_loss = jnp.mean((recon - x) ** 2)
        return recon_loss + q.loss, (upd.get("vq_stats", {}), q, recon_loss)

    (loss, (vq_stats, q, recon_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "recon_loss": recon_loss, "quantizer_loss": q.loss, "grad_norm": optax.tree.norm(grads),
               **{f"q_{k}": v for k, v in q.metrics.items()}}
    return state._replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), vq_stats=vq_stats,
                          opt_state=opt_state), metrics


@functools.partial(jax.jit, static_argnums=0)
def _codes_and_error(model, variables, x):
    codes = model.apply(variables, x, method=model.encode)
    recon = model.apply(variables, codes, method=model.decode)
    return codes, jnp.mean((recon - x) ** 2)


@functools.partial(jax.jit, static_argnums=0)
def _last_costs(model, variables, x):
    return model.apply(variables, x, method=model.last_level_costs)


def level_usage(codes: np.ndarray, sizes) -> dict:
    """Per level: the fraction of its codes some item uses, and the perplexity of the items' codes."""
    out = {}
    for level, k in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=int(k)).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        out[f"usage_level{level}"] = float(np.mean(counts > 0))
        out[f"perplexity_level{level}"] = float(np.exp(-np.sum(p * np.log(p))))
    return out


def genre_coherence(codes: np.ndarray, genres, levels: int = 1) -> float:
    """Mean Jaccard similarity of the genre sets of item pairs that share their first ``levels`` codes (pairs of
    all items when ``levels=0``): how alike the items an ID prefix groups are."""
    names = sorted({g for gs in genres for g in gs})
    onehot = np.zeros((len(genres), len(names)), np.float32)
    for i, gs in enumerate(genres):
        onehot[i, [names.index(g) for g in gs]] = 1.0
    _, group = np.unique(codes[:, :levels], axis=0, return_inverse=True) if levels else (None, np.zeros(len(codes)))
    group = np.asarray(group).reshape(-1)
    total, pairs = 0.0, 0
    for g in np.unique(group):
        x = onehot[group == g]
        if len(x) < 2:
            continue
        inter = x @ x.T
        union = x.sum(1)[:, None] + x.sum(1)[None, :] - inter
        jac = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        total += float(jac.sum() - np.trace(jac))
        pairs += len(x) * (len(x) - 1)
    return total / max(pairs, 1)


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the split, fits and saves the featurizer, builds the RQ-VAE and the steps."""
    splits = load_split(config)
    featurizer, features, warm = item_features(config, splits)
    if jax.process_index() == 0:
        featurizer.save(workdir)
    if config.batch_size > warm.size:
        raise ValueError(f"config.batch_size ({config.batch_size}) must be <= the {warm.size} items seen in training")
    spec_model = {"name": "rqvae", "kwargs": {"input_dim": int(features.shape[1]), "hidden": list(config.hidden),
                                              "latent_dim": int(config.latent_dim), "quantizer": config.quantizer,
                                              "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}}
    model = model_from_spec(spec_model)
    levels = model.num_levels
    k = quantizer_vocab_size(model.quantizer)
    extra = config.collisions == "extra_level"
    level_sizes = [k] * levels + ([int(config.disambiguation_size)] if extra else [])
    space = int(np.prod([float(s) for s in level_sizes]))
    if splits.num_items > space:
        raise ValueError(f"the catalogue has {splits.num_items} items, more than the {space} tuples of the code "
                         f"space (levels {level_sizes}); use more levels or larger codebooks")
    replicated, _ = data_mesh({"batch_size": config.batch_size}, devices)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    train_x = jax.device_put(jnp.asarray(features[warm]), replicated)
    unseen = np.setdiff1d(np.arange(splits.num_items), warm)      # cold items and items only ever held out

    def init_state(key):
        k_params, k_vq, k_run = jax.random.split(key, 3)
        variables = model.init({"params": k_params, "vq": k_vq}, train_x[:config.batch_size], train=False)
        return ItemIdState(jnp.int32(0), variables["params"], variables.get("vq_stats", {}),
                           tx.init(variables["params"]), jax.random.key_data(k_run))

    abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    state_sharding = state_shardings(abstract, replicated.mesh, config.sharding)
    train_model = scaffold.training_model(spec_model, config)
    step_fn = jax.jit(gathering_params(functools.partial(_train_step, train_model, tx), replicated.mesh,
                                       config.sharding),
                      in_shardings=(state_sharding, replicated), out_shardings=(state_sharding, replicated),
                      donate_argnums=0)
    rows, b, seed = np.arange(warm.size), int(config.batch_size), int(config.seed)

    def make_step(start):
        counter = [start]

        def next_batch():
            idx = window_batch(rows, seed, counter[0], b)         # the items of this step's batch
            counter[0] += 1
            return (train_x[jnp.asarray(idx)],)
        return FedStep(step_fn, next_batch)

    def variables_of(state):
        return jax.device_put({"params": state.params, "vq_stats": state.vq_stats}, replicated)

    def evaluate(state, step):
        codes, err = _codes_and_error(model, variables_of(state), train_x)
        codes = np.asarray(codes)
        raw = collision_stats(codes)
        return {"recon_mse": float(err), **level_usage(codes, [k] * levels), "collision_rate": raw["collision_rate"],
                "colliding_items": raw["colliding_items"], "max_items_per_tuple": raw["max_items_per_tuple"]}

    def test(state, step):
        variables = variables_of(state)
        raw = np.asarray(_codes_and_error(model, variables, train_x)[0])
        costs = np.asarray(_last_costs(model, variables, train_x)) if config.quantizer == "rvq" else None
        extra_codes = disambiguate(raw, int(config.disambiguation_size))
        result = {"raw_" + key: v for key, v in collision_stats(raw).items()}
        result["extra_level_collision_rate"] = collision_stats(extra_codes)["collision_rate"]
        result["extra_level_max_index"] = int(extra_codes[:, -1].max())
        if costs is not None:
            try:
                balanced = balanced_last_level(raw, costs, epsilon=float(config.sinkhorn.epsilon),
                                               iters=int(config.sinkhorn.iters))
                moved = balanced[:, -1] != raw[:, -1]
                result["balanced_feasible"] = 1.0
                result["balanced_collision_rate"] = collision_stats(balanced)["collision_rate"]
                result["balanced_reassigned"] = float(np.mean(moved))
                picked = np.take_along_axis(costs, balanced[:, -1:], 1)[:, 0]
                nearest = np.take_along_axis(costs, raw[:, -1:], 1)[:, 0]
                result["balanced_extra_cost"] = float(np.mean(picked - nearest) / max(np.mean(costs.min(1)), 1e-12))
            except ValueError as err:
                if config.collisions == "balanced":
                    raise
                logging.getLogger("vqjax.train").warning("no balanced assignment: %s", err)
                result["balanced_feasible"] = 0.0
                balanced = None
        warm_codes = extra_codes if extra else balanced
        codes = np.zeros((splits.num_items, warm_codes.shape[1]), np.int32)
        codes[warm] = warm_codes
        if unseen.size:                 # items never trained on get IDs as new items do, after the others
            new_x = jnp.asarray(features[unseen])
            prefixes = np.asarray(_codes_and_error(model, variables, new_x)[0])
            new_costs = np.asarray(_last_costs(model, variables, new_x)) if not extra else None
            codes[unseen] = assign_new(warm_codes, prefixes, config.collisions, size=int(config.disambiguation_size),
                                       costs=new_costs)
        final = collision_stats(codes)
        genres = splits.data.catalogue.genres
        result.update({"genre_coherence_level0": genre_coherence(codes, genres, 1),
                       "genre_coherence_level1": genre_coherence(codes, genres, 2),
                       "genre_coherence_any_pair": genre_coherence(codes, genres, 0)})
        result.update({"collision_rate": final["collision_rate"], "num_items": int(splits.num_items),
                       "num_cold_items": int(splits.cold.sum()), "num_unseen_items": int(unseen.size),
                       "code_length": int(codes.shape[1]),
                       **level_usage(codes, level_sizes)})
        if jax.process_index() == 0:
            write_item_ids(workdir, codes, int(step))
            _write_tables(workdir, splits.data.catalogue, codes, raw, warm, splits.cold)
            _plot(os.path.join(workdir, "semantic_ids.png"), codes, raw, level_sizes)
        return result

    spec = {"modality": "item", "model": spec_model,
            "input": {"shape": [], "dtype": "int64", "range": [0, int(splits.num_items) - 1]},
            "codes_shape": [len(level_sizes)], "vocab_size": int(max(level_sizes)), "level_sizes": level_sizes,
            "collisions": config.collisions, "num_items": int(splits.num_items), "features": config.features,
            "dataset": config.dataset, "split": {"cold_fraction": float(config.cold_fraction),
                                                  "split_seed": int(config.split_seed)},
            "weights": {"params": "params", "vq_stats": "vq_stats"}}
    info = {"dataset": config.dataset, "num_items": int(splits.num_items), "warm_items": int(warm.size),
            "cold_items": int(splits.cold.sum()), "unseen_items": int(unseen.size), "feature_dim": int(features.shape[1]), "level_sizes": level_sizes}
    return Run(init_state=init_state, make_step=make_step, evaluate=evaluate, replicated=replicated, info=info,
               state_sharding=state_sharding,
               hint="Lower config.optimizer.learning_rate.", test=test, spec=spec, abstract=abstract)


def _write_tables(workdir, catalogue, codes, raw, warm, cold) -> None:
    with open(os.path.join(workdir, "id_table.tsv"), "w") as fh:
        fh.write("item\tsource_id\tcold\ttitle\tcodes\n")
        for i in range(codes.shape[0]):
            fh.write(f"{i}\t{int(catalogue.source_ids[i])}\t{int(cold[i])}\t{catalogue.titles[i]}\t"
                     f"{' '.join(map(str, codes[i]))}\n")
    groups: dict[tuple, list] = {}
    for row, item in zip(raw, warm):
        groups.setdefault(tuple(int(c) for c in row), []).append(int(item))
    shared = sorted(((t, items) for t, items in groups.items() if len(items) > 1), key=lambda p: -len(p[1]))
    with open(os.path.join(workdir, "collisions.json"), "w") as fh:
        json.dump([{"tuple": list(t), "items": items, "titles": [catalogue.titles[i] for i in items],
                    "ids": [codes[i].tolist() for i in items]} for t, items in shared], fh, indent=1)


def _plot(path, codes, raw, level_sizes) -> None:
    plt = pyplot()

    levels = raw.shape[1]
    fig, axes = plt.subplots(1, levels + 1, figsize=(3.2 * (levels + 1), 2.8))
    for level in range(levels):
        counts = np.sort(np.bincount(codes[:, level], minlength=level_sizes[level]))[::-1]
        axes[level].bar(np.arange(counts.size), counts, width=1.0)
        axes[level].set_title(f"level {level}: {np.mean(counts > 0):.0%} of {level_sizes[level]} codes used",
                              fontsize=8)
        axes[level].set_xlabel("code (by items)", fontsize=7)
    _, sizes = np.unique(raw, axis=0, return_counts=True)
    axes[-1].hist(sizes, bins=np.arange(1, sizes.max() + 2) - 0.5)
    axes[-1].set_yscale("log")
    axes[-1].set_title("items per tuple before disambiguation", fontsize=8)
    figures.save_figure(fig, path)


def report(result: dict, workdir: str) -> str:
    """The IDs' collision rates and codebook usage as a table, and where the tables and figure are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", result["step"]), ("items (cold; never in training)",
                                             f"{result['num_items']} ({result['num_cold_items']}; "
                                             f"{result['num_unseen_items']})"),
            ("code length", result["code_length"]), ("reconstruction MSE", f"{result['recon_mse']:.4f}"),
            ("collision rate before handling", f"{result['raw_collision_rate']:.2%}"),
            ("items per tuple, max", result["raw_max_items_per_tuple"]),
            ("collision rate, extra level", f"{result['extra_level_collision_rate']:.2%}")]
    if "balanced_collision_rate" in result:
        rows.append(("collision rate, balanced", f"{result['balanced_collision_rate']:.2%}"))
    rows.append(("collision rate of the IDs", f"{result['collision_rate']:.2%}"))
    rows.append(("genre Jaccard of items sharing code 0 / codes 0-1 / any two items",
                 f"{result['genre_coherence_level0']:.3f} / {result['genre_coherence_level1']:.3f} / "
                 f"{result['genre_coherence_any_pair']:.3f}"))
    rows += [(f"usage level {i}", f"{result[f'usage_level{i}']:.1%}") for i in range(result["code_length"])]
    return reports.result_table("semantic IDs", rows, ("semantic_ids.png", "loss_curves.png"), workdir,
                                [f"IDs: {os.path.join(workdir, 'id_table.tsv')}",
                                 f"collisions: {os.path.join(workdir, 'collisions.json')}"], result)


TASK = register_task(Task("semantic_ids", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
