"""A graph's NodePiece tokens as a tokenizer artifact with the same protocol as :class:`vqjax.Tokenizer`.

    tok = vqjax.Tokenizer.load("runs/umls_nodepiece")     # modality 'graph' -> GraphTokenizer
    tokens = tok.encode(node_ids)                         # int32 [B, k + m]: anchors (or NOTHING), relations (or PAD)
    tok.decode(tokens)                                    # node ids (the lowest id among nodes with equal tokens)
    tok.vocab_size, tok.codes_shape, tok.modality         # NodePieceVocab.size, (k + m,), 'graph'
    tok.export("artifacts/umls")                          # spec.json + vocab.json + node_tokens.npz

NodePiece needs no weights: the artifact is the vocabulary (anchors, settings) and the tokens of the graph's nodes.
Unseen nodes get tokens from their edges with :meth:`NodePieceVocab.tokenize_new` on ``tok.vocab``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vqjax.graph.nodepiece import NodePieceVocab, NodeTokens

__all__ = ["GraphTokenizer", "graph_spec"]

VOCAB_FILE = "vocab.json"
TOKENS_FILE = "node_tokens.npz"


def graph_spec(vocab: NodePieceVocab, num_nodes: int) -> dict:
    """The artifact spec of NodePiece tokens of ``num_nodes`` nodes (see :mod:`vqjax.tokenizer`)."""
    return {"modality": "graph", "model": {"name": "nodepiece", "kwargs": {}},
            "input": {"shape": [], "dtype": "int64", "range": [0, int(num_nodes) - 1]},
            "codes_shape": [vocab.anchors_per_node + vocab.relations_per_node], "vocab_size": int(vocab.size),
            "tokens_per_second": None, "num_nodes": int(num_nodes)}


@dataclasses.dataclass(frozen=True, eq=False)
class GraphTokenizer:
    """NodePiece tokens of a graph's nodes behind the tokenizer protocol.

    Attributes:
      vocab: the :class:`NodePieceVocab`.
      node_tokens: :class:`NodeTokens` of every node (``tokens [N, k + m]``, ``distances [N, k]``).
      spec: the artifact spec.
      path: the folder it was loaded from (None when built in memory).
    """

    vocab: NodePieceVocab
    node_tokens: NodeTokens
    spec: dict
    path: str | None = None

    modality = "graph"
    tokens_per_second = None

    @classmethod
    def from_tokens(cls, vocab: NodePieceVocab, node_tokens: NodeTokens) -> "GraphTokenizer":
        return cls(vocab, node_tokens, graph_spec(vocab, node_tokens.tokens.shape[0]))

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
        t = np.asarray(tokens)
        if not np.issubdtype(t.dtype, np.integer) or t.ndim < 1 or t.shape[-1] != self.codes_shape[0]:
            raise ValueError(f"GraphTokenizer.decode: tokens must be integer [..., {self.codes_shape[0]}]; got "
                             f"{t.dtype} {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= self.vocab_size):
            raise ValueError(f"GraphTokenizer.decode: tokens must lie in [0, {self.vocab_size}); got min "
                             f"{int(t.min())}, max {int(t.max())}")
        table = self._table()
        flat = np.ascontiguousarray(t.reshape(-1, t.shape[-1]).astype(np.int32))
        out = np.asarray([table.get(row.tobytes(), -1) for row in flat], np.int64)
        if (out < 0).any():
            raise ValueError(f"GraphTokenizer.decode: {int((out < 0).sum())} token row(s) are no node's tokens")
        return out.reshape(t.shape[:-1])

    def valid_codes(self) -> np.ndarray:
        """int32 ``[n, k + m]``: the distinct token rows of the graph's nodes, the only rows :meth:`decode`
        accepts (a language model generating graph tokens is constrained to them)."""
        return np.unique(self.node_tokens.tokens.astype(np.int32), axis=0)

    def _table(self) -> dict:
        cache = self.__dict__.get("_rows")
        if cache is None:
            cache = {}
            for node, row in enumerate(np.ascontiguousarray(self.node_tokens.tokens.astype(np.int32))):
                cache.setdefault(row.tobytes(), node)
            object.__setattr__(self, "_rows", cache)
        return cache

    def export(self, path: str) -> str:
        """Writes ``spec.json``, ``vocab.json`` and ``node_tokens.npz`` to ``path``; returns ``path``."""
        from vqjax.tokenizer import write_spec

        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(path, exist_ok=True)
        self.vocab.save(os.path.join(path, VOCAB_FILE))
        np.savez(os.path.join(path, TOKENS_FILE), tokens=self.node_tokens.tokens,
                 distances=self.node_tokens.distances)
        write_spec(path, self.spec)
        return path

    @classmethod
    def load(cls, path: str, spec: dict | None = None) -> "GraphTokenizer":
        """The tokenizer in ``path`` (an exported folder or a link-prediction workdir)."""
        from vqjax.tokenizer import read_spec

        spec = spec or read_spec(path)
        for name in (VOCAB_FILE, TOKENS_FILE):
            if not os.path.exists(os.path.join(path, name)):
                raise FileNotFoundError(f"GraphTokenizer.load: {path!r} has no {name}")
        vocab = NodePieceVocab.load(os.path.join(path, VOCAB_FILE))
        with np.load(os.path.join(path, TOKENS_FILE)) as data:
            node_tokens = NodeTokens(data["tokens"].astype(np.int32), data["distances"].astype(np.int32))
        return cls(vocab, node_tokens, spec, os.path.abspath(path))
