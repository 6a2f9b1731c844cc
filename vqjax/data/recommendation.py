"""MovieLens-100k for sequential recommendation: the catalogue, users' chronological histories and the
leave-one-out splits that every recommender of :mod:`vqjax.train.tasks` is judged on.

The files are the ones bundled in the ``recbole`` wheel (installed ``--no-deps``, read with pandas, never
imported): ``recbole/dataset_example/ml-100k/ml-100k.{inter,item}`` (100,000 ratings of 943 users on 1,682 movies;
each movie's title, release year and genres). Every rating is an interaction (implicit feedback, as in SASRec and
TIGER). Items are numbered 0..N-1 by their MovieLens id, users likewise, so ids are the same on every machine.

    data = load_movielens()                       # Catalogue + one chronological item sequence per user
    splits = leave_one_out(data, cold_fraction=0.1, seed=0)
    splits.train[u]                               # int32 items of user u the models train on
    splits.test_history[u], splits.test_target[u] # all but the last item -> the last item

Leave-one-out (Kang & McAuley 2018; Rajput et al. 2023): each user's last item is the test target, the one before
it the validation target, the rest is training history. Cold start: ``cold_fraction`` of the distinct test
targets are withheld from training altogether (every interaction with them is removed from every history except
where the item is the test target), so those items are seen for the first time at test.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from vqjax.data.graphs import package_dir

__all__ = ["Catalogue", "Interactions", "RecSplits", "load_movielens", "load_interactions", "load_recommendation",
           "check_recommendation_dataset", "leave_one_out", "training_windows", "window_batch",
           "RECOMMENDATION_DATASETS"]

RECOMMENDATION_DATASETS = ("ml-100k",)


@dataclasses.dataclass(frozen=True, eq=False)
class Catalogue:
    """The items: ``titles``, ``years`` (int, 0 when unknown) and ``genres`` (tuples of names), index = item;
    ``source_ids`` are the dataset's own ids."""

    titles: tuple[str, ...]
    years: np.ndarray
    genres: tuple[tuple[str, ...], ...]
    source_ids: np.ndarray

    @property
    def num_items(self) -> int:
        return len(self.titles)

    def subset(self, items) -> "Catalogue":
        """The catalogue of ``items`` only (in that order)."""
        items = np.asarray(items, np.int64)
        return Catalogue(tuple(self.titles[i] for i in items), self.years[items],
                         tuple(self.genres[i] for i in items), self.source_ids[items])


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """A catalogue and each user's items in time order (``sequences[u]`` int32; equal timestamps keep the file's
    order, not the item ids', which would put the highest id of a rating session last)."""

    name: str
    catalogue: Catalogue
    sequences: tuple[np.ndarray, ...]

    @property
    def num_items(self) -> int:
        return self.catalogue.num_items

    @property
    def num_users(self) -> int:
        return len(self.sequences)


@dataclasses.dataclass(frozen=True, eq=False)
class RecSplits:
    """Leave-one-out splits of :class:`Interactions` (see the module docstring).

    Attributes:
      data: the interactions split.
      train: per user, the training items (time order).
      valid_history, valid_target: the training items -> the second-last item.
      test_history, test_target: the training items and the validation item -> the last item.
      cold: bool ``[N]``: items withheld from training (they occur only as test targets).
    """

    data: Interactions
    train: tuple[np.ndarray, ...]
    valid_history: tuple[np.ndarray, ...]
    valid_target: np.ndarray
    test_history: tuple[np.ndarray, ...]
    test_target: np.ndarray
    cold: np.ndarray

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @property
    def num_users(self) -> int:
        return self.data.num_users

    def warm_items(self) -> np.ndarray:
        """Items seen in training (sorted), the only ones an ID model is fitted on."""
        seen = np.zeros(self.num_items, bool)
        for seq in self.train:
            seen[seq] = True
        return np.flatnonzero(seen)

    def split(self, name: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """``(histories, targets)`` of ``'valid'`` or ``'test'``."""
        if name not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test'; got {name!r}")
        return (self.valid_history, self.valid_target) if name == "valid" else (self.test_history, self.test_target)


def _read_table(path: str, columns: tuple[str, ...]):
    import pandas as pd  # optional dependency

    if not os.path.exists(path):
        raise FileNotFoundError(f"MovieLens file {path!r} does not exist")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: expected recbole columns {list(columns)}; missing {missing} (has "
                         f"{list(table.columns)})")
    return table


def load_movielens(root: str | None = None, name: str = "ml-100k") -> Interactions:
    """MovieLens-100k's catalogue and chronological user histories.

    Args:
      root: a folder holding ``ml-100k.inter`` and ``ml-100k.item`` in recbole's tab-separated layout (tests use
        mock files); default: the installed recbole wheel's copy.
      name: the dataset (:data:`RECOMMENDATION_DATASETS`).

    Raises:
      ValueError: unknown name, malformed files or interactions with items the catalogue lacks;
      FileNotFoundError: the wheel or a file is missing.
    """
    if name not in RECOMMENDATION_DATASETS:
        raise ValueError(f"dataset must be one of {RECOMMENDATION_DATASETS}; got {name!r}")
    if root is None:

        root = os.path.join(package_dir("recbole"), "dataset_example", "ml-100k")
    items = _read_table(os.path.join(root, f"{name}.item"),
                        ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"))
    inter = _read_table(os.path.join(root, f"{name}.inter"), ("user_id:token", "item_id:token", "timestamp:float"))
    try:
        source = items["item_id:token"].astype(np.int64).to_numpy()
        users = inter["user_id:token"].astype(np.int64).to_numpy()
        inter_items = inter["item_id:token"].astype(np.int64).to_numpy()
        times = inter["timestamp:float"].astype(np.float64).to_numpy()
    except ValueError as err:
        raise ValueError(f"{root}: item, user ids and timestamps must be numbers ({err})") from err
    if len(np.unique(source)) != len(source):
        raise ValueError(f"{root}/{name}.item lists an item id twice")
    order = np.argsort(source)
    source = source[order]
    years = np.asarray([int(y) if y.strip().isdigit() else 0 for y in items["release_year:token"]], np.int64)[order]
    titles = tuple(items["movie_title:token_seq"].to_numpy()[order].tolist())
    genres = tuple(tuple(g.split()) for g in items["class:token_seq"].to_numpy()[order])
    pos = np.searchsorted(source, inter_items)
    unknown = (pos >= len(source)) | (source[np.minimum(pos, len(source) - 1)] != inter_items)
    if unknown.any():
        raise ValueError(f"{root}/{name}.inter has {int(unknown.sum())} interaction(s) with items missing from "
                         f"{name}.item (e.g. {int(inter_items[unknown][0])})")
    user_ids, user_index = np.unique(users, return_inverse=True)
    key = np.lexsort((np.arange(len(times)), times, user_index))  # by user, then time; ties in the file's order
    item_seq, user_sorted = pos[key].astype(np.int32), user_index[key]
    bounds = np.searchsorted(user_sorted, np.arange(len(user_ids) + 1))
    sequences = tuple(item_seq[bounds[u]:bounds[u + 1]] for u in range(len(user_ids)))
    return Interactions(name, Catalogue(titles, years, genres, source), sequences)


def _table(path: str):
    import pandas as pd  # optional dependency

    if path.lower().endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.lower().endswith((".tsv", ".inter", ".item")) else ",",
                       keep_default_na=False)


def _find(folder: str, stem: str) -> str | None:
    for ext in (".csv", ".tsv", ".parquet"):
        if os.path.exists(os.path.join(folder, stem + ext)):
            return os.path.join(folder, stem + ext)
    return None


def load_interactions(path: str, items: str | None = None) -> Interactions:
    """A user's own interactions: a CSV/TSV/Parquet table with ``user``, ``item`` and ``timestamp`` columns (any
    ids: numbers or strings), and optionally an item table with ``item`` and any of ``title``, ``year`` and
    ``genres`` (separated by ``|`` or spaces). ``path`` may be a folder holding ``interactions.{csv,tsv,parquet}``
    and, optionally, ``items.{csv,tsv,parquet}``. Items are numbered in the order of their sorted ids (the item
    table's, else those the interactions name), users likewise; each user's items are in time order (ties keep the
    file's order).

    Raises:
      ValueError: a missing column, an interaction with an item the item table lacks, or no interactions.
    """
    if os.path.isdir(path):
        folder = path
        path = _find(folder, "interactions")
        if path is None:
            raise FileNotFoundError(f"{folder}: no interactions.csv, .tsv or .parquet")
        items = items or _find(folder, "items")
    inter = _table(path)
    missing = [c for c in ("user", "item", "timestamp") if c not in inter.columns]
    if missing:
        raise ValueError(f"{path}: interactions need columns user, item, timestamp; missing {missing} (has "
                         f"{list(inter.columns)})")
    if not len(inter):
        raise ValueError(f"{path}: no interactions")
    inter_items = inter["item"].astype(str).to_numpy()
    if items is not None:
        table = _table(items)
        if "item" not in table.columns:
            raise ValueError(f"{items}: the item table needs an 'item' column (has {list(table.columns)})")
        ids = table["item"].astype(str).to_numpy()
        if len(set(ids)) != len(ids):
            raise ValueError(f"{items}: an item id appears twice")
    else:
        table, ids = None, np.unique(inter_items)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    pos = np.searchsorted(ids, inter_items)
    unknown = (pos >= len(ids)) | (ids[np.minimum(pos, len(ids) - 1)] != inter_items)
    if unknown.any():
        raise ValueError(f"{path}: {int(unknown.sum())} interaction(s) name items missing from the item table "
                         f"{items} (e.g. {inter_items[unknown][0]!r})")
    column = lambda name, default: (table[name].to_numpy()[order] if table is not None and name in table.columns
                                    else np.asarray([default] * len(ids), object))
    titles = tuple(str(t) for t in (column("title", None) if table is not None and "title" in table.columns
                                    else ids))
    years = np.asarray([int(y) if str(y).strip().isdigit() else 0 for y in column("year", 0)], np.int64)
    genres = tuple(tuple(str(g).replace("|", " ").split()) for g in column("genres", ""))
    numeric = all(i.lstrip("-").isdigit() for i in ids)
    source = ids.astype(np.int64) if numeric else np.arange(len(ids), dtype=np.int64)
    times = inter["timestamp"].astype(np.float64).to_numpy()
    user_ids, user_index = np.unique(inter["user"].astype(str).to_numpy(), return_inverse=True)
    key = np.lexsort((np.arange(len(times)), times, user_index))
    item_seq, user_sorted = pos[key].astype(np.int32), user_index[key]
    bounds = np.searchsorted(user_sorted, np.arange(len(user_ids) + 1))
    sequences = tuple(item_seq[bounds[u]:bounds[u + 1]] for u in range(len(user_ids)))
    return Interactions(os.path.basename(os.path.normpath(path)), Catalogue(titles, years, genres, source), sequences)


def check_recommendation_dataset(dataset: str) -> str:
    """A bundled recommendation dataset (:data:`RECOMMENDATION_DATASETS`) or ``files:PATH`` (a user's
    interactions, :func:`load_interactions`)."""
    if dataset in RECOMMENDATION_DATASETS or (isinstance(dataset, str) and dataset.startswith("files:") and
                                              len(dataset) > 6):
        return dataset
    raise ValueError(f"config.dataset must be one of {RECOMMENDATION_DATASETS} or 'files:PATH' (your interactions "
                     f"table, or a folder with interactions and items tables); got {dataset!r}")


def load_recommendation(dataset: str, root: str | None = None) -> Interactions:
    """:func:`load_movielens` for a bundled name, :func:`load_interactions` for ``files:PATH``."""
    check_recommendation_dataset(dataset)
    if dataset.startswith("files:"):
        return load_interactions(os.path.expanduser(dataset[len("files:"):]))
    return load_movielens(root, dataset)


def leave_one_out(data: Interactions, *, cold_fraction: float = 0.0, seed: int = 0) -> RecSplits:
    """Leave-one-out splits with ``cold_fraction`` of the distinct test targets withheld from training.

    Raises:
      ValueError: a user with fewer than 3 items, or ``cold_fraction`` outside [0, 1).
    """
    if not 0.0 <= float(cold_fraction) < 1.0:
        raise ValueError(f"cold_fraction must lie in [0, 1); got {cold_fraction}")
    short = [u for u, s in enumerate(data.sequences) if len(s) < 3]
    if short:
        raise ValueError(f"leave-one-out needs at least 3 items per user; {len(short)} user(s) have fewer (user "
                         f"{short[0]} has {len(data.sequences[short[0]])})")
    last = np.asarray([s[-1] for s in data.sequences], np.int32)
    targets = np.unique(last)
    cold = np.zeros(data.num_items, bool)
    n_cold = int(round(cold_fraction * targets.size))
    if n_cold:
        cold[np.random.default_rng(seed).choice(targets, n_cold, replace=False)] = True
    train, valid_t, test_h = [], [], []
    for seq in data.sequences:
        kept = seq[:-1][~cold[seq[:-1]]]
        if kept.size < 2:
            raise ValueError(f"withholding cold items leaves a user with {kept.size} item(s) before the test item; "
                             f"lower cold_fraction ({cold_fraction})")
        train.append(kept[:-1])
        valid_t.append(kept[-1])
        test_h.append(kept)
    return RecSplits(data, tuple(train), tuple(train), np.asarray(valid_t, np.int32), tuple(test_h), last, cold)


def training_windows(sequences, max_len: int) -> np.ndarray:
    """int32 ``[W, max_len]`` windows of the training sequences, right-aligned and left-padded with -1: every
    sequence's last ``max_len`` items, then its earlier stretches ending every ``max_len`` items before, so each
    item is a prediction target once (SASRec's and TIGER's training examples)."""
    if int(max_len) < 2:
        raise ValueError(f"max_len must be >= 2; got {max_len}")
    rows = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            piece = seq[max(0, end - max_len):end]
            row = np.full(max_len, -1, np.int32)
            row[max_len - len(piece):] = piece
            rows.append(row)
            end -= max_len - 1                           # the next window ends where this one's inputs began
    if not rows:
        raise ValueError("training_windows: no sequence has 2 or more items")
    return np.stack(rows)


def window_batch(windows: np.ndarray, seed: int, step: int, batch_size: int) -> np.ndarray:
    """Rows of ``windows`` (training windows, or any array of examples) for training step ``step``: an epoch-wise
    permutation keyed by ``(seed, epoch)``, so a resumed run sees the same batches."""
    n = windows.shape[0]
    per_epoch = max(n // batch_size, 1)
    epoch, offset = divmod(int(step), per_epoch)
    order = np.random.default_rng([int(seed), epoch]).permutation(n)
    idx = np.resize(order, max(n, batch_size))[offset * batch_size:(offset + 1) * batch_size]
    return windows[idx]
