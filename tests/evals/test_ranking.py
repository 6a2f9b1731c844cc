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


def test_evaluate_ranks_tail_and_head_queries_of_a_scorer():
    """``evaluate`` asks each triple as a tail and a head query: an oracle scorer ranks every answer first; a
    scorer that ignores the query gives each target its filtered rank by the fixed scores."""
    from vqjax.evals.ranking import evaluate

    triples = np.array([[0, 0, 1], [2, 1, 3]])
    known = KnownAnswers(triples, num_entities=4, num_relations=2)
    answers = {(0, 0): 1, (2, 1): 3, (1, 2): 0, (3, 3): 2}           # (entity, relation or inverse) -> target

    def oracle(entities, relations):
        scores = np.zeros((len(entities), 4), np.float32)
        for b, (e, r) in enumerate(zip(entities, relations)):
            scores[b, answers[(int(e), int(r))]] = 1.0
        return scores

    assert evaluate(oracle, triples, known, batch_size=3)["mrr"] == 1.0
    fixed = lambda entities, relations: np.tile(np.array([4.0, 3.0, 2.0, 1.0], np.float32), (len(entities), 1))
    got = evaluate(fixed, triples, known)
    want = ranking_metrics(np.array([2.0, 4.0, 1.0, 3.0]))                # targets 1, 3 (tails), 0, 2 (heads)
    assert got == want
