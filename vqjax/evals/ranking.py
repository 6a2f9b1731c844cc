"""Ranking measures for link prediction on knowledge graphs: filtered ranks (Bordes et al. 2013's filtered
setting, ties counted half), mean reciprocal rank and Hits@k, and :func:`evaluate`, which ranks every answer of
a split's triples with a scoring function."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KnownAnswers", "filtered_rank", "ranking_metrics", "evaluate"]


class KnownAnswers:
    """Every true answer of each query ``(entity, relation)`` over all splits, for filtered ranking.

    Tail queries ``(h, r, ?)`` use relation ``r``; head queries ``(?, r, t)`` are asked as ``(t, r + R, ?)``.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        t = np.asarray(triples, np.int64)
        self.num_entities, self.num_relations = num_entities, num_relations
        queries = np.concatenate([t[:, 0] * 2 * num_relations + t[:, 1],
                                  t[:, 2] * 2 * num_relations + t[:, 1] + num_relations])
        answers = np.concatenate([t[:, 2], t[:, 0]])
        order = np.lexsort((answers, queries))
        self.queries, self.answers = queries[order], answers[order]

    def mask(self, entities: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """bool ``[B, N]``: the known answers of each query ``(entities[b], relations[b])``."""
        keys = np.asarray(entities, np.int64) * 2 * self.num_relations + np.asarray(relations, np.int64)
        lo = np.searchsorted(self.queries, keys, side="left")
        hi = np.searchsorted(self.queries, keys, side="right")
        counts = hi - lo
        rows = np.repeat(np.arange(keys.size), counts)
        cols = self.answers[np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                                       counts)]
        out = np.zeros((keys.size, self.num_entities), bool)
        out[rows, cols] = True
        return out


def filtered_rank(scores: jax.Array, targets: jax.Array, known: jax.Array) -> jax.Array:
    """Rank (1 = best) of ``scores[b, targets[b]]`` among the entities that are not other known answers, with ties
    counted half (the "realistic" rank: ``1 + #higher + #tied / 2``). float32 ``[B]``."""
    target = jnp.take_along_axis(scores, targets[:, None], axis=1)
    others = known & (jnp.arange(scores.shape[1])[None] != targets[:, None])
    valid = ~others
    higher = jnp.sum((scores > target) & valid, axis=1)
    tied = jnp.sum((scores == target) & valid, axis=1) - 1
    return 1.0 + higher.astype(jnp.float32) + 0.5 * tied.astype(jnp.float32)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Mean reciprocal rank and Hits@1/3/10 of ranks."""
    ranks = np.asarray(ranks, np.float64)
    return {"mrr": float(np.mean(1.0 / ranks)), "mean_rank": float(np.mean(ranks)),
            **{f"hits@{k}": float(np.mean(ranks <= k)) for k in (1, 3, 10)}}


def evaluate(score_all: Callable[[np.ndarray, np.ndarray], np.ndarray], triples: np.ndarray,
             known: KnownAnswers, *, batch_size: int = 256) -> dict[str, float]:
    """Filtered link-prediction metrics of a scorer on ``triples [N, 3]`` (head, relation, tail): each triple asked
    as a tail query ``(h, r, ?)`` and a head query ``(t, r + R, ?)``, ranked among all entities with the other
    known answers (``known``, over every split) filtered out.

    Args:
      score_all: ``(entities [B], relations [B]) -> scores [B, N]`` (relations ``>= R`` ask for heads).
      triples: int ``[N, 3]``.
      known: the :class:`KnownAnswers` of all splits.

    Returns:
      :func:`ranking_metrics` of the ``2N`` ranks (``mrr``, ``mean_rank``, ``hits@1/3/10``).
    """
    t = np.asarray(triples, np.int64)
    r = known.num_relations
    entities = np.concatenate([t[:, 0], t[:, 2]])
    relations = np.concatenate([t[:, 1], t[:, 1] + r])
    targets = np.concatenate([t[:, 2], t[:, 0]])
    ranks = []
    for s in range(0, len(entities), batch_size):
        e, rel, tgt = entities[s:s + batch_size], relations[s:s + batch_size], targets[s:s + batch_size]
        scores = jnp.asarray(score_all(e, rel), jnp.float32)
        ranks.append(np.asarray(filtered_rank(scores, jnp.asarray(tgt), jnp.asarray(known.mask(e, rel)))))
    return ranking_metrics(np.concatenate(ranks))
