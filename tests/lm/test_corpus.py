"""vqjax.lm.corpus: documents from records by template, the text sets' held-out lines, a tokenizer changed since
its shards were written refused, a seq_len too short for a span refused, the stream resumed from its state."""

import numpy as np
import pytest
from PIL import Image
from tiny_tokenizers import image_tokenizer

from vqjax.lm import MultimodalVocab
from vqjax.lm.corpus import (
    ShardSet,
    TextLines,
    TextSet,
    mixture_stream,
    open_shards,
    record_document,
    vocab_for,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from vqjax.tokenize import TokenizeJob, run_local

    root = tmp_path_factory.mktemp("corpus")
    image_tokenizer().export(str(root / "tok"))
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / "imgs" / f"{i}.png")
        if i % 2:
            (root / "imgs" / f"{i}.txt").write_text(f"number {i}")
    run_local(TokenizeJob(tokenizer=str(root / "tok"), dataset=f"files:{root / 'imgs'}", split="train",
                          out=str(root / "out"), data_dir=str(root / "dd"), num_shards=2), progress=False)
    return root


def test_templates_make_the_documents_they_name(shards, text_tok):
    vocab = MultimodalVocab.build(text=text_tok, modalities={"image": open_shards([ShardSet("image", str(
        shards / "out"))])["image"][1]})
    rec = {"codes": np.arange(16).reshape(4, 4) % 16, "caption": "a cat", "key": "x"}
    text = vocab.encode_text("a cat").tolist()
    first = record_document(vocab, "image", rec, "caption_codes", 1).tolist()
    assert first[1:1 + len(text)] == text and first[1 + len(text)] == vocab.begin_id("image")
    last = record_document(vocab, "image", rec, "codes_caption", 0).tolist()
    assert last[1] == vocab.begin_id("image") and last[-1 - len(text):-1] == text
    assert record_document(vocab, "image", rec, "both", 0).tolist() == first
    assert record_document(vocab, "image", rec, "both", 1).tolist() == last
    alone = record_document(vocab, "image", rec, "codes", 0).tolist()
    assert alone == record_document(vocab, "image", {**rec, "caption": ""}, "both", 0).tolist()
    assert len(alone) == 16 + 4
    with pytest.raises(ValueError, match="template must be one of"):
        ShardSet("image", str(shards / "out"), template="caption")


def test_text_lines_split_by_a_hash_of_the_line_number(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("".join(f"line {i}\n\n" for i in range(200)))
    train = TextLines(str(path), eval_fraction=0.1, held_out=False)
    held = TextLines(str(path), eval_fraction=0.1, held_out=True)
    lines = {train[i] for i in range(len(train))} | {held[i] for i in range(len(held))}
    assert len(train) + len(held) == 200 and lines == {f"line {i}" for i in range(200)}
    assert 5 <= len(held) <= 40 and not {held[i] for i in range(len(held))} & {train[i] for i in range(len(train))}


def test_a_changed_tokenizer_and_a_short_seq_len_are_refused(shards, tmp_path):
    import shutil

    vocab = vocab_for([ShardSet("image", str(shards / "out"))], text_vocab_size=300)
    with pytest.raises(ValueError, match="cannot hold a 'image' span"):
        mixture_stream(vocab, [ShardSet("image", str(shards / "out"))], seq_len=12, batch_size=2, seed=0)
    stream = mixture_stream(vocab, [ShardSet("image", str(shards / "out"))], [TextSet(None, 0.5)], seq_len=64,
                            batch_size=2, seed=0, read_threads=0)
    it = iter(stream)
    next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    again = iter(stream)
    again.set_state(state)
    for a, b in zip(want, [next(again) for _ in range(3)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    shutil.copytree(shards / "out", tmp_path / "out")
    image_tokenizer(seed=5).export(str(shards / "tok"))                # the tokenizer changed after tokenizing
    try:
        with pytest.raises(ValueError, match="shards were written by tokenizer"):
            open_shards([ShardSet("image", str(tmp_path / "out"))])
    finally:
        image_tokenizer().export(str(shards / "tok"))
