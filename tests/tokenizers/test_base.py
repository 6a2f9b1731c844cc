"""The tokenizer protocol: one class per modality found by the spec's modality, a modality's own load refusing
another's artifact (naming both), the in-memory constructor, the shared row-table decode, and the spec checks."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizers import image_tokenizer

import vqjax
import vqjax.tokenizer
from vqjax import tokenizers
from vqjax.tokenizers import base

@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return image_tokenizer().export(str(tmp_path_factory.mktemp("image")))


def test_every_modality_has_its_own_module_and_class():
    assert set(base.MODALITIES) == {"image", "audio", "video", "timeseries", "item", "graph"}
    for modality in base.MODALITIES:
        cls = tokenizers.tokenizer_class(modality)
        assert cls.MODALITY == modality and issubclass(cls, vqjax.Tokenizer)
        assert cls.__module__ == base.MODALITIES[modality]
    with pytest.raises(ValueError, match=r"modality must be one of \[.*'image'.*\]; got 'smell'"):
        tokenizers.tokenizer_class("smell")


def test_load_returns_the_specs_class_and_a_modality_class_refuses_another_modality(image_dir):
    tok = vqjax.Tokenizer.load(image_dir)
    assert type(tok) is tokenizers.ImageTokenizer and tok.modality == "image"
    assert type(tokenizers.ImageTokenizer.load(image_dir)) is tokenizers.ImageTokenizer
    for cls in (tokenizers.AudioTokenizer, tokenizers.VideoTokenizer, tokenizers.SemanticIdTokenizer,
                tokenizers.GraphTokenizer):
        with pytest.raises(ValueError, match=rf"{cls.__name__}\.load: .*spec.json holds a 'image' tokenizer "
                                             rf"\(ImageTokenizer\); {cls.__name__} loads '{cls.MODALITY}'"):
            cls.load(image_dir)


def test_the_old_module_name_re_exports_the_classes(image_dir):
    assert vqjax.tokenizer.Tokenizer is vqjax.Tokenizer is tokenizers.Tokenizer
    assert vqjax.tokenizer.AudioTokenizer is tokenizers.AudioTokenizer is vqjax.AudioTokenizer
    assert type(vqjax.tokenizer.Tokenizer.load(image_dir)) is tokenizers.ImageTokenizer


def test_a_tokenizer_built_in_memory_is_its_modalitys_class():
    tok = image_tokenizer()                       # vqjax.Tokenizer(spec, model, variables)
    assert type(tok) is tokenizers.ImageTokenizer
    images = np.random.default_rng(0).uniform(size=(3, 8, 8)).astype(np.float32)    # one channel, squeezed
    codes = tok.encode(images)
    assert codes.shape == (3, 4, 4) and codes.dtype == jnp.int32
    assert np.array_equal(tok.encode((images * 255).astype(np.uint8)), tok.encode(np.round(images * 255) / 255))
    with pytest.raises(ValueError, match=r"images in 0..255 must be uint8"):
        tok.encode(images * 255)
    with pytest.raises(TypeError, match="uint8 images are divided by 255"):
        tok.encode(images.astype(np.int32))


def test_a_future_format_or_a_missing_field_is_refused(image_dir, tmp_path):
    spec = json.loads(open(f"{image_dir}/spec.json").read())
    (tmp_path / "spec.json").write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ValueError, match=r"spec.json: format_version: 99 is newer than this vqjax reads \(2\)"):
        vqjax.Tokenizer.load(str(tmp_path))
    (tmp_path / "spec.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "codes_shape"}))
    with pytest.raises(ValueError, match=r"spec.json: codes_shape: missing"):
        vqjax.Tokenizer.load(str(tmp_path))


def test_the_row_table_decode_names_rows_and_refuses_the_rest():
    rows = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]], np.int32)
    table = tokenizers.row_table(rows)
    assert table[rows[0].tobytes()] == 0                      # repeated rows keep their first index
    got = tokenizers.decode_rows(table, np.array([[[4, 5, 6], [1, 2, 3]]]), width=3, vocab_size=8, name="t",
                                 missing="row(s) are unknown")
    assert got.tolist() == [[1, 0]] and got.dtype == np.int64
    with pytest.raises(ValueError, match=r"t: 1 row\(s\) are unknown, e.g. \[6, 5, 4\]"):
        tokenizers.decode_rows(table, np.array([[6, 5, 4]]), width=3, vocab_size=8, name="t",
                               missing="row(s) are unknown")
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        tokenizers.decode_rows(table, np.array([[1, 2, 9]]), width=3, vocab_size=8, name="t", missing="")
    with pytest.raises(ValueError, match=r"integer \[\.\.\., 3\]"):
        tokenizers.decode_rows(table, np.array([[1.0, 2.0, 3.0]]), width=3, vocab_size=8, name="t", missing="")


def test_the_graph_tokenizer_decodes_through_the_shared_row_table(tmp_path):
    from vqjax.graph import Graph, NodePieceVocab

    rng = np.random.default_rng(0)
    triples = np.stack([rng.integers(0, 30, 200), rng.integers(0, 3, 200), rng.integers(0, 30, 200)], 1)
    graph = Graph.from_triples(triples, num_nodes=30, num_relations=3)
    vocab = NodePieceVocab.build(graph, num_anchors=5, anchors_per_node=2, relations_per_node=2)
    tok = vqjax.Tokenizer.load(tokenizers.GraphTokenizer.from_tokens(vocab, vocab.tokenize(graph))
                               .export(str(tmp_path)))
    assert type(tok) is tokenizers.GraphTokenizer and tok.modality == "graph"
    nodes = np.arange(30)
    decoded = tok.decode(tok.encode(nodes))
    assert np.array_equal(tok.encode(decoded), tok.encode(nodes))       # equal tokens: the lowest such node
    with pytest.raises(ValueError, match="are no node's tokens"):
        tok.decode(np.full((1, 4), tok.vocab_size - 1))
