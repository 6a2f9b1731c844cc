"""Small modality tokenizers for the LM tests: untrained image tokenizers (random weights, real protocol) and a
NodePiece graph tokenizer on a small random multi-relational graph."""

import numpy as np
import pytest
from tiny_tokenizers import image_tokenizer


@pytest.fixture(scope="session")
def make_image_tokenizer():
    """``image_tokenizer(seed=0, codebook_size=16, size=8)``: an untrained image tokenizer built in memory."""
    return image_tokenizer


@pytest.fixture(scope="session")
def image_tok(tmp_path_factory):
    """An exported and reloaded image tokenizer (it has a path, so a saved vocabulary can find it)."""
    import vqjax

    path = image_tokenizer().export(str(tmp_path_factory.mktemp("image_tok")))
    return vqjax.Tokenizer.load(path)


@pytest.fixture(scope="session")
def graph_tok(tmp_path_factory):
    import vqjax
    from vqjax.graph import Graph, NodePieceVocab
    from vqjax.tokenizers import GraphTokenizer

    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 40, 300), rng.integers(0, 3, 300), rng.integers(0, 40, 300)], 1)
    graph = Graph.from_triples(triples, num_nodes=40, num_relations=3)
    vocab = NodePieceVocab.build(graph, num_anchors=6, anchors_per_node=3, relations_per_node=3)
    tok = GraphTokenizer.from_tokens(vocab, vocab.tokenize(graph))
    return vqjax.Tokenizer.load(tok.export(str(tmp_path_factory.mktemp("graph_tok"))))


@pytest.fixture(scope="session")
def text_tok():
    from vqjax.lm import default_corpus, train_bpe

    return train_bpe(default_corpus()[:400] + ["a handwritten seven", "the digit three"], 512)
