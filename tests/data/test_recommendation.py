"""MovieLens loading, leave-one-out splits with cold items, training windows."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from recsys_data import write_mock_movielens  # noqa: E402

from vqjax.data import recommendation as rec


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    return write_mock_movielens(str(tmp_path_factory.mktemp("ml")))


def test_load_orders_by_time_and_numbers_items(mock, tmp_path):
    data = rec.load_movielens(mock)
    assert data.num_items == 60 and data.num_users == 40
    assert data.catalogue.source_ids.tolist() == list(range(1, 61))
    # user 1's items in timestamp order, as 0-based item indices
    import pandas as pd

    inter = pd.read_csv(os.path.join(mock, "ml-100k.inter"), sep="\t")
    first = inter[inter["user_id:token"] == 1].sort_values("timestamp:float", kind="stable")["item_id:token"]
    first = first.to_numpy() - 1
    np.testing.assert_array_equal(data.sequences[0], first)
    assert data.catalogue.genres[0][0] == "Action" and data.catalogue.years[1] == 1981


def test_unknown_items_and_bad_columns_are_refused(mock, tmp_path):
    import shutil

    root = str(tmp_path / "bad")
    shutil.copytree(mock, root)
    with open(os.path.join(root, "ml-100k.inter"), "a") as fh:
        fh.write("1\t999\t3\t5000\n")
    with pytest.raises(ValueError, match="missing from ml-100k.item"):
        rec.load_movielens(root)
    with open(os.path.join(root, "ml-100k.item"), "w") as fh:
        fh.write("item_id:token\ttitle\n1\tx\n")
    with pytest.raises(ValueError, match="movie_title"):
        rec.load_movielens(root)
    with pytest.raises(ValueError, match="dataset must be one of"):
        rec.load_movielens(root, "ml-1m")


def test_leave_one_out_and_cold_items(mock):
    data = rec.load_movielens(mock)
    plain = rec.leave_one_out(data)
    for u, seq in enumerate(data.sequences):
        np.testing.assert_array_equal(plain.train[u], seq[:-2])
        assert plain.valid_target[u] == seq[-2] and plain.test_target[u] == seq[-1]
        np.testing.assert_array_equal(plain.test_history[u], seq[:-1])
    splits = rec.leave_one_out(data, cold_fraction=0.3, seed=1)
    cold = splits.cold
    assert cold.sum() == round(0.3 * np.unique(splits.test_target).size)
    assert cold[splits.test_target].any()
    for u in range(data.num_users):                       # cold items are nowhere but in test targets
        assert not cold[splits.test_history[u]].any() and not cold[splits.valid_target[u]]
    assert not cold[splits.warm_items()].any()
    again = rec.leave_one_out(data, cold_fraction=0.3, seed=1)
    np.testing.assert_array_equal(again.cold, cold)
    with pytest.raises(ValueError, match="cold_fraction"):
        rec.leave_one_out(data, cold_fraction=1.0)


def test_training_windows_cover_each_target_once():
    seqs = [np.arange(10, dtype=np.int32), np.asarray([5, 6], np.int32), np.asarray([7], np.int32)]
    w = rec.training_windows(seqs, 4)
    targets = []
    for row in w:
        real = row[row >= 0]
        targets += real[1:].tolist()
        assert (row[:len(row) - len(real)] == -1).all()
    assert sorted(targets) == sorted(list(range(1, 10)) + [6])
    np.testing.assert_array_equal(rec.window_batch(w, 0, 3, 2), rec.window_batch(w, 0, 3, 2))
    with pytest.raises(ValueError, match="max_len"):
        rec.training_windows(seqs, 1)


def test_real_movielens_when_installed():
    pytest.importorskip("pandas")
    try:
        data = rec.load_movielens()
    except FileNotFoundError:
        pytest.skip("the recbole wheel (data extra) is not installed")
    assert data.num_users == 943 and data.num_items == 1682
    assert sum(len(s) for s in data.sequences) == 100_000


def test_a_users_interactions_and_item_table_from_files(tmp_path):
    import pandas as pd

    from vqjax.data.recommendation import load_interactions, load_recommendation

    folder = tmp_path / "shop"
    folder.mkdir()
    pd.DataFrame({"user": ["u2", "u1", "u1", "u2", "u1"], "item": ["b", "c", "a", "a", "b"],
                  "timestamp": [5, 3, 1, 2, 1]}).to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"item": ["a", "b", "c", "d"], "title": ["Apple", "Bread", "Cheese", "Dates"],
                  "year": ["2001", "", "2003", "2004"], "genres": ["fruit", "bakery|staple", "dairy", "fruit"]}
                 ).to_parquet(folder / "items.parquet")
    data = load_recommendation(f"files:{folder}")
    assert data.num_items == 4 and data.num_users == 2
    assert data.catalogue.titles == ("Apple", "Bread", "Cheese", "Dates")
    assert data.catalogue.genres[1] == ("bakery", "staple") and data.catalogue.years.tolist() == [2001, 0, 2003, 2004]
    # each user in time order; u1's tie at t=1 keeps the file's order (a before b), c at t=3 last
    assert [s.tolist() for s in data.sequences] == [[0, 1, 2], [0, 1]]
    only = load_interactions(str(folder / "interactions.csv"))
    assert only.num_items == 3 and only.catalogue.titles == ("a", "b", "c")
    pd.DataFrame({"user": [1], "item": ["z"], "timestamp": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing from the item table"):
        load_interactions(str(tmp_path / "bad.csv"), items=str(folder / "items.parquet"))
    with pytest.raises(ValueError, match="columns user, item, timestamp"):
        pd.DataFrame({"user": [1], "product": [2]}).to_csv(tmp_path / "cols.csv", index=False)
        load_interactions(str(tmp_path / "cols.csv"))
