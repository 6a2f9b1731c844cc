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
from vqjax.tokenizers.base import SPEC_FILE, Tokenizer, decode_rows, register_tokenizer
from vqjax.tokenizers.safe import ArtifactError, folder_file, read_npz, read_safetensors, write_safetensors

__all__ = ["ITEM_IDS_FILE", "TABLE_FILE", "SemanticIdTokenizer", "write_item_ids"]

ITEM_IDS_FILE = "item_ids.npz"                 # a training workdir's (and format version 1's) item table
TABLE_FILE = "table.safetensors"               # an exported folder's item table: {'codes': int32 [N, L']}


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

    Besides the spec and weights the folder holds the item table, ``table.safetensors`` (``codes``: every item's
    tuple; a training workdir's ``item_ids.npz`` also keeps the step they were computed at), checked against the
    spec (items, width, each level's size), and ``featurizer.{json,npz}``
    (:class:`vqjax.models.semantic_ids.ItemFeaturizer`).

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

    def _example_input(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((1, int(self.spec["model"]["kwargs"]["input_dim"])), jnp.float32)

    def _with_files(self, path: str) -> SemanticIdTokenizer:
        spec_file = os.path.join(path, SPEC_FILE)
        table = self.spec.get("files", {}).get("table")
        if table is not None:
            file = folder_file(path, table, spec_file, "files.table")
            arrays = read_safetensors(file)
            if set(arrays) != {"codes"}:
                raise ArtifactError(file, "codes", f"the item table holds {sorted(arrays)}; it must hold 'codes'")
            codes = arrays["codes"]
        else:
            file = os.path.join(path, ITEM_IDS_FILE)
            if not os.path.exists(file):
                raise FileNotFoundError(f"SemanticIdTokenizer.load: {path!r} has no {ITEM_IDS_FILE} (the "
                                        f"semantic_ids run writes it when training ends)")
            codes = read_npz(file, ["codes"])["codes"]
        _check_table(codes, self.spec, file)
        try:
            featurizer = ItemFeaturizer.load(path)     # JSON and an npz read without pickle
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(os.path.join(path, "featurizer.json"), "featurizer",
                                f"not an item featurizer ({type(err).__name__}: {err})") from None
        return dataclasses.replace(self, item_codes=codes.astype(np.int32), featurizer=featurizer)

    def _export_files(self, path: str) -> dict:
        write_safetensors(os.path.join(path, TABLE_FILE), {"codes": np.asarray(self.item_codes, np.int32)})
        self.featurizer.save(path)
        return {"table": TABLE_FILE}

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


def _check_table(codes: np.ndarray, spec: dict, file: str) -> None:
    """Refuses an item table that disagrees with the spec: its dtype, item count, width or a level's size."""
    sizes = [int(k) for k in spec["level_sizes"]]
    if codes.dtype.kind not in "iu" or codes.ndim != 2 or codes.shape != (int(spec["num_items"]), len(sizes)):
        raise ArtifactError(file, "codes", f"{codes.dtype} {codes.shape}; the spec has {spec['num_items']} items "
                                           f"of {len(sizes)} levels")
    if codes.size and (codes.min() < 0 or (codes >= np.asarray(sizes)[None]).any()):
        raise ArtifactError(file, "codes", f"codes outside the spec's level sizes {sizes}")


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
