"""The recommendation evaluator: a ranker beside popularity, by the same harness on the same split."""

import numpy as np
from recsys_data import write_mock_movielens

from vqjax.data.recommendation import leave_one_out, load_movielens
from vqjax.evals import recommendation as rec


def test_evaluate_scores_a_ranker_beside_popularity(tmp_path):
    splits = leave_one_out(load_movielens(write_mock_movielens(str(tmp_path))), cold_fraction=0.0)
    histories, targets = splits.split("test")
    answer = {row.tobytes(): t for row, t in zip(rec.history_matrix(histories, 6), targets)}

    def oracle(hist):                           # every user's held-out item first (the padding rows too)
        first = np.asarray([answer.get(np.asarray(h, np.int32).tobytes(), 0) for h in hist])
        return np.concatenate([first[:, None], np.full((len(hist), 9), -1)], axis=1)

    rows = rec.evaluate(oracle, splits, max_items=6, batch_size=8, name="oracle")
    assert [r["codec"] for r in rows] == ["oracle", "popularity"]
    assert rows[0]["recall@5"] == 1.0 and rows[0]["ndcg@10"] == 1.0 and rows[0]["users"] == len(targets)
    popular = rec.evaluate_ranker(rec.popularity_ranker(splits.train, splits.num_items), splits, "test",
                                  max_items=6, batch_size=8)
    assert rows[1] == {"codec": "popularity", **popular} and rows[1]["recall@10"] < 1.0
