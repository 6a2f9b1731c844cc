"""Layer 5: trained tokenizers as artifacts, one module per modality behind one protocol.

``vqjax.Tokenizer.load(path)`` reads ``path/spec.json`` and returns the class registered for its ``modality``
(:mod:`~vqjax.tokenizers.base`): :class:`ImageTokenizer` (``image``), :class:`AudioTokenizer` (``audio``),
:class:`VideoTokenizer` (``video``), :class:`TimeSeriesTokenizer` (``timeseries``), :class:`SemanticIdTokenizer`
(``item``) and :class:`GraphTokenizer` (``graph``). Each modality's module is imported on first use.

Sharing: ``tok.save_pretrained(dir)`` / ``Tokenizer.from_pretrained(name_or_dir)`` / ``tok.push_to_hub(repo)``
(:mod:`~vqjax.tokenizers.hub`), ``tok.export_compiled(dir)`` / :func:`load_compiled` (:mod:`~vqjax.tokenizers.compiled`,
jax alone), and loading that is safe for folders from strangers (:mod:`~vqjax.tokenizers.safe`).

Adding a modality: a module with a :class:`Tokenizer` subclass decorated with ``@register_tokenizer("name")``,
listed in :data:`~vqjax.tokenizers.base.MODALITIES` (or imported before loading).
"""

import importlib

from vqjax.tokenizers.base import (
    FORMAT_VERSION,
    MODALITIES,
    SPEC_FILE,
    WEIGHTS_FILE,
    Tokenizer,
    check_codes,
    decode_rows,
    fingerprint,
    plain_tree,
    read_spec,
    register_tokenizer,
    row_table,
    tokenizer_class,
    write_spec,
)
from vqjax.tokenizers.compiled import CompiledTokenizer, load_compiled
from vqjax.tokenizers.safe import ArtifactError, Limits

_CLASSES = {"ImageTokenizer": "image", "AudioTokenizer": "audio", "VideoTokenizer": "video",
            "TimeSeriesTokenizer": "timeseries", "SemanticIdTokenizer": "item", "GraphTokenizer": "graph"}
_MODULE_NAMES = {"graph_spec": "graph", "write_item_ids": "item", "ITEM_IDS_FILE": "item", "AdaptiveCodes": "image"}

__all__ = ["Tokenizer", "register_tokenizer", "tokenizer_class", "MODALITIES", "read_spec", "write_spec",
           "FORMAT_VERSION", "SPEC_FILE", "WEIGHTS_FILE", "check_codes", "row_table", "decode_rows", "plain_tree",
           "fingerprint", "ArtifactError", "Limits", "CompiledTokenizer", "load_compiled",
           *_CLASSES, *_MODULE_NAMES]


def __getattr__(name):
    # The modality classes load with their modules (each imports its models) on first use.
    modality = _CLASSES.get(name) or _MODULE_NAMES.get(name)
    if modality is None:
        raise AttributeError(f"module 'vqjax.tokenizers' has no attribute {name!r}")
    return getattr(importlib.import_module(MODALITIES[modality]), name)
