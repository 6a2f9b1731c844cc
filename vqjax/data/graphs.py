"""Bundled real knowledge graphs, read from the files inside two wheels (installed ``--no-deps``; never imported):

- ``umls``, ``nations``, ``kinships``: the benchmark triples shipped in ``pykeen/datasets/NAME/{train,valid,test}.txt``
  (tab-separated labels; UMLS has 135 entities, 46 relations, 5216/652/661 triples).
- ``ml100k_kg``: MovieLens-100k's Freebase knowledge graph in ``recbole/dataset_example/ml-100k/ml-100k.kg``
  (91.6k triples, 34.6k entities, 24 relations), split 90/5/5 with a fixed seed; valid and test keep only triples
  whose entities occur in train (the transductive setting).

Entity and relation ids number the sorted labels of all splits, so they are the same on every machine.

    splits = load_kg("umls")
    splits.train            # int64 [E, 3] (head, relation, tail)
    splits.graph()          # vqjax.graph.Graph of the training triples
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from vqjax.graph import Graph

__all__ = ["KG_DATASETS", "TripleSplits", "load_kg", "package_dir"]

KG_DATASETS = ("umls", "nations", "kinships", "ml100k_kg")
_PYKEEN = ("umls", "nations", "kinships")
_WHEELS = {"pykeen": "pykeen==1.11.1", "recbole": "recbole==1.2.1"}


@dataclasses.dataclass(frozen=True, eq=False)
class TripleSplits:
    """Train/valid/test triples of one knowledge graph with shared entity and relation ids.

    Attributes:
      name: dataset name.
      train, valid, test: int64 ``[E, 3]`` (head, relation, tail).
      entities, relations: the labels, index = id.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entities: tuple[str, ...]
    relations: tuple[str, ...]

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def graph(self):
        """The training triples as a :class:`vqjax.graph.Graph` over all entities."""
        return Graph.from_triples(self.train, num_nodes=self.num_entities, num_relations=self.num_relations)

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test'; got {name!r}")
        return getattr(self, name)


def package_dir(package: str) -> str:
    """Where an installed package's files are, without importing it (``FileNotFoundError`` when absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {package!r} wheel is not installed; its data files are read directly: "
            f"pip install --no-deps {_WHEELS.get(package, package)} (make installs it with the data extra)")
    return list(spec.submodule_search_locations)[0]


def _read_labels(path: str) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields (head, relation, tail); "
                                 f"got {len(parts)}")
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def _index(named: dict[str, list[tuple[str, str, str]]]) -> tuple[dict, tuple, tuple]:
    entities = sorted({x for rows in named.values() for h, _, t in rows for x in (h, t)})
    relations = sorted({r for rows in named.values() for _, r, _ in rows})
    e_id = {e: i for i, e in enumerate(entities)}
    r_id = {r: i for i, r in enumerate(relations)}
    arrays = {k: np.asarray([(e_id[h], r_id[r], e_id[t]) for h, r, t in rows], np.int64).reshape(-1, 3)
              for k, rows in named.items()}
    return arrays, tuple(entities), tuple(relations)


def load_kg(name: str, *, root: str | None = None, seed: int = 0) -> TripleSplits:
    """Loads one of :data:`KG_DATASETS`.

    Args:
      name: the dataset.
      root: a folder laid out like the wheel's (``NAME/{train,valid,test}.txt`` for the pykeen sets,
        ``ml-100k.kg`` for ``ml100k_kg``) instead of the installed wheel (tests use mock files).
      seed: the split seed of ``ml100k_kg``.

    Raises:
      ValueError: unknown name or malformed file; FileNotFoundError: the wheel or file is missing.
    """
    if name not in KG_DATASETS:
        raise ValueError(f"dataset must be one of {KG_DATASETS}; got {name!r}")
    if name in _PYKEEN:
        base = os.path.join(root or os.path.join(package_dir("pykeen"), "datasets"), name)
        named = {s: _read_labels(os.path.join(base, f"{s}.txt")) for s in ("train", "valid", "test")}
        arrays, entities, relations = _index(named)
        return TripleSplits(name, arrays["train"], arrays["valid"], arrays["test"], entities, relations)
    path = os.path.join(root or os.path.join(package_dir("recbole"), "dataset_example", "ml-100k"), "ml-100k.kg")
    with open(path, encoding="utf-8") as fh:
        header = fh.readline()
    if not header.startswith("head_id"):
        raise ValueError(f"{path}: expected a recbole .kg header 'head_id:token ...'; got {header[:40]!r}")
    rows = _read_labels(path)[1:]
    arrays, entities, relations = _index({"all": rows})
    triples = arrays["all"]
    order = np.random.default_rng(seed).permutation(triples.shape[0])
    n_eval = int(round(0.05 * triples.shape[0]))
    train = triples[order[2 * n_eval:]]
    seen = np.zeros(len(entities), bool)
    seen[train[:, 0]] = seen[train[:, 2]] = True

    def transductive(t):
        return t[seen[t[:, 0]] & seen[t[:, 2]]]

    valid, test = transductive(triples[order[:n_eval]]), transductive(triples[order[n_eval:2 * n_eval]])
    return TripleSplits(name, train, valid, test, entities, relations)
