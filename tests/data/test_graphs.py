"""Knowledge-graph loaders: pykeen's and recbole's files (real when installed, mock layouts always)."""

import os

import numpy as np
import pytest

from vqjax.data.graphs import load_kg, package_dir


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("".join("\t".join(r) + "\n" for r in rows))


def test_pykeen_layout_ids_are_shared_and_sorted(tmp_path):
    _write(tmp_path / "umls" / "train.txt", [("b", "likes", "a"), ("a", "is", "c")])
    _write(tmp_path / "umls" / "valid.txt", [("c", "likes", "b")])
    _write(tmp_path / "umls" / "test.txt", [("d", "is", "a")])
    s = load_kg("umls", root=str(tmp_path))
    assert s.entities == ("a", "b", "c", "d") and s.relations == ("is", "likes")
    np.testing.assert_array_equal(s.train, [[1, 1, 0], [0, 0, 2]])
    np.testing.assert_array_equal(s.valid, [[2, 1, 1]])
    np.testing.assert_array_equal(s.test, [[3, 0, 0]])
    g = s.graph()
    assert g.num_nodes == 4 and g.num_edges == 2


def test_ml100k_layout_splits_transductively(tmp_path):
    rows = [("head_id:token", "relation_id:token", "tail_id:token")]
    rows += [(f"m{i % 7}", f"r{i % 3}", f"e{i % 11}") for i in range(200)]
    _write(tmp_path / "ml-100k.kg", rows)
    s = load_kg("ml100k_kg", root=str(tmp_path))
    assert s.train.shape[0] + 2 * 10 >= 200 - 1 and s.train.shape[0] == 180
    seen = set(s.train[:, 0]) | set(s.train[:, 2])
    for split in (s.valid, s.test):
        assert set(split[:, 0]) <= seen and set(split[:, 2]) <= seen
    again = load_kg("ml100k_kg", root=str(tmp_path))
    np.testing.assert_array_equal(again.test, s.test)


def test_bad_files_and_names_are_refused(tmp_path):
    _write(tmp_path / "nations" / "train.txt", [("a", "r")])
    with pytest.raises(ValueError, match="expected 3 tab-separated fields"):
        load_kg("nations", root=str(tmp_path))
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_kg("fb15k")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        package_dir("surely_not_an_installed_package_xyz")


@pytest.mark.parametrize("name,sizes", [("umls", (135, 46, 5216, 652, 661)), ("nations", (14, 55, 1592, 199, 201)),
                                        ("kinships", (104, 25, 8544, 1068, 1074))])
def test_real_pykeen_graphs(name, sizes):
    try:
        package_dir("pykeen")
    except FileNotFoundError:
        pytest.skip("the pykeen wheel is not installed (make installs it with the data extra)")
    s = load_kg(name)
    assert (s.num_entities, s.num_relations, len(s.train), len(s.valid), len(s.test)) == sizes


def test_real_ml100k_graph():
    try:
        package_dir("recbole")
    except FileNotFoundError:
        pytest.skip("the recbole wheel is not installed (make installs it with the data extra)")
    s = load_kg("ml100k_kg")
    assert s.num_entities == 34628 and s.num_relations == 24
    assert len(s.train) == 91631 - 2 * round(0.05 * 91631)
