"""Evaluation metrics: filtered ranking for link prediction."""

import jax.numpy as jnp
import numpy as np

from vqjax.evals.ranking import KnownAnswers, filtered_rank, ranking_metrics


def test_known_answers_cover_both_directions():
    known = KnownAnswers(np.array([[0, 0, 1], [0, 0, 2], [3, 1, 0]]), num_entities=4, num_relations=2)
    m = known.mask(np.array([0, 1, 0, 2]), np.array([0, 2, 3, 0]))       # (0, r0, ?), (1, r0^-1, ?), (0, r1^-1, ?)
    np.testing.assert_array_equal(m, [[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])


def test_filtered_rank_removes_other_answers_and_counts_ties_half():
    scores = jnp.array([[5.0, 4.0, 3.0, 3.0, 1.0]])
    known = jnp.array([[True, False, True, False, False]])
    # target 2 (score 3): entity 0 is another known answer (filtered), entity 1 scores higher, entity 3 ties
    np.testing.assert_allclose(filtered_rank(scores, jnp.array([2]), known), [2.5])
    np.testing.assert_allclose(filtered_rank(scores, jnp.array([0]), known), [1.0])
    np.testing.assert_allclose(filtered_rank(scores, jnp.array([4]), jnp.zeros_like(known)), [5.0])
    m = ranking_metrics(np.array([1.0, 2.0, 4.0, 20.0]))
    np.testing.assert_allclose(m["mrr"], (1 + 0.5 + 0.25 + 0.05) / 4)
    assert m["hits@1"] == 0.25 and m["hits@3"] == 0.5 and m["hits@10"] == 0.75
