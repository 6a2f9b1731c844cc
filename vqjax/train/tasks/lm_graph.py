"""Graph + text documents for the ``'lm'`` task (``config.documents = 'kg_text'``).

A recipe on top of token shards. Entities are NodePiece token spans (a :class:`vqjax.tokenizers.GraphTokenizer`
built on the training graph and exported to ``workdir/graph_tokenizer``), tokenized into ``workdir/shards/entities``
(one record per entity, keyed by its id; :func:`vqjax.lm.shards.tokenize_here`); relations are text: the triples
are written as links (``workdir/links/train.tsv``, ``valid.tsv``), so a training triple ``(h, r, t)`` is the
document ``[h's span] " <relation words>" [t's span]``, and its reciprocal ``[t] " inverse <relation words>" [h]``
(:class:`vqjax.lm.corpus.LinkSet`, streamed by :func:`vqjax.lm.corpus.mixture_stream`). The held-out documents
are the valid triples (up to ``config.max_eval_documents``).

Tail prediction is generation: the prompt is ``h``'s span, the relation's words and ``begin_graph``. Two figures:

* filtered ranking: every entity's span is scored by the LM's log-likelihood (its codes and the end token, teacher
  forced) after the prompt; the true tail's rank among them, other known tails (train, valid, test) removed, ties
  counted half, gives MRR and Hits@1/3/10, as the link-prediction task reports them;
* generation: the greedy constrained continuation (a trie over the nodes' token rows, so it always names a node):
  ``generation_hits@1``, the fraction naming the test triple's tail (unfiltered: many UMLS queries have several
  true tails, and greedy decoding names one of them), and ``generation_true_tail``, the fraction naming any known
  true tail of the query (train, valid or test). Entities sharing a token row count as that row's lowest id.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.data.graphs import load_kg
from vqjax.evals import ranking
from vqjax.graph import NodePieceVocab
from vqjax.lm import Codes, generate, span_validity
from vqjax.lm.corpus import LinkSet
from vqjax.lm.shards import IDS, TokenizeJob, tokenize_here
from vqjax.tokenizers.graph import GraphTokenizer
from vqjax.train.tasks.lm_shards import corpus_from_sets

__all__ = ["kg_corpus", "relation_text", "score_tails", "write_links"]


def relation_text(name: str) -> str:
    """A relation label as words: ``'interacts_with'`` -> ``' interacts with'``."""
    return " " + name.replace("_", " ").replace(".", " ").strip()


def write_links(path: str, triples: np.ndarray, rel_words: list[str]) -> str:
    """Triples ``[T, 3]`` as a links file (:class:`vqjax.lm.corpus.LinkSet`): ``h <tab> relation words <tab> t``
    and its reciprocal ``t <tab> inverse relation words <tab> h`` per triple, keys being entity ids. Written to a
    temporary name and renamed (every process may write it; the content is the same)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = []
    for h, r, t in np.asarray(triples):
        lines.append(f"{int(h)}\t{rel_words[r]}\t{int(t)}\n")
        lines.append(f"{int(t)}\t inverse{rel_words[r]}\t{int(h)}\n")
    tmp = f"{path}.{os.getpid()}.partial"
    with open(tmp, "w") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)
    return path


def kg_corpus(config, workdir, stop):
    splits = load_kg(config.kg_dataset)
    for name in ("train", "valid", "test"):
        if splits.split(name).shape[0] == 0:
            raise ValueError(f"split {name!r} of knowledge graph {config.kg_dataset!r} is empty")
    graph = splits.graph()
    n = config.nodepiece
    path = os.path.join(workdir, "graph_tokenizer")
    if os.path.exists(os.path.join(path, "spec.json")):
        tok = GraphTokenizer.load(path)
    else:
        vocab_np = NodePieceVocab.build(graph, num_anchors=n.num_anchors, anchors_per_node=n.anchors_per_node,
                                        relations_per_node=n.relations_per_node, seed=config.seed)
        tok = GraphTokenizer.from_tokens(vocab_np, vocab_np.tokenize(graph))
        if jax.process_index() == 0:
            tok.export(path)
        tok = GraphTokenizer.load(path)
    rel_words = [relation_text(r) for r in splits.relations]
    rows = tok.encode(np.arange(splits.num_entities))
    if stop is not None:
        stop.check("tokenizing the entities")
    entities = os.path.join(workdir, "shards", "entities")
    tokenize_here(TokenizeJob(tokenizer=os.path.abspath(path), dataset=IDS, split="all", out=entities,
                              data_dir=workdir))
    links = {name: write_links(os.path.join(workdir, "links", f"{name}.tsv"), splits.split(name), rel_words)
             for name in ("train", "valid")}
    sets = [LinkSet("graph", entities, links["train"], 1.0, links["valid"])]

    def final(model, params, vocab):
        test = splits.test if config.max_test_queries is None else splits.test[:config.max_test_queries]
        known = ranking.KnownAnswers(np.concatenate([splits.train, splits.valid, splits.test]),
                                        splits.num_entities, splits.num_relations)
        prompts = [np.append(vocab.encode([Codes("graph", rows[h]), rel_words[r]], eos=False),
                           vocab.begin_id("graph")) for h, r, _ in test]
        ranks = []
        for (h, r, t), prompt in zip(test, prompts):
            scores = score_tails(model, params, vocab, prompt, rows)
            rank = ranking.filtered_rank(jnp.asarray(scores[None], jnp.float32), jnp.asarray([t]),
                                            jnp.asarray(known.mask(np.asarray([h]), np.asarray([r]))))
            ranks.append(float(rank[0]))
        result = ranking.ranking_metrics(np.asarray(ranks, np.float64))
        span = vocab.span_length("graph")
        outs = []
        for s in range(0, len(prompts), 64):
            outs += generate(model, params, vocab, prompts[s:s + 64], max_new_tokens=span + 1,
                             key=jax.random.key(config.seed), temperature=0.0)
        validity = span_validity(vocab, outs, prompts)
        named = [tok.decode((o[len(p):len(p) + span] - vocab.range("graph")[0])[None])[0] for p, o in zip(prompts, outs)]
        hits = float(np.mean([int(a) == int(tok.decode(rows[t][None])[0]) for a, (_, _, t) in zip(named, test)]))
        true_tails = known.mask(test[:, 0], test[:, 1])
        any_true = float(np.mean([true_tails[i, int(a)] for i, a in enumerate(named)]))
        return {**{k: float(v) for k, v in result.items()}, "generation_hits@1": hits,
                "generation_true_tail": any_true,
                "span_validity": validity["fraction"], "generated_spans": validity["spans"],
                "test_queries": len(test)}

    distinct = len(np.unique(rows, axis=0))
    return corpus_from_sets(config, workdir, stop, sets, [], final=final,
                            text_corpus=[w.strip() for w in rel_words] * 20,
                            info={"kg_dataset": config.kg_dataset, "entities": splits.num_entities,
                                  "distinct_entity_spans": int(distinct), "graph_tokenizer": path,
                                  "shards": entities, "links": links})


_SCORERS: dict = {}


def score_tails(model, params, vocab, prompt: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 ``[E]``: the LM's log-likelihood of each entity's span (codes, then ``end_graph``) after ``prompt``
    (which ends with ``begin_graph``), one forward pass over all candidates."""
    start = vocab.range("graph")[0]
    cont = np.concatenate([rows + start, np.full((rows.shape[0], 1), vocab.end_id("graph"))], 1).astype(np.int32)
    seq = np.concatenate([np.broadcast_to(prompt, (rows.shape[0], len(prompt))), cont], 1).astype(np.int32)
    key = (model, seq.shape)
    if key not in _SCORERS:
        def score(params, seq, first):
            positions = jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape)
            logits, _ = model.apply(params, seq[:, :-1], positions[:, :-1])
            logp = jax.nn.log_softmax(logits, -1)
            tok_logp = jnp.take_along_axis(logp, seq[:, 1:, None], -1)[..., 0]
            keep = jnp.arange(seq.shape[1] - 1) >= first - 1          # predictions of the continuation only
            return jnp.sum(jnp.where(keep[None], tok_logp, 0.0), -1)
        _SCORERS[key] = jax.jit(score)
    return np.asarray(_SCORERS[key](params, jnp.asarray(seq), len(prompt)), np.float64)
