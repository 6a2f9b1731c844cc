"""Task ``'lm'``: a multimodal decoder LM over one vocabulary of text and a modality tokenizer's codes.

``config.documents = 'shards'`` trains on any mixture of token shards (``python -m vqjax.tokenize``) and text,
streamed through grain with the stream's position in every checkpoint (:mod:`vqjax.train.tasks.lm_shards`).
The two built-in corpora are recipes on top of it: ``'kg_text'`` (:mod:`vqjax.train.tasks.lm_graph`) and
``'mnist_captions'``, whose run:

1. opens the image tokenizer artifact ``config.image_tokenizer`` (a trained ``mnist_vq`` workdir or an export);
2. tokenizes the training digits (``config.max_train_images`` evenly spaced, with ``config.augment_copies``
   randomly jittered copies of each, :func:`vqjax.data.augment.affine_jitter`: shift, rotation, scale) and the
   held-out digits into token shards, ``workdir/shards/train`` and ``workdir/shards/eval``
   (:func:`vqjax.lm.shards.tokenize_here`; a resumed run keeps them), and builds a
   :class:`~vqjax.lm.MultimodalVocab` (byte-level BPE on the bundled text plus every caption) saved as
   ``workdir/vocab.json`` (a resumed run reloads it, refusing a changed tokenizer);
   the shards are one shard set of the mixture stream (:func:`vqjax.lm.corpus.mixture_stream`): each record
   becomes caption then image or image then caption, the caption drawn among its label's templates
   (:data:`vqjax.lm.documents.CAPTION_TEMPLATES`), a fraction ``config.uncond_fraction`` of the caption-first
   documents without their caption (for classifier-free guidance); up to ``config.max_eval_documents`` held-out
   records are the evaluation set;
3. trains :class:`~vqjax.lm.DecoderLM` with the weighted next-id cross-entropy on a ``('data', 'model')`` mesh
   (``config.model_parallel`` devices on the model axis; parameters placed by their logical axes);
4. evaluates held-out bits per token, per kind (text, image) and overall, with perplexities;
5. at the end, generates with constrained decoding: text→image (a caption of each digit, then the image span,
   with classifier-free guidance ``config.generation.guidance`` when not 1; the image is decoded and classified
   by an in-repo digit classifier trained on the training digits, whose held-out accuracy is reported too) and
   image→text (the held-out digits' codes, then a greedy caption; correct when it names the digit); ``span_validity`` of every generated span. Figure ``generated_digits.png``, and the held-out
   digits' generated captions in ``generated_captions.txt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vqjax.data import pipeline
from vqjax.data.augment import affine_jitter
from vqjax.data.graphs import KG_DATASETS
from vqjax.data.tokens import TokenShards
from vqjax.evals.figures import pyplot
from vqjax.lm import (
    Codes,
    DecoderLM,
    MultimodalVocab,
    generate,
    pack_documents,
    span_validity,
)
from vqjax.lm.corpus import ShardSet
from vqjax.lm.documents import CAPTION_TEMPLATES, DIGIT_WORDS, caption, digit_in_text
from vqjax.lm.model import LOGICAL_RULES, param_shardings
from vqjax.lm.shards import TokenizeJob, tokenize_here
from vqjax.lm.streams import packed_eval_batches
from vqjax.tokenizers import Tokenizer
from vqjax.train import reports
from vqjax.train.config import (
    add_step_options,
    check_positive,
    core_config,
    default_data_dir,
    optimizer_config,
)
from vqjax.train.core import make_optimizer, to_host
from vqjax.train.cost import FedStep
from vqjax.train.perceptual import feature_net_accuracy, load_or_train_feature_net
from vqjax.train.sharding import micro_batches, state_shardings
from vqjax.train.tasks import Run, Task, register_task
from vqjax.train.tasks.lm_corpus import Corpus
from vqjax.train.tasks.lm_graph import kg_corpus
from vqjax.train.tasks.lm_shards import check_corpus, corpus_from_sets, shards_corpus

__all__ = ["TASK", "LMState", "check", "default_config", "lm_mesh", "lm_state_shardings", "report", "runlocal", "setup"]

DOCUMENT_SOURCES = ("mnist_captions", "kg_text", "shards")
VOCAB_FILE = "vocab.json"


class LMState(NamedTuple):
    """Step (int32), parameters and optimizer state of an LM run."""
    step: jax.Array
    params: Any
    opt_state: Any


def default_config() -> ml_collections.ConfigDict:
    """Every field of an LM experiment, with defaults: captions and MNIST image tokens."""
    c = add_step_options(core_config("lm"))
    c.documents = "mnist_captions"
    c.dataset = "vqjax_mnist"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.train_split = "train"
    c.eval_split = "test"
    c.max_train_images = ml_collections.FieldReference(None, field_type=int)
    c.max_eval_images = ml_collections.FieldReference(None, field_type=int)
    c.augment_copies = 0                       # mnist_captions: jittered copies of each training digit (affine_jitter)
    c.uncond_fraction = 0.0                    # mnist_captions: caption→image documents without their caption (CFG)
    c.image_tokenizer = "runs/mnist_vq"        # mnist_captions: a trained image tokenizer (workdir or export)
    c.kg_dataset = "umls"                      # kg_text: the knowledge graph (vqjax.data.graphs.KG_DATASETS)
    c.nodepiece = ml_collections.ConfigDict(dict(num_anchors=40, anchors_per_node=10, relations_per_node=12))
    c.max_test_queries = ml_collections.FieldReference(None, field_type=int)   # kg_text: test triples ranked
    c.corpus = ml_collections.ConfigDict()     # shards: {name: {shards, eval_shards, template, weight} | {text, ...}}
    c.max_eval_documents = 500                 # held-out documents per set (shards, mnist_captions, kg_text)
    c.text_vocab_size = 1024
    c.seq_len = 128
    c.batch_size = 32
    c.eval_batch_size = 32
    c.weights = ml_collections.ConfigDict(dict(text=1.0, image=1.0))     # loss weight per kind
    c.model = ml_collections.ConfigDict(dict(dim=256, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=768))
    c.model_parallel = 1                       # devices on the 'model' mesh axis (sharding 'fsdp+model' or 'replicated')
    c.generation = ml_collections.ConfigDict(dict(num_examples=200, temperature=0.0, top_k=0, top_p=1.0,
                                                  guidance=1.0, classifier_steps=1500))
    c.num_train_steps = 3000
    c.log_every_steps = 50
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 500
    c.optimizer = optimizer_config(1e-3)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A 1-layer 32-wide model, 20 steps on 200 digits, 20 generations."""
    c.model.dim, c.model.num_layers, c.model.num_heads, c.model.num_kv_heads, c.model.mlp_dim = 32, 1, 2, 1, 64
    c.max_train_images, c.max_eval_images = 200, 40
    c.text_vocab_size = 300
    c.batch_size, c.eval_batch_size = 8, 8
    c.num_train_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 20, 5, 10, 10
    c.optimizer.warmup_steps = 5
    c.generation.num_examples, c.generation.classifier_steps = 20, 30
    return c


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad LM config with a message naming the field, before any data is read."""
    if config.documents not in DOCUMENT_SOURCES:
        raise ValueError(f"config.documents must be one of {DOCUMENT_SOURCES}; got {config.documents!r}")
    pipeline.check_dataset_name(config.dataset)
    check_positive(config, "text_vocab_size", "seq_len", "batch_size", "eval_batch_size", "model.dim",
                   "model.num_layers", "model.num_heads", "model.num_kv_heads", "model.mlp_dim", "model_parallel",
                   "generation.num_examples", "generation.classifier_steps")
    if config.text_vocab_size < 256:
        raise ValueError(f"config.text_vocab_size must be >= 256 (the byte alphabet); got {config.text_vocab_size}")
    check_positive(config, "max_eval_documents")
    if config.documents == "shards":
        kinds = set(check_corpus(config))
    else:
        kinds = {"text", "image" if config.documents == "mnist_captions" else "graph"}
    unknown = sorted(set(config.weights.keys()) - kinds)
    if unknown or any(not float(v) >= 0 for v in config.weights.values()):
        raise ValueError(f"config.weights must map {sorted(kinds)} to weights >= 0 for documents "
                         f"{config.documents!r}; got {config.weights.to_dict()}")
    if config.documents == "kg_text":

        if config.kg_dataset not in KG_DATASETS:
            raise ValueError(f"config.kg_dataset must be one of {KG_DATASETS}; got {config.kg_dataset!r}")
        check_positive(config, "nodepiece.num_anchors", "nodepiece.anchors_per_node", "nodepiece.relations_per_node")
    g = config.generation
    if not g.temperature >= 0 or not 0 < g.top_p <= 1 or g.top_k < 0:
        raise ValueError(f"config.generation: temperature must be >= 0, top_p in (0, 1] and top_k >= 0 (0: off); "
                         f"got {g.temperature}, {g.top_p}, {g.top_k}")
    if config.augment_copies < 0 or not 0 <= config.uncond_fraction < 1:
        raise ValueError(f"config.augment_copies must be >= 0 and config.uncond_fraction in [0, 1); got "
                         f"{config.augment_copies} and {config.uncond_fraction}")
    if not g.guidance >= 0:
        raise ValueError(f"config.generation.guidance must be >= 0 (1: off); got {g.guidance}")
    if g.guidance != 1 and config.uncond_fraction == 0:
        raise ValueError(f"config.generation.guidance={g.guidance} contrasts with unconditional images, which the "
                         f"model only learns with config.uncond_fraction > 0 (e.g. 0.1); got 0")
    DecoderLM(vocab_size=300, dim=config.model.dim, num_layers=1, num_heads=config.model.num_heads,
              num_kv_heads=config.model.num_kv_heads, mlp_dim=8, dtype=config.precision)._check()
    if config.sharding == "fsdp" and config.model_parallel > 1:
        raise ValueError(f"config.model_parallel ({config.model_parallel}) puts the heads, MLP and vocabulary on the "
                         f"model axis, which config.sharding='fsdp' leaves unused: use 'fsdp+model' (or "
                         f"'replicated' for tensor parallelism alone)")


# The parameters' layout under config.sharding='fsdp': nothing on the model axis.
NO_MODEL_RULES = tuple((name, "data" if name == "batch" else None) for name, _ in LOGICAL_RULES)


def lm_state_shardings(abstract: LMState, boxed, tx: optax.GradientTransformation, mesh: Mesh, sharding: str) -> LMState:
    """The LM state's shardings under ``config.sharding``: the heads, MLP and vocabulary on the ``model`` axis
    ('replicated' and 'fsdp+model'; :data:`~vqjax.lm.model.LOGICAL_RULES`), none there under 'fsdp'; the
    optimizer's moments as their parameters, its counters replicated; under 'fsdp' and 'fsdp+model' every array
    also split over ``data`` (:func:`vqjax.train.sharding.state_shardings`).

    Args:
      abstract: the state's shapes; boxed: ``jax.eval_shape`` of the model's init (logically partitioned).
    """
    replicated = NamedSharding(mesh, P())
    layout = param_shardings(boxed, mesh, NO_MODEL_RULES if sharding == "fsdp" else LOGICAL_RULES)
    base = LMState(step=replicated, params=layout, opt_state=optax.tree_map_params(
        tx, lambda _, s: s, abstract.opt_state, layout, transform_non_params=lambda _: replicated))
    return state_shardings(abstract, mesh, sharding, base=base)


def lm_mesh(devices, model_parallel: int) -> Mesh:
    """A ``('data', 'model')`` mesh with ``model_parallel`` devices on the model axis."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if devices.size % model_parallel:
        raise ValueError(f"config.model_parallel ({model_parallel}) must divide the {devices.size} devices")
    return Mesh(devices.reshape(devices.size // model_parallel, model_parallel), ("data", "model"))


def _open_tokenizer(path: str):
    try:
        tok = Tokenizer.load(path)
    except FileNotFoundError as err:
        raise ValueError(f"config.image_tokenizer {path!r} is not a tokenizer (train one first, e.g. "
                         f"`python -m vqjax.main --config=experiments/mnist_vq.py --workdir={path}`): {err}") from err
    if tok.modality != "image":
        raise ValueError(f"config.image_tokenizer must be an image tokenizer; {path!r} is {tok.modality!r}")
    return tok


def _digits(source, limit):
    """Images, labels and source indices of all examples, or of ``limit`` of them evenly spaced (the splits are
    stored sorted by label: a prefix would hold only the first digits)."""
    n = len(source) if limit is None else min(limit, len(source))
    index = np.linspace(0, len(source) - 1, n).round().astype(int)
    examples = [source[int(i)] for i in index]
    return (np.stack([np.asarray(e["image"]) for e in examples]),
            np.asarray([int(e["label"]) for e in examples]), index)


def _weighted_nll(model, params, batch, kinds, num_kinds):
    logits, _ = model.apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
    targets = jnp.roll(batch["tokens"], -1, axis=-1)
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
    w = batch["weights"]
    kind = jnp.maximum(kinds[targets], 0)                       # EOS (-1) counts as text (0)
    counted = (w > 0).astype(jnp.float32)
    per_kind = jax.nn.one_hot(kind, num_kinds) * counted[..., None]
    return nll, w, per_kind


def _train_step(model, tx, kinds, num_kinds, accum_steps, state: LMState, batch):
    """One AdamW step on the weighted next-id loss ``sum(nll w) / sum(w)``; with ``accum_steps > 1`` the batch's
    micro-batches are scanned and their summed ``nll w`` gradients divided by the whole batch's ``sum(w)``: the
    large batch's gradient exactly (up to summation order)."""
    def weighted_sum(params, b):
        nll, w, _ = _weighted_nll(model, params, b, kinds, num_kinds)
        return jnp.sum(nll * w)

    total_w = jnp.maximum(jnp.sum(batch["weights"]), 1e-9)
    if accum_steps == 1:
        loss, grads = jax.value_and_grad(lambda p: weighted_sum(p, batch) / total_w)(state.params)
    else:
        def one(carry, mb):
            s, g = jax.value_and_grad(weighted_sum)(state.params, mb)
            return (carry[0] + s, jax.tree.map(jnp.add, carry[1], g)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (s, g), _ = jax.lax.scan(one, (jnp.float32(0.0), zeros), micro_batches(batch, accum_steps))
        loss, grads = s / total_w, jax.tree.map(lambda x: x / total_w, g)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    packing = jnp.mean((batch["segment_ids"] > 0).astype(jnp.float32))      # fraction of ids that are not padding
    return LMState(state.step + 1, params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads),
                                                        "packing_efficiency": packing}


def _eval_sums(model, kinds, num_kinds, params, batch):
    nll, _, per_kind = _weighted_nll(model, params, batch, kinds, num_kinds)
    return {"nll": jnp.sum(nll[..., None] * per_kind, axis=(0, 1)), "count": jnp.sum(per_kind, axis=(0, 1))}


@dataclasses.dataclass(frozen=True)
class _Digits:
    """Digit images ``[N, H, W, C]`` and labels ``[N]`` as examples ``{'image', 'label', 'key'}`` (the source
    the recipe tokenizes)."""
    images: np.ndarray
    labels: np.ndarray
    keys: list

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self.labels):
            raise IndexError(f"digit {i} out of range for {len(self.labels)}")
        return {"image": self.images[i], "label": int(self.labels[i]), "key": self.keys[i]}


def _digit_shards(config, workdir, data_dir, part, source, split, limit, copies) -> str:
    """``workdir/shards/<part>``: the split's digits (``limit`` evenly spaced) and ``copies`` jittered copies of
    each, tokenized by the image tokenizer (:func:`vqjax.lm.shards.tokenize_here`; finished shards are kept)."""
    images, labels, index = _digits(source, limit)
    keys = [f"{split}/{int(i)}" for i in index]
    if copies:
        images = np.concatenate([images, affine_jitter(images, copies, seed=config.seed)])
        labels = np.tile(labels, 1 + copies)
        keys = keys + [f"{k}#jitter{c}" for c in range(1, copies + 1) for k in keys]
    out = os.path.join(workdir, "shards", part)
    what = f"{split}: {len(index)} digits evenly spaced" + (f", {copies} jittered copies each (seed {config.seed})"
                                                            if copies else "")
    job = TokenizeJob(tokenizer=os.path.abspath(config.image_tokenizer), dataset=config.dataset, split=what,
                      out=out, data_dir=data_dir)
    tokenize_here(job, source=_Digits(images, labels, keys))
    return out


def _mnist_corpus(config, workdir, stop) -> Corpus:
    """The digit captions as a recipe on top of token shards: the digits are tokenized into ``workdir/shards``
    and streamed as one shard set whose captions are drawn per label."""
    data_dir = config.data_dir or default_data_dir()
    train_source, eval_source = pipeline.get_splits(config.dataset, (config.train_split, config.eval_split), data_dir)
    tok = _open_tokenizer(config.image_tokenizer)
    if stop is not None:
        stop.check("tokenizing the digits")
    train = _digit_shards(config, workdir, data_dir, "train", train_source, config.train_split,
                          config.max_train_images, config.augment_copies)
    held_out = _digit_shards(config, workdir, data_dir, "eval", eval_source, config.eval_split,
                             config.max_eval_images, 0)
    label_captions = tuple(tuple(caption(d, t) for t in range(len(CAPTION_TEMPLATES))) for d in range(10))
    sets = [ShardSet("image", train, "both", 1.0, held_out, label_captions, float(config.uncond_fraction))]
    eval_shards = TokenShards(held_out)
    records = [eval_shards[i] for i in range(len(eval_shards))]
    eval_codes = np.stack([np.asarray(r["codes"]) for r in records])
    eval_labels = np.asarray([int(r["label"]) for r in records])

    def final(model, params, vocab):
        return _generation_report(config, workdir, model, params, vocab, tok, train_source, eval_source, eval_codes,
                                  eval_labels, stop)

    captions = [c for options in label_captions for c in options]
    return corpus_from_sets(config, workdir, stop, sets, [], final=final, text_corpus=captions * 20,
                            info={"image_tokenizer": os.path.abspath(config.image_tokenizer),
                                  "shards": {"train": train, "eval": held_out}})


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Opens the corpus (writing a recipe's shards), builds (or reloads) the vocabulary, packs the held-out
    documents, opens the training stream, and builds the model on the ``('data', 'model')`` mesh."""

    corpus = {"mnist_captions": _mnist_corpus, "kg_text": kg_corpus, "shards": shards_corpus}[config.documents](
        config, workdir, stop)
    vocab_path = os.path.join(workdir, VOCAB_FILE)
    if os.path.exists(vocab_path):
        vocab = MultimodalVocab.load(vocab_path, modalities=corpus.modalities)
    else:
        vocab = MultimodalVocab.build(text=None, modalities=corpus.modalities, text_vocab_size=config.text_vocab_size,
                                      text_corpus=corpus.text_corpus, max_lengths=corpus.max_lengths)
        if jax.process_index() == 0:
            vocab.save(vocab_path)
    eval_rows, _ = pack_documents(corpus.eval_documents(vocab), config.seq_len, vocab)
    mesh = lm_mesh(devices, config.model_parallel)
    data_size = mesh.shape["data"]
    for name in ("batch_size", "eval_batch_size"):
        if config[name] % data_size:
            raise ValueError(f"config.{name} ({config[name]}) must be divisible by the {data_size} devices of the "
                             f"data axis")
    if config.batch_size % jax.process_count():
        raise ValueError(f"config.batch_size ({config.batch_size}) must be divisible by the {jax.process_count()} "
                         f"processes")
    data_iterator = iter(corpus.train_stream(vocab, config.batch_size // jax.process_count(), jax.process_index(),
                                             jax.process_count()))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    model = DecoderLM(vocab_size=vocab.size, dim=config.model.dim, num_layers=config.model.num_layers,
                      num_heads=config.model.num_heads, num_kv_heads=config.model.num_kv_heads,
                      mlp_dim=config.model.mlp_dim, dtype=config.precision, remat=bool(config.remat))
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    sample = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda k: model.init(k, sample, sample)["params"], jax.random.key(0))

    def init_state(key):
        params = nn.meta.unbox(model.init(key, sample, sample)["params"])
        return LMState(step=jnp.int32(0), params=params, opt_state=tx.init(params))

    with jax.set_mesh(mesh):
        abstract = jax.eval_shape(init_state, jax.random.key(config.seed))
    state_sharding = lm_state_shardings(abstract, boxed, tx, mesh, config.sharding)
    num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params)))
    kinds = jnp.asarray(vocab.kind_table())
    num_kinds = 1 + len(vocab.modalities)
    batch_shardings = {k: batch_sharding for k in ("tokens", "segment_ids", "positions", "weights")}
    jit_train = jax.jit(functools.partial(_train_step, model, tx, kinds, num_kinds, int(config.grad_accum_steps)),
                        in_shardings=(state_sharding, batch_shardings), out_shardings=(state_sharding, replicated),
                        donate_argnums=0)
    jit_eval = jax.jit(functools.partial(_eval_sums, model, kinds, num_kinds),
                       in_shardings=(state_sharding.params, batch_shardings), out_shardings=replicated)

    @contextlib.contextmanager
    def mesh_context():
        with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
            yield

    def in_mesh(fn):
        def call(*args):
            with mesh_context():
                return fn(*args)
        return call

    def global_batch(local):
        return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in local.items()}

    def make_step(start):
        # The stream is positioned at ``start`` by the checkpoint the core restored with the state.
        return FedStep(jit_train, lambda: (global_batch(next(data_iterator)),), context=mesh_context)

    names = ("text",) + vocab.modalities

    eval_step = in_mesh(jit_eval)

    def evaluate(state, step):
        totals = {"nll": np.zeros(num_kinds), "count": np.zeros(num_kinds)}
        for batch in packed_eval_batches(eval_rows, batch_size=config.eval_batch_size,
                                         process_index=jax.process_index(), process_count=jax.process_count()):
            sums = eval_step(state.params, global_batch(batch))
            for k in totals:
                totals[k] += np.asarray(sums[k])
        out = {}
        for i, name in enumerate(names):
            nats = totals["nll"][i] / max(totals["count"][i], 1.0)
            out[f"bits_per_token_{name}"] = float(nats / np.log(2))
            out[f"perplexity_{name}"] = float(np.exp(nats))
        nats = totals["nll"].sum() / max(totals["count"].sum(), 1.0)
        out["bits_per_token"], out["loss"] = float(nats / np.log(2)), float(nats)
        return out

    def test(state, step):
        result = evaluate(state, step)
        result.update(corpus.final(model, {"params": to_host_tree(state.params)}, vocab))
        return result

    info = {"documents": config.documents, **corpus.info, "vocab_size": vocab.size,
            "ranges": {n: list(vocab.range(n)) for n in names},
            "eval_rows": int(eval_rows["tokens"].shape[0]), "num_params": num_params,
            "mesh": {"data": int(mesh.shape["data"]), "model": int(mesh.shape["model"])},
            "sharding": config.sharding, "precision": config.precision}
    return Run(init_state=init_state, make_step=make_step, evaluate=evaluate, replicated=replicated, info=info,
               hint="Lower config.optimizer.learning_rate.", test=test, abstract=abstract,
               state_sharding=state_sharding, data_iterator=data_iterator)


def to_host_tree(tree):
    return jax.tree.map(lambda x: jnp.asarray(to_host(x)), tree)


def _generation_report(config, workdir, model, params, vocab, tok, train_source, eval_source, eval_codes,
                       eval_labels, stop) -> dict:
    """Text→image and image→text by constrained generation, judged by an in-repo digit classifier."""
    g = config.generation
    net, net_params = load_or_train_feature_net(workdir, train_source, num_classes=10, steps=g.classifier_steps,
                                                seed=config.seed, stop=stop)
    classifier_accuracy = feature_net_accuracy(net, net_params, eval_source)
    sampling = dict(temperature=float(g.temperature), top_k=int(g.top_k) or None,
                    top_p=None if g.top_p >= 1 else float(g.top_p))
    span = vocab.span_length("image")
    n = int(g.num_examples)
    wanted = np.arange(n) % 10
    prompts = [np.append(vocab.encode([caption(int(d), i % 5)], eos=False), vocab.begin_id("image"))
               for i, d in enumerate(wanted)]
    key = jax.random.key(config.seed + 7)
    guidance = float(g.guidance)
    uncond = [np.asarray([vocab.bos_id, vocab.begin_id("image")], np.int32)] * n if guidance != 1 else None
    outs = []
    for s in range(0, n, 50):
        outs += generate(model, params, vocab, prompts[s:s + 50], max_new_tokens=span + 2,
                         key=jax.random.fold_in(key, s), guidance=guidance,
                         uncond_prompts=None if uncond is None else uncond[s:s + 50], **sampling)
    validity = span_validity(vocab, outs, prompts)
    images, ok = [], []
    for p, o in zip(prompts, outs):
        codes = o[len(p):len(p) + span] - vocab.range("image")[0]
        ok.append(len(codes) == span and codes.min() >= 0 and codes.max() < tok.vocab_size)
        images.append(codes.reshape(vocab.codes_shape("image")) if ok[-1] else np.zeros(vocab.codes_shape("image"),
                                                                                        np.int32))
    decoded = np.asarray(tok.decode(np.stack(images).astype(np.int32)))
    predict = jax.jit(lambda p, x: jnp.argmax(net.apply(p, x), -1))
    predicted = np.asarray(predict(net_params, decoded))
    text_to_image = float(np.mean((predicted == wanted) & np.asarray(ok)))
    _save_generated(os.path.join(workdir, "generated_digits.png"), decoded, wanted, predicted)

    pick = np.linspace(0, len(eval_codes) - 1, min(n, len(eval_codes))).round().astype(int)   # every digit
    m = pick.size
    img_prompts = [vocab.encode([Codes("image", c)], eos=False) for c in eval_codes[pick]]
    caps = []
    for s in range(0, m, 50):
        caps += generate(model, params, vocab, img_prompts[s:s + 50], max_new_tokens=12,
                         key=jax.random.fold_in(key, 10_000 + s), temperature=0.0)
    texts = ["".join(seg.text for seg in vocab.decode(c[len(p):], strict=False) if hasattr(seg, "text"))
             for p, c in zip(img_prompts, caps)]
    image_to_text = float(np.mean([digit_in_text(t) == int(y) for t, y in zip(texts, eval_labels[pick])]))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "generated_captions.txt"), "w") as fh:
            fh.writelines(f"{int(y)}\t{t!r}\n" for t, y in zip(texts, eval_labels[pick]))
    return {"text_to_image_accuracy": text_to_image, "image_to_text_accuracy": image_to_text,
            "span_validity": validity["fraction"], "generated_spans": validity["spans"],
            "classifier_accuracy": classifier_accuracy}


def _save_generated(path, images, wanted, predicted):
    plt = pyplot()

    cols = 10
    rows = min(4, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < min(len(images), rows * cols):
            ax.imshow(images[i][..., 0], cmap="gray", vmin=0, vmax=1)
            color = "green" if predicted[i] == wanted[i] else "red"
            ax.set_title(f"{DIGIT_WORDS[wanted[i]]}\n→ {predicted[i]}", fontsize=7, color=color)
    fig.suptitle("text → image: the requested digit, and what the classifier reads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(result: dict, workdir: str) -> str:
    """The LM's held-out bits per token and its generation figures as a table, and where its figures are."""
    workdir = os.path.abspath(workdir)
    kinds = [k[len("bits_per_token_"):] for k in result if k.startswith("bits_per_token_")]
    rows = [("step", f"{result['step']}")]
    if "mrr" in result:             # kg_text
        rows += [("tail prediction: filtered MRR (LM likelihood)", f"{result['mrr']:.4f}"),
                 ("Hits@1 / @3 / @10", f"{result['hits@1']:.4f} / {result['hits@3']:.4f} / {result['hits@10']:.4f}"),
                 ("greedy generated tail: the test tail / any true tail",
                  f"{result['generation_hits@1']:.4f} / {result['generation_true_tail']:.4f}")]
        figures = ("loss_curves.png",)
    elif "text_to_image_accuracy" not in result:       # shards
        for key in sorted(k for k in result if k.endswith("/span_validity")):
            name = key.split("/")[0]
            rows += [(f"{name}: generated spans that decode / captions read back exactly",
                      f"{result[key]:.3f} / {result.get(f'{name}/caption_exact', float('nan')):.3f}")]
        figures = ("loss_curves.png",)
    else:                           # mnist_captions
        rows += [("text→image accuracy (classifier)", f"{result['text_to_image_accuracy']:.3f}"),
                 ("image→text caption accuracy", f"{result['image_to_text_accuracy']:.3f}"),
                 ("digit classifier held-out accuracy", f"{result['classifier_accuracy']:.3f}")]
        figures = ("loss_curves.png", "generated_digits.png")
    rows += [("generated spans that decode", f"{result['span_validity']:.3f} of {result['generated_spans']}"),
             ("bits per token: all / " + " / ".join(kinds),
              " / ".join(f"{result[k]:.3f}" for k in ["bits_per_token"] + [f"bits_per_token_{k}" for k in kinds]))]
    return reports.result_table("held-out metric", rows, figures, workdir,
                                [f"vocabulary: {os.path.join(workdir, VOCAB_FILE)}"], result)


TASK = register_task(Task("lm", default_config, check, runlocal, setup, report, free_fields=("weights", "corpus")))
