"""Layer 4: graph anchor-relation tokenization (NodePiece, Galkin et al. 2022).

Nodes of a multi-relational graph become a fixed number of tokens from a small vocabulary: their ``k`` nearest
anchor nodes (with hop distances) and ``m`` of their relation types. See :mod:`vqjax.graph.nodepiece`; the
artifact (:class:`vqjax.tokenizers.GraphTokenizer`) lives with the other tokenizers.
"""

from vqjax.graph.anchors import STRATEGIES, pagerank, select_anchors
from vqjax.graph.graph import Graph
from vqjax.graph.nodepiece import (
                                   CLS,
                                   MASK,
                                   NOTHING,
                                   NUM_SPECIAL,
                                   PAD,
                                   NodePieceVocab,
                                   NodeTokens,
                                   nearest_anchors,
                                   relational_context,
)

__all__ = ["Graph", "STRATEGIES", "pagerank", "select_anchors", "NodePieceVocab", "NodeTokens", "nearest_anchors",
           "relational_context", "PAD", "CLS", "MASK", "NOTHING", "NUM_SPECIAL"]
