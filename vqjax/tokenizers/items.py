"""Semantic IDs of catalogue items (``modality='item'``, from the ``semantic_ids`` task): item ids to their code
tuples and back through the catalogue's table, and new items given IDs from their content (see
:class:`SemanticIdTokenizer`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.semantic_ids import ItemFeaturizer, assign_new, item_terms
from vqjax.tokenizers.base import Tokenizer, decode_rows, register_tokenizer

__all__ = ["ITEM_IDS_FILE", "SemanticIdTokenizer", "write_item_ids"]

ITEM_IDS_FILE = "item_ids.npz"


@register_tokenizer("item")
@dataclasses.dataclass(frozen=True)
class SemanticIdTokenizer(Tokenizer):
    """Semantic IDs of a catalogue's items (``modality='item'``, from the ``semantic_ids`` task).

    ``encode(item_ids)`` -> int32 ``item_ids.shape + (L',)``: each item's code tuple (the RQ-VAE's levels, plus
    TIGER's disambiguation level with ``collisions='extra_level'``); ``decode(codes)`` -> the items, refusing a tuple
    that names none; :meth:`valid_codes` the tuples that exist (a generative recommender or a language model is
    constrained to them). Every tuple names exactly one item. ``add_items(titles, years, genres)`` gives new items
    IDs from their content (and the collaborative vectors the content predicts) through the trained RQ-VAE, without
    retraining and without changing any existing ID; it returns a new tokenizer.

    Besides the spec and weights the folder holds ``item_ids.npz`` (the codes of every item, and the step they were
    computed at) and ``featurizer.{json,npz}`` (:class:`vqjax.models.semantic_ids.ItemFeaturizer`).

    Attributes:
      item_codes: int32 ``[N, L']``.
      featurizer: the :class:`~vqjax.models.semantic_ids.ItemFeaturizer`.
    """

    item_codes: np.ndarray | None = None
    featurizer: Any = None

    @property
    def num_items(self) -> int:
        return int(self.item_codes.shape[0])

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Codes per level (the disambiguation level last, when there is one)."""
        return tuple(int(k) for k in self.spec["level_sizes"])

    def _with_files(self, path: str) -> SemanticIdTokenizer:
        file = os.path.join(path, ITEM_IDS_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"SemanticIdTokenizer.load: {path!r} has no {ITEM_IDS_FILE} (the semantic_ids "
                                    f"run writes it when training ends)")
        with np.load(file) as data:
            codes = data["codes"].astype(np.int32)
        return dataclasses.replace(self, item_codes=codes, featurizer=ItemFeaturizer.load(path))

    def _export_files(self, path: str) -> None:
        write_item_ids(path, self.item_codes, self.step)
        self.featurizer.save(path)

    def encode(self, item_ids) -> np.ndarray:
        """int32 codes ``item_ids.shape + (L',)`` of items ``item_ids`` (ints in ``[0, num_items)``).

        Raises:
          TypeError: non-integer ids; ValueError: an id outside the catalogue.
        """
        ids = np.asarray(item_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"SemanticIdTokenizer.encode: item ids must be integers; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_items):
            bad = ids[(ids < 0) | (ids >= self.num_items)]
            raise ValueError(f"SemanticIdTokenizer.encode: item ids must lie in [0, {self.num_items}); got "
                             f"{bad.size} unknown id(s), e.g. {int(bad.flat[0])}")
        return self.item_codes[ids]

    def decode(self, codes) -> np.ndarray:
        """int64 item ids ``codes.shape[:-1]`` of code tuples ``codes [..., L']``.

        Raises:
          ValueError: a wrong shape or dtype, a code outside ``[0, vocab_size)``, or a tuple that is no item's.
        """
        return decode_rows(self._row_table(self.item_codes), codes, width=self.codes_shape[0],
                           vocab_size=self.vocab_size, name="SemanticIdTokenizer.decode", missing="tuple(s) name no item")

    def valid_codes(self) -> np.ndarray:
        """int32 ``[N, L']``: every item's tuple (the only rows :meth:`decode` accepts)."""
        return self.item_codes

    def add_items(self, titles, years, genres) -> SemanticIdTokenizer:
        """A tokenizer whose catalogue also holds the new items (ids ``num_items ..``), IDs from their content.

        Args:
          titles: the new items' titles; years: release years (0 when unknown); genres: each item's genre names.

        Raises:
          ValueError: lists of different lengths, or an item whose group has no free code left.
        """
        titles, years, genres = list(titles), list(years), list(genres)
        if not (len(titles) == len(years) == len(genres)) or not titles:
            raise ValueError(f"SemanticIdTokenizer.add_items: titles, years and genres must be non-empty lists of "
                             f"one length; got {len(titles)}, {len(years)}, {len(genres)}")
        docs = [item_terms(str(t), int(y), list(g)) for t, y, g in zip(titles, years, genres)]
        feats = jnp.asarray(self.featurizer.features(docs))
        prefixes = np.asarray(_item_apply(self.model, self.variables, feats, "encode"))
        mode = self.spec["collisions"]
        costs = np.asarray(_item_apply(self.model, self.variables, feats, "last_level_costs")) \
            if mode == "balanced" else None
        new = assign_new(self.item_codes, prefixes, mode, size=self.level_sizes[-1], costs=costs)
        codes = np.concatenate([self.item_codes, new])
        spec = {**self.spec, "input": {**self.spec["input"], "range": [0, int(codes.shape[0]) - 1]},
                "num_items": int(codes.shape[0])}
        return dataclasses.replace(self, spec=spec, item_codes=codes, path=None)


@jax.jit(static_argnums=(0, 3))
def _item_apply(model, variables, x, method):
    return model.apply(variables, x, method=getattr(model, method))


def write_item_ids(path: str, codes: np.ndarray, step: int | None) -> str:
    """Writes ``path/item_ids.npz`` (the catalogue's codes and the step of the weights they came from)."""
    os.makedirs(path, exist_ok=True)
    out = os.path.join(path, ITEM_IDS_FILE)
    with open(out + ".tmp", "wb") as fh:
        np.savez(fh, codes=np.asarray(codes, np.int32), step=np.int64(-1 if step is None else step))
    os.replace(out + ".tmp", out)
    return out
