"""A small MovieLens-like catalogue in recbole's file layout, for the recommendation tests (real structure:
users keep to a taste cluster, so a model can learn something in a few steps)."""

import os

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")
WORDS = ("star", "night", "love", "ghost", "city", "war", "dream", "river")


def write_mock_movielens(root: str, *, items: int = 60, users: int = 40, seed: int = 0) -> str:
    """Writes ``ml-100k.item`` and ``ml-100k.inter`` to ``root`` (item ids 1..items, user ids 1..users, 8-14
    interactions each, timestamps increasing) and returns ``root``."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    cluster = np.arange(items) % len(GENRES)
    with open(os.path.join(root, "ml-100k.item"), "w") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(items):
            title = f"{WORDS[cluster[i] % len(WORDS)].title()} {WORDS[(i // 6) % len(WORDS)]} {i}"
            genres = GENRES[cluster[i]] + ("" if i % 3 else f" {GENRES[(cluster[i] + 1) % len(GENRES)]}")
            fh.write(f"{i + 1}\t{title}\t{1980 + (i % 20)}\t{genres}\n")
    with open(os.path.join(root, "ml-100k.inter"), "w") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u in range(users):
            taste = rng.integers(len(GENRES))
            pool = np.flatnonzero(cluster == taste)
            others = np.flatnonzero(cluster != taste)
            n = int(rng.integers(8, 15))
            picks = list(rng.permutation(pool))[:n - 2] + list(rng.choice(others, 2, replace=False))
            picks = list(dict.fromkeys(int(p) for p in picks))
            for t, item in enumerate(rng.permutation(picks)):
                fh.write(f"{u + 1}\t{item + 1}\t4\t{1000 + 10 * t}\n")
    return root
