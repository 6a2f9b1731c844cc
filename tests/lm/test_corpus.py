"""vqjax.lm.corpus: documents from records by template, the text sets' held-out lines, a tokenizer changed since
its shards were written refused, a seq_len too short for a span refused, the stream resumed from its state."""

import numpy as np
import pytest
from PIL import Image
from tiny_tokenizers import image_tokenizer

from vqjax.data.tokens import TokenShards
from vqjax.lm import Codes, MultimodalVocab
from vqjax.lm.corpus import (
    LinkLines,
    LinkSet,
    ShardSet,
    TextLines,
    TextSet,
    eval_documents,
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


def _index_of_order(order, seed=0):
    return next(i for i in range(100) if np.random.default_rng([seed, i]).integers(2) == order)


def test_templates_make_the_documents_they_name(shards, text_tok):
    vocab = MultimodalVocab.build(text=text_tok, modalities={"image": open_shards([ShardSet("image", str(
        shards / "out"))])["image"][1]})
    rec = {"codes": np.arange(16).reshape(4, 4) % 16, "caption": "a cat", "key": "x"}
    text = vocab.encode_text("a cat").tolist()

    def doc(template, record=rec, order=0, **kw):
        s = ShardSet("image", str(shards / "out"), template=template, **kw)
        return record_document(vocab, s, record, seed=0, index=_index_of_order(order)).tolist()

    first = doc("caption_codes", order=1)
    assert first[1:1 + len(text)] == text and first[1 + len(text)] == vocab.begin_id("image")
    last = doc("codes_caption", order=0)
    assert last[1] == vocab.begin_id("image") and last[-1 - len(text):-1] == text
    assert doc("both", order=0) == first and doc("both", order=1) == last
    alone = doc("codes")
    assert alone == doc("both", {**rec, "caption": ""}) and len(alone) == 16 + 4
    # A record without a caption takes one of its label's captions; an unconditional fraction drops them.
    labelled = {"codes": rec["codes"], "label": 1, "key": "y"}
    captions = (("zero",), ("one", "a one"))
    made = {tuple(record_document(vocab, ShardSet("image", "x", "caption_codes", label_captions=captions), labelled,
                                  seed=0, index=i).tolist()) for i in range(40)}
    assert made == {tuple(vocab.encode(["one", Codes("image", rec["codes"])]).tolist()),
                    tuple(vocab.encode(["a one", Codes("image", rec["codes"])]).tolist())}
    dropped = [len(record_document(vocab, ShardSet("image", "x", "caption_codes", label_captions=captions,
                                                   uncond_fraction=0.5), labelled, seed=0, index=i)) == 20
               for i in range(200)]
    assert 0.35 < np.mean(dropped) < 0.65
    assert doc("both", {**labelled, "label": 7}, label_captions=captions) == alone      # no captions for label 7
    with pytest.raises(ValueError, match="template must be one of"):
        ShardSet("image", str(shards / "out"), template="caption")
    with pytest.raises(ValueError, match="label_captions must give each label"):
        ShardSet("image", "x", label_captions=(("a",), ()))


def test_link_sets_make_head_text_tail_documents_and_refuse_unknown_keys(shards, tmp_path):
    out = TokenShards(str(shards / "out"))
    keys = [out[i]["key"] for i in range(len(out))]
    (tmp_path / "train.tsv").write_text("".join(f"{keys[i]}\t next to\t{keys[i + 1]}\n" for i in range(8)))
    (tmp_path / "valid.tsv").write_text(f"{keys[9]}\t next to\t{keys[10]}\n")
    links = LinkSet("image", str(shards / "out"), str(tmp_path / "train.tsv"), eval_links=str(tmp_path / "valid.tsv"))
    vocab = vocab_for([links], text_vocab_size=300)
    held = eval_documents(vocab, [links])
    want = vocab.encode([Codes("image", out[9]["codes"]), " next to", Codes("image", out[10]["codes"])])
    assert len(held) == 1 and held[0].tolist() == want.tolist()
    batch = next(iter(mixture_stream(vocab, [links], seq_len=64, batch_size=2, seed=0, read_threads=0)))
    assert batch["tokens"].shape == (2, 64) and (batch["segment_ids"] > 0).mean() > 0.5
    (tmp_path / "bad.tsv").write_text(f"{keys[0]}\t next to\tnowhere.png\n")
    with pytest.raises(ValueError, match="names key 'nowhere.png', which no record"):
        LinkLines(str(tmp_path / "bad.tsv"), out)
    (tmp_path / "short.tsv").write_text(f"{keys[0]}\t{keys[1]}\n")
    with pytest.raises(ValueError, match="must be 'head key<TAB>text<TAB>tail key'"):
        LinkLines(str(tmp_path / "short.tsv"), out)


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
