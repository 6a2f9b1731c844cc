"""The ``lm`` task on any mixture of token shards and text (``config.documents = 'shards'``).

``config.corpus`` names the parts of the mixture; each is a token-shard set (``shards``, optional
``eval_shards``, ``template``, ``weight``, ``label_captions`` and ``uncond_fraction``; its name is the modality's
name in the vocabulary), a link set (``shards``, ``links``, optional ``eval_links`` and ``weight``: documents
``[head's span] text [tail's span]`` from a file of ``head key <tab> text <tab> tail key`` lines) or a text set
(``text``: a file of one document per line, or ``''`` for the bundled text; ``weight``; ``eval_fraction``)::

    c.corpus = {"speech": dict(shards="tokens/words_train", eval_shards="tokens/words_test", template="both"),
                "prose": dict(text="", weight=0.2)}

The two built-in corpora are recipes on top of this: ``documents='mnist_captions'`` tokenizes the digits into
shards and trains on them with captions drawn per label (:mod:`vqjax.train.tasks.lm`), ``'kg_text'``
tokenizes a knowledge graph's entities and trains on its triples as links (:mod:`vqjax.train.tasks.lm_graph`).

The vocabulary is built from the manifests' tokenizers (checked by fingerprint; variable-length modalities bounded
by their longest record); training rows stream from :func:`vqjax.lm.corpus.mixture_stream`, whose position the
checkpoints keep. At the end, for every shard set with captions, the LM writes a span after each held-out caption
(constrained decoding) and reads back a caption after each held-out span; the report gives the fraction of spans
that decode, the decoded examples (images as a figure, audio as WAV files) and the captions it wrote.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from vqjax.data.tokens import TokenShards
from vqjax.evals.figures import pyplot
from vqjax.lm import Codes, Media, generate, span_validity
from vqjax.lm.corpus import (
    LinkLines,
    LinkSet,
    ShardSet,
    TextSet,
    captions_and_lengths,
    eval_documents,
    mixture_stream,
    open_shards,
    record_caption,
)
from vqjax.train.tasks.lm_corpus import Corpus

__all__ = ["check_corpus", "corpus_from_sets", "corpus_sets", "shards_corpus"]

SHARD_FIELDS = {"shards", "eval_shards", "template", "weight", "label_captions", "uncond_fraction"}
LINK_FIELDS = {"shards", "links", "eval_links", "weight"}
TEXT_FIELDS = {"text", "weight", "eval_fraction"}


def corpus_sets(corpus) -> tuple[list[ShardSet | LinkSet], list[TextSet]]:
    """The :class:`ShardSet`, :class:`LinkSet` and :class:`TextSet` entries of ``config.corpus`` (refusing
    unknown fields)."""
    sets, texts = [], []
    for name, entry in dict(corpus).items():
        entry = dict(entry)
        if "links" in entry:
            unknown = sorted(set(entry) - LINK_FIELDS)
            if unknown:
                raise ValueError(f"config.corpus.{name}: unknown fields {unknown} for a link set; known: "
                                 f"{sorted(LINK_FIELDS)}")
            sets.append(LinkSet(name, entry.get("shards", ""), entry["links"], float(entry.get("weight", 1.0)),
                                entry.get("eval_links") or None))
        elif "shards" in entry:
            unknown = sorted(set(entry) - SHARD_FIELDS)
            if unknown:
                raise ValueError(f"config.corpus.{name}: unknown fields {unknown} for a shard set; known: "
                                 f"{sorted(SHARD_FIELDS)}")
            sets.append(ShardSet(name, entry["shards"], entry.get("template", "both"), float(entry.get("weight", 1.0)),
                                 entry.get("eval_shards") or None, tuple(entry.get("label_captions") or ()),
                                 float(entry.get("uncond_fraction", 0.0))))
        elif "text" in entry:
            unknown = sorted(set(entry) - TEXT_FIELDS)
            if unknown:
                raise ValueError(f"config.corpus.{name}: unknown fields {unknown} for a text set; known: "
                                 f"{sorted(TEXT_FIELDS)}")
            texts.append(TextSet(entry["text"] or None, float(entry.get("weight", 1.0)),
                                 float(entry.get("eval_fraction", 0.05))))
        else:
            raise ValueError(f"config.corpus.{name} must have 'shards' (a token-shard set) or 'text' (a text set); "
                             f"got fields {sorted(entry)}")
    return sets, texts


def check_corpus(config) -> list[str]:
    """Refuses an empty or malformed ``config.corpus``; returns the loss kinds it has ('text' and the sets')."""
    if not len(config.corpus):
        raise ValueError("config.corpus is empty: documents='shards' needs at least one shard or text set")
    sets, _ = corpus_sets(config.corpus)
    return ["text"] + [s.modality for s in sets]


def shards_corpus(config, workdir, stop) -> Corpus:
    sets, texts = corpus_sets(config.corpus)
    return corpus_from_sets(config, workdir, stop, sets, texts)


def corpus_from_sets(config, workdir, stop, sets, texts, *, final=None, info=None, text_corpus=()) -> Corpus:
    """The :class:`Corpus` of shard, link and text sets: the vocabulary's tokenizers from the manifests, the
    held-out documents, the training stream; ``final(model, params, vocab)`` (default: the generation report of
    the module docstring), ``info`` (default: the sets) and ``text_corpus`` (more text for the BPE) as given."""
    opened = open_shards(sets)
    captions, lengths = captions_and_lengths(sets)
    captions = list(text_corpus) + captions
    if stop is not None:
        stop.check("reading the shards")

    def documents(vocab):
        docs = eval_documents(vocab, sets, texts, max_documents=config.max_eval_documents, seed=config.seed + 1)
        if not docs:
            raise ValueError("config.corpus has no held-out documents: give a shard set eval_shards, a link set "
                             "eval_links or a text set an eval_fraction > 0")
        return docs

    def train_stream(vocab, batch_size, process_index, process_count):
        return mixture_stream(vocab, sets, texts, seq_len=config.seq_len, batch_size=batch_size, seed=config.seed,
                              weights={k: float(v) for k, v in config.weights.items()}, process_index=process_index,
                              process_count=process_count)

    def report(model, params, vocab):
        return _generation_report(config, workdir, model, params, vocab, sets)

    if info is None:
        info = {"corpus": {s.modality: {"shards": os.path.abspath(s.shards), "records": len(opened[s.modality][0]),
                                        "template": s.template, "weight": s.weight} for s in sets} |
                {f"text_{i}": {"text": t.path or "bundled", "weight": t.weight} for i, t in enumerate(texts)}}
    return Corpus({m: tok for m, (_, tok) in opened.items()}, captions, documents, final or report, info,
                  train_stream, lengths)


def _generation_report(config, workdir, model, params, vocab, sets) -> dict:
    """Caption → span and span → caption on each captioned set's held-out records (constrained decoding)."""
    g = config.generation
    sampling = dict(temperature=float(g.temperature), top_k=int(g.top_k) or None,
                    top_p=None if g.top_p >= 1 else float(g.top_p))
    key = jax.random.key(config.seed + 7)
    out, all_outs, all_prompts = {}, [], []
    for k, s in enumerate(sets):
        if isinstance(s, LinkSet):
            if s.eval_links is not None:
                outs, prompts = _link_report(out, model, params, vocab, s, int(g.num_examples),
                                             jax.random.fold_in(key, 9000 + k), sampling)
                all_outs += outs
                all_prompts += prompts
            continue
        if s.eval_shards is None or s.template == "codes":
            continue
        shards = TokenShards(s.eval_shards)
        pick = np.linspace(0, len(shards) - 1, min(len(shards), int(g.num_examples))).round().astype(int)
        rng = np.random.default_rng(config.seed)
        records = [{**r, "caption": record_caption(s, r, rng)} for r in (shards[int(i)] for i in pick)]
        records = [r for r in records if r["caption"]]
        if not records:
            continue
        prompts = [np.append(vocab.encode([r["caption"]], eos=False), vocab.begin_id(s.modality)) for r in records]
        outs = []
        for b in range(0, len(prompts), 50):
            outs += generate(model, params, vocab, prompts[b:b + 50], max_new_tokens=vocab.span_length(s.modality) + 2,
                             key=jax.random.fold_in(key, 1000 * k + b), **sampling)
        validity = span_validity(vocab, outs, prompts)
        media = [seg for o, p in zip(outs, prompts) for seg in vocab.decode(o[len(p) - 1:], strict=False)
                 if isinstance(seg, Media)]
        out[f"{s.modality}/span_validity"] = validity["fraction"]
        out[f"{s.modality}/generated_spans"] = validity["spans"]
        span_prompts = [vocab.encode([Codes(s.modality, np.asarray(r["codes"]))], eos=False) for r in records]
        caps = []
        for b in range(0, len(span_prompts), 50):
            caps += generate(model, params, vocab, span_prompts[b:b + 50], max_new_tokens=16,
                             key=jax.random.fold_in(key, 5000 + 1000 * k + b), temperature=0.0)
        texts = ["".join(seg.text for seg in vocab.decode(c[len(p):], strict=False) if hasattr(seg, "text")).strip()
                 for p, c in zip(span_prompts, caps)]
        out[f"{s.modality}/caption_exact"] = float(np.mean([t == r["caption"].strip()
                                                            for t, r in zip(texts, records)]))
        if jax.process_index() == 0:
            _save_examples(workdir, s.modality, vocab.tokenizer(s.modality), records, media, texts)
        all_outs += outs
        all_prompts += prompts
    validity = span_validity(vocab, all_outs, all_prompts)
    return {**out, "span_validity": validity["fraction"], "generated_spans": validity["spans"]}


def _link_report(out, model, params, vocab, s: LinkSet, num_examples: int, key, sampling) -> tuple[list, list]:
    """The tail span written after each of up to ``num_examples`` held-out links' head and text: its validity
    and ``tail_exact`` (equal to the true tail's codes) into ``out``; returns the outputs and prompts."""
    shards = TokenShards(s.shards)
    links = LinkLines(s.eval_links, shards)
    pick = np.linspace(0, len(links) - 1, min(len(links), num_examples)).round().astype(int)
    chosen = [links[int(i)] for i in pick]
    prompts = [np.append(vocab.encode([Codes(s.modality, np.asarray(shards[h]["codes"])), text], eos=False),
                         vocab.begin_id(s.modality)) for h, text, _ in chosen]
    outs = []
    for b in range(0, len(prompts), 50):
        outs += generate(model, params, vocab, prompts[b:b + 50],
                         max_new_tokens=vocab.span_length(s.modality) + 2, key=jax.random.fold_in(key, b), **sampling)
    start, span = vocab.range(s.modality)[0], vocab.span_length(s.modality)
    exact = [np.array_equal(o[len(p):len(p) + span] - start, np.asarray(shards[t]["codes"]).reshape(-1))
             for o, p, (_, _, t) in zip(outs, prompts, chosen)]
    validity = span_validity(vocab, outs, prompts)
    out[f"{s.modality}/span_validity"] = validity["fraction"]
    out[f"{s.modality}/generated_spans"] = validity["spans"]
    out[f"{s.modality}/tail_exact"] = float(np.mean(exact)) if exact else 0.0
    return outs, prompts


def _save_examples(workdir, modality, tok, records, media, texts) -> None:
    """The generated examples of one set: images as a figure, audio as WAV files; the captions read back."""
    folder = os.path.join(workdir, "generated", modality)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "captions.tsv"), "w") as fh:
        fh.write("held-out caption\tcaption the LM wrote for its codes\n")
        fh.writelines(f"{r['caption']}\t{t}\n" for r, t in zip(records, texts))
    if tok.modality == "image" and media:
        plt = pyplot()
        n = min(len(media), 20)
        fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(1.2 * ((n + 1) // 2), 2.8), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(np.asarray(media[i].data)[..., 0], cmap="gray", vmin=0, vmax=1)
                ax.set_title(records[i]["caption"][:18], fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "generated.png"), dpi=100)
        plt.close(fig)
    elif tok.modality == "audio" and media:
        import soundfile  # optional dependency (the audio extra)

        for i, m in enumerate(media[:20]):
            soundfile.write(os.path.join(folder, f"{i:02d}.wav"), np.asarray(m.data, np.float32).reshape(-1),
                            int(tok.sample_rate))
