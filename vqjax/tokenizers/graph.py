"""A graph's NodePiece tokens (``modality='graph'``, from the ``link_prediction`` task) behind the tokenizer
protocol.

    tok = vqjax.Tokenizer.load("runs/umls_nodepiece")     # modality 'graph' -> GraphTokenizer
    tokens = tok.encode(node_ids)                         # int32 [B, k + m]: anchors (or NOTHING), relations (or PAD)
    tok.decode(tokens)                                    # node ids (the lowest id among nodes with equal tokens)
    tok.vocab_size, tok.codes_shape, tok.modality         # NodePieceVocab.size, (k + m,), 'graph'
    tok.export("artifacts/umls")                          # spec.json + vocab.json + table.safetensors

NodePiece needs no weights: the artifact is the vocabulary (anchors, settings) and the tokens of the graph's nodes.
Unseen nodes get tokens from their edges with :meth:`vqjax.graph.NodePieceVocab.tokenize_new` on ``tok.vocab``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vqjax.graph.nodepiece import NodePieceVocab, NodeTokens
from vqjax.tokenizers.base import SPEC_FILE, Tokenizer, decode_rows, register_tokenizer
from vqjax.tokenizers.safe import (
    ArtifactError,
    Limits,
    folder_file,
    read_json,
    read_npz,
    read_safetensors,
    write_safetensors,
)

__all__ = ["GraphTokenizer", "graph_spec"]

VOCAB_FILE = "vocab.json"
TOKENS_FILE = "node_tokens.npz"                 # a link-prediction workdir's (and format version 1's) table
TABLE_FILE = "table.safetensors"                # an exported folder's: {'tokens', 'distances'} int32


def graph_spec(vocab: NodePieceVocab, num_nodes: int) -> dict:
    """The artifact spec of NodePiece tokens of ``num_nodes`` nodes (see :mod:`vqjax.tokenizers.base`)."""
    return {"modality": "graph", "model": {"name": "nodepiece", "kwargs": {}},
            "input": {"shape": [], "dtype": "int64", "range": [0, int(num_nodes) - 1]},
            "codes_shape": [vocab.anchors_per_node + vocab.relations_per_node], "vocab_size": int(vocab.size),
            "tokens_per_second": None, "num_nodes": int(num_nodes)}


@register_tokenizer("graph")
@dataclasses.dataclass(frozen=True)
class GraphTokenizer(Tokenizer):
    """NodePiece tokens of a graph's nodes behind the tokenizer protocol (no model, no weights).

    Attributes:
      vocab: the :class:`~vqjax.graph.NodePieceVocab`.
      node_tokens: :class:`~vqjax.graph.NodeTokens` of every node (``tokens [N, k + m]``, ``distances [N, k]``).
    """

    vocab: NodePieceVocab | None = None
    node_tokens: NodeTokens | None = None

    @classmethod
    def from_tokens(cls, vocab: NodePieceVocab, node_tokens: NodeTokens) -> GraphTokenizer:
        return cls(graph_spec(vocab, node_tokens.tokens.shape[0]), vocab=vocab, node_tokens=node_tokens)

    @property
    def vocab_size(self) -> int:
        return int(self.vocab.size)

    @property
    def codes_shape(self) -> tuple[int, ...]:
        return (int(self.node_tokens.tokens.shape[1]),)

    @property
    def num_nodes(self) -> int:
        return int(self.node_tokens.tokens.shape[0])

    def encode(self, node_ids) -> np.ndarray:
        """int32 tokens ``node_ids.shape + (k + m,)`` of nodes ``node_ids`` (ints in ``[0, num_nodes)``)."""
        ids = np.asarray(node_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"GraphTokenizer.encode: node ids must be integers; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_nodes):
            raise ValueError(f"GraphTokenizer.encode: node ids must lie in [0, {self.num_nodes}); got min "
                             f"{int(ids.min())}, max {int(ids.max())}")
        return self.node_tokens.tokens[ids]

    def decode(self, tokens) -> np.ndarray:
        """Node ids ``tokens.shape[:-1]`` of token rows (each must be some node's tokens; among nodes with equal
        tokens, the lowest id)."""
        return decode_rows(self._row_table(self.node_tokens.tokens), tokens, width=self.codes_shape[0],
                           vocab_size=self.vocab_size, name="GraphTokenizer.decode",
                           missing="token row(s) are no node's tokens")

    def valid_codes(self) -> np.ndarray:
        """int32 ``[n, k + m]``: the distinct token rows of the graph's nodes, the only rows :meth:`decode`
        accepts (a language model generating graph tokens is constrained to them)."""
        return np.unique(self.node_tokens.tokens.astype(np.int32), axis=0)

    def export(self, path: str) -> str:
        """Writes ``spec.json``, ``vocab.json`` and ``table.safetensors`` (the nodes' tokens and anchor
        distances) to ``path``; returns ``path``."""
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(path, exist_ok=True)
        self.vocab.save(os.path.join(path, VOCAB_FILE))
        write_safetensors(os.path.join(path, TABLE_FILE), {"tokens": np.asarray(self.node_tokens.tokens, np.int32),
                                                           "distances": np.asarray(self.node_tokens.distances,
                                                                                   np.int32)})
        self._write_spec(path, {"table": TABLE_FILE})
        return path

    @classmethod
    def _load_folder(cls, path: str, spec: dict, step: int | None, limits: Limits = Limits()) -> GraphTokenizer:
        """The vocabulary and node tokens of an exported folder or a link-prediction workdir, checked against the
        spec (node count, token width, vocabulary size)."""
        spec_file = os.path.join(path, SPEC_FILE)
        vocab_file = os.path.join(path, VOCAB_FILE)
        if not os.path.exists(vocab_file):
            raise FileNotFoundError(f"GraphTokenizer.load: {path!r} has no {VOCAB_FILE}")
        read_json(vocab_file, dataclasses.replace(limits, max_spec_bytes=64 * limits.max_spec_bytes), what="vocab")
        try:
            vocab = NodePieceVocab.load(vocab_file)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(vocab_file, "vocab", f"not a NodePiece vocabulary ({type(err).__name__}: {err})") \
                from None
        table = spec.get("files", {}).get("table")
        if table is not None:
            file = folder_file(path, table, spec_file, "files.table")
            arrays = read_safetensors(file, limits)
            if set(arrays) != {"tokens", "distances"}:
                raise ArtifactError(file, "tokens", f"the table holds {sorted(arrays)}; it must hold 'tokens' and "
                                                    f"'distances'")
        else:
            file = os.path.join(path, TOKENS_FILE)
            if not os.path.exists(file):
                raise FileNotFoundError(f"GraphTokenizer.load: {path!r} has no {TOKENS_FILE}")
            arrays = read_npz(file, ["tokens", "distances"])
        tokens, distances = arrays["tokens"], arrays["distances"]
        width, nodes = int(spec["codes_shape"][0]), int(spec.get("num_nodes", tokens.shape[0]))
        if tokens.dtype.kind not in "iu" or tokens.shape != (nodes, width) or distances.shape[0] != nodes:
            raise ArtifactError(file, "tokens", f"{tokens.dtype} {tokens.shape}; the spec has {nodes} nodes of "
                                                f"{width} tokens")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= int(spec["vocab_size"])):
            raise ArtifactError(file, "tokens", f"tokens outside [0, {spec['vocab_size']})")
        if int(vocab.size) != int(spec["vocab_size"]):
            raise ArtifactError(vocab_file, "vocab", f"{vocab.size} tokens; the spec has {spec['vocab_size']}")
        node_tokens = NodeTokens(tokens.astype(np.int32), distances.astype(np.int32))
        return cls(spec, path=os.path.abspath(path), vocab=vocab, node_tokens=node_tokens)
