"""Task ``'sequence_tokenizer'``: tokenizers for multichannel time series (motion, EEG, robot actions) on tfds +
grain input, measured against FAST.

The model (:class:`vqjax.models.SequenceTokenizer`) is a 1D convolutional autoencoder (optionally with Transformer
blocks, optionally multi-scale residual) around any layer-2 quantizer. Each channel is normalised by the training
split's mean and standard deviation, computed in ``setup`` and written into the model's spec, so the artifact
(:class:`vqjax.TimeSeriesTokenizer`, ``modality='timeseries'``) takes and returns raw signals.

Series are brought to ``config.length`` samples: a random crop of each training series per step; every
non-overlapping window of that length of each evaluation series (:func:`read_series`; series shorter than that are
refused before training).
One train step minimises ``config.losses.time`` x the MSE in normalised units, plus ``config.losses.spectral`` x
:func:`vqjax.models.sequence.spectral_loss` on patches of ``config.spectral_patch`` samples, plus the quantizer's
loss.

Evaluation (:mod:`vqjax.evals.timeseries`) reports NMSE, per-channel correlation, band-power error (when
``config.band_power`` and the data has a sample rate), codebook usage and tokens per chunk/second. The final test
scores, by one harness on the same held-out chunks, the tokenizer at each of ``config.eval_levels`` (a residual
quantizer's first levels: fewer tokens) and FAST (:class:`vqjax.models.fast.FAST`, fitted on the training chunks)
at each of ``config.fast_scales``; it measures how often FAST's token sequences still decode when tokens are
corrupted at the rates of ``config.corruption_rates``; and writes ``rate_distortion.json``,
``rate_distortion.png`` and ``reconstructions.png``. With ``config.downstream_steps`` (labelled sets), it also
trains the same small Transformer classifier on the tokens at each eval level and on the raw series and reports
the test accuracies (``vqjax <n>q/accuracy`` with the tokens embedded by the tokenizer's codebook,
``vqjax <n>q/accuracy_learned_embedding`` with embeddings learned from scratch, ``raw/accuracy``) and each token
sequence's compression (values per token).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data.timeseries import CHANNELS
from vqjax.evals import timeseries as timeseries_eval
from vqjax.metrics import CodeCounter
from vqjax.models import model_from_spec
from vqjax.models.fast import FAST
from vqjax.models.sequence import spectral_loss
from vqjax.train import reports, scaffold
from vqjax.train.config import (
    add_example_data,
    add_step_options,
    check_example_data,
    check_positive,
    core_config,
    plain,
    read_example_splits,
)
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["default_config", "check", "runlocal", "setup", "report", "model_spec",
           "channel_stats", "read_series", "TASK"]


def default_config() -> ml_collections.ConfigDict:
    """Every field of a sequence-tokenizer experiment. The defaults: scripted Pusher-v5 action chunks (32 steps x 7
    joints at 20 Hz), 4x temporal downsampling, a residual VQ of 4 levels of 256 codes with quantizer dropout
    (so 8 to 32 tokens a chunk), FAST at scales 2 to 20 beside it."""
    c = add_step_options(add_example_data(core_config("sequence_tokenizer"), "vqjax_timeseries/pusher_actions",
                                          batch_size=64, eval_batch_size=128))
    c.length = 32
    c.model = ml_collections.ConfigDict(dict(channels=32, strides=(2, 2), latent_dim=16, num_residual=1,
                                             transformer_layers=0, scales=(1,)))
    c.quantizer = "rvq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(num_levels=4, codebook_size=256, quantizer_dropout=0.5,
                                                        codebook_learning="ema", codebook_init="kmeans",
                                                        dead_code_threshold=1.0))
    c.losses = ml_collections.ConfigDict(dict(time=1.0, spectral=0.0))
    c.spectral_patch = 16
    c.band_power = False
    c.eval_levels = (1, 2, 4)
    c.fast_scales = (2.0, 5.0, 10.0, 20.0)
    c.fast_vocab_size = 1024
    c.corruption_rates = (0.01, 0.05)
    # The downstream test (labelled sets): a small Transformer classifier trained downstream_steps steps on the
    # tokens at each eval level and on the raw series, averaged over downstream_seeds seeds; 0 steps: off.
    c.downstream_steps = 0
    c.downstream_seeds = 3
    c.optimizer.learning_rate = 2e-3
    c.num_train_steps = 3000
    c.eval_every_steps = 1000
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny model, 6 steps, 16 eval chunks; FAST at two scales."""
    c.model.channels = 4
    c.model.latent_dim = 4
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 16
    if "num_levels" in c.quantizer_kwargs:
        c.quantizer_kwargs.num_levels = 2
        c.eval_levels = (1, 2)
    c.batch_size = 8
    c.eval_batch_size = 8
    c.max_eval_examples = 16
    c.num_train_steps = 6
    c.log_every_steps = 3
    c.eval_every_steps = 6
    c.checkpoint_every_steps = 3
    c.optimizer.warmup_steps = 2
    c.fast_scales = (2.0, 10.0)
    c.downstream_steps = min(c.downstream_steps, 5)
    c.downstream_seeds = 1
    return c


def _hop(config) -> int:
    return int(np.prod(config.model.strides)) * max(int(s) for s in config.model.scales)


def model_spec(config: ml_collections.ConfigDict, mean, scale) -> dict:
    """The model's explicit constructor arguments (:func:`vqjax.models.sequence_tokenizer`), with the channels'
    normalisation."""
    m = config.model
    return {"name": "sequence_tokenizer",
            "kwargs": {"channels": int(m.channels), "strides": [int(s) for s in m.strides],
                       "latent_dim": int(m.latent_dim), "num_residual": int(m.num_residual),
                       "transformer_layers": int(m.transformer_layers), "scales": [int(s) for s in m.scales],
                       "signal_channels": len(mean), "mean": [float(v) for v in mean],
                       "scale": [float(v) for v in scale], "quantizer": config.quantizer,
                       "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}}


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad config with a message naming the field, before any data is read."""
    check_example_data(config)
    check_positive(config, "length", "model.channels", "model.latent_dim", "model.num_residual", "spectral_patch",
                   "fast_vocab_size", "downstream_seeds")
    if config.downstream_steps < 0:
        raise ValueError(f"config.downstream_steps must be >= 0; got {config.downstream_steps}")
    m = config.model
    for field in ("strides", "scales"):
        values = m[field]
        if not len(values) or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in values):
            raise ValueError(f"config.model.{field} must be a non-empty tuple of positive ints; got {values}")
    if m.transformer_layers < 0:
        raise ValueError(f"config.model.transformer_layers must be >= 0; got {m.transformer_layers}")
    hop = _hop(config)
    if config.length % hop:
        raise ValueError(f"config.length ({config.length}) must be a multiple of {hop} (the product of "
                         f"config.model.strides {tuple(m.strides)} times the largest of config.model.scales)")
    if config.losses.spectral > 0 and config.length % config.spectral_patch:
        raise ValueError(f"config.length ({config.length}) must be a multiple of config.spectral_patch "
                         f"({config.spectral_patch})")
    for name, weight in config.losses.items():
        if weight < 0:
            raise ValueError(f"config.losses.{name} must be >= 0; got {weight}")
    if not any(w > 0 for w in config.losses.values()):
        raise ValueError(f"config.losses needs a positive weight; got {config.losses.to_dict()}")
    model = model_from_spec(model_spec(config, [0.0], [1.0]))      # refuses an unknown quantizer or field
    levels = getattr(model.quantizer, "num_levels", None)
    for n in config.eval_levels:
        if levels is None:
            raise ValueError(f"config.eval_levels applies to a residual quantizer; quantizer {config.quantizer!r} "
                             f"has one rate: set config.eval_levels = ()")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= levels:
            raise ValueError(f"config.eval_levels must hold ints in [1, {levels}]; got {tuple(config.eval_levels)}")
    if any(not s > 0 for s in config.fast_scales):
        raise ValueError(f"config.fast_scales must be positive; got {tuple(config.fast_scales)}")
    if any(not 0 < r < 1 for r in config.corruption_rates):
        raise ValueError(f"config.corruption_rates must lie in (0, 1); got {tuple(config.corruption_rates)}")


def read_series(source, length: int, limit: int | None = None) -> dict:
    """Every non-overlapping ``length``-sample window of each series of ``source`` (a series of ``length``
    samples is one window; the remainder of a longer one is left out), up to ``limit`` windows: ``signal [N,
    length, C]``, ``label [N]`` (each window its series' label) and the ``sample_rate`` (None when the data does
    not state one). Raises ``ValueError`` for a series shorter than ``length``."""
    signals, labels, rate = [], [], 0.0
    for i in range(len(source)):
        if limit is not None and len(signals) >= limit:
            break
        example = source[i]
        x = np.asarray(example["signal"], np.float32)
        if x.shape[0] < length:
            raise ValueError(f"config.length ({length}) is longer than series {i} of the split ({x.shape[0]} "
                             f"samples)")
        for start in range(0, x.shape[0] - length + 1, length):
            signals.append(x[start:start + length])
            labels.append(int(example["label"]))
        rate = float(example["sample_rate"])
    if limit is not None:
        signals, labels = signals[:limit], labels[:limit]
    return {"signal": np.stack(signals), "label": np.array(labels, np.int64), "sample_rate": rate or None}


def channel_stats(source) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every sample of every series (1 for a constant channel)."""
    total = sq = None
    count = 0
    for i in range(len(source)):
        x = np.asarray(source[i]["signal"], np.float64)
        if sq is None:
            total, sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        total += x.sum(axis=0)
        sq += (x * x).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)


@dataclasses.dataclass(frozen=True)
class StepParts:
    model: Any
    tx: optax.GradientTransformation
    time_weight: float
    spectral_weight: float
    spectral_patch: int
    accum_steps: int = 1


def train_step(parts: StepParts, state: scaffold.TokenizerState, signals):
    """One step on normalised signals: time-domain MSE [+ spectral loss] + quantizer loss, through
    :func:`vqjax.train.scaffold.tokenizer_step`."""
    def loss_fn(params, vq_stats, batch, rng, apply_update):
        xn = parts.model.apply({"params": params}, batch, method=parts.model.normalize)
        (recon, q), upd = parts.model.apply({"params": params, "vq_stats": vq_stats}, xn, train=True,
                                            apply_update=apply_update, mutable=["vq_stats"], rngs={"vq": rng})
        aux = {"time_loss": jnp.mean((recon - xn) ** 2), "quantizer_loss": q.loss}
        loss = parts.time_weight * aux["time_loss"] + q.loss
        if parts.spectral_weight > 0:
            aux["spectral_loss"] = spectral_loss(recon, xn, parts.spectral_patch)
            loss = loss + parts.spectral_weight * aux["spectral_loss"]
        return loss, (upd.get("vq_stats", {}), recon, q, aux)

    return scaffold.tokenizer_step(parts.tx, state, loss_fn, signals, accum_steps=parts.accum_steps)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _reconstruct(model, variables, signals, levels):
    """Raw reconstruction of raw ``signals`` from the first ``levels`` residual levels (None: all), and the codes."""
    xn = model.apply(variables, signals, method=model.normalize)
    recon, codes = model.apply(variables, xn, levels, method=model.reconstruct)
    return model.apply(variables, recon, method=model.denormalize), codes


def _random_crop(length: int):
    def crop(example, rng):
        x = np.asarray(example["signal"], np.float32)
        if x.shape[0] < length:
            raise ValueError(f"config.length ({length}) is longer than a training series ({x.shape[0]} samples)")
        start = int(rng.integers(0, x.shape[0] - length + 1))
        return {"signal": x[start:start + length]}
    return crop


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the data and its channel statistics, builds the tokenizer and the steps; refuses series shorter
    than ``config.length`` first."""
    train_source, eval_source = read_example_splits(config)
    length = int(config.length)
    evaluation = read_series(eval_source, length, config.max_eval_examples)
    train_windows = read_series(train_source, length)       # refuses short series before training; FAST fits on it
    mean, scale = channel_stats(train_source)
    spec_model = model_spec(config, mean, scale)
    model = model_from_spec(spec_model)
    channels = len(mean)
    rate = evaluation["sample_rate"]
    sample = jnp.zeros((config.batch_size, length, channels), jnp.float32)
    sc = scaffold.build(config, model=model, sample=sample, devices=devices, batch_sizes=("batch_size",))
    codes_shape, vocab = list(sc.codes_shape), sc.vocab_size
    tokens = int(np.prod(codes_shape))
    levels = model.num_levels
    train = sc.jit_train(functools.partial(train_step, StepParts(scaffold.training_model(spec_model, config), sc.tx,
                                                                 float(config.losses.time),
                                                                 float(config.losses.spectral),
                                                                 int(config.spectral_patch),
                                                                 int(config.grad_accum_steps))))
    bands = timeseries_eval.EEG_BANDS if config.band_power else None

    per_level = tokens // levels if levels else tokens

    def learned(variables, used, counter=None):
        def codec(chunks):
            recon, codes = _reconstruct(model, variables, jnp.asarray(chunks), used)
            if counter is not None:
                counter.update(np.asarray(codes).reshape(-1, levels or 1))
            return np.asarray(recon), per_level * (used or levels or 1)
        return codec

    def run_eval(state, step):
        counter = CodeCounter(vocab, levels or 1)
        result = timeseries_eval.evaluate_codec(
            "vqjax", learned(sc.variables(state), None, counter),
            evaluation["signal"], sample_rate=rate, bands=bands, batch_size=config.eval_batch_size)
        return {**result.mean, **counter.result()}

    def run_test(state, step):
        variables = sc.variables(state)
        out = _test(config, train_windows, evaluation, workdir, learned=lambda n: learned(variables, n),
                    bands=bands)
        if config.downstream_steps:
            out.update(_downstream(config, model, variables, train_windows, evaluation, vocab=vocab))
        return out

    seconds = length / rate if rate else None
    spec = sc.spec("timeseries", spec_model, {"shape": [length, channels], "dtype": "float32", "range": None},
                   config, sample_rate=rate, tokens_per_second=tokens / seconds if seconds else None,
                   frame_rate=rate / model.hop_length if rate else None,
                   channels=list(map(str, _channel_names(config, channels))),
                   normalization={"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]})
    info = {"length": length, "channels": channels, "sample_rate": rate, "tokens_per_chunk": tokens,
            "vocab_size": int(vocab), "dataset": config.dataset, "quantizer": config.quantizer,
            "train_examples": len(train_source), "eval_examples": len(evaluation["signal"])}
    make_step = sc.make_step(config, train_source, train, "signal", random_transform=_random_crop(length))
    return Run(init_state=sc.init_state, make_step=make_step, evaluate=run_eval, replicated=sc.replicated, info=info,
               test=run_test, spec=spec, abstract=sc.abstract,
               state_sharding=sc.state_sharding)


def _channel_names(config, channels: int) -> list[str]:
    """The channels' names for a ``vqjax_timeseries/<set>`` dataset, else ``ch i``."""
    known = CHANNELS.get(config.dataset.partition("/")[2]) if config.dataset.startswith("vqjax_timeseries/") else None
    return list(known) if known and len(known) == channels else [f"ch {i}" for i in range(channels)]


def _test(config, train_windows, evaluation, workdir, *, learned, bands) -> dict:
    """The tokenizer at each of ``config.eval_levels`` and FAST at each of ``config.fast_scales``, by one harness
    on the same chunks; FAST's decodability under token corruption; the figures and ``rate_distortion.json``."""
    chunks, rate = evaluation["signal"], evaluation["sample_rate"]
    results = [timeseries_eval.evaluate_codec(f"vqjax {n}q" if n else "vqjax", learned(n), chunks,
                                              sample_rate=rate, bands=bands, batch_size=config.eval_batch_size)
               for n in (tuple(config.eval_levels) or (None,))]
    fitting = train_windows["signal"]
    robustness = {}
    for scale in config.fast_scales:
        fast = FAST.fit(fitting, scale=float(scale), vocab_size=int(config.fast_vocab_size))

        def codec(batch, fast=fast):
            toks = fast.encode(batch)
            decoded, _ = fast.decode(toks)                  # FAST's own sequences always decode
            return decoded, np.array([len(t) for t in toks])

        name = f"FAST {scale:g}"
        results.append(timeseries_eval.evaluate_codec(name, codec, chunks, sample_rate=rate, bands=bands))
        toks = fast.encode(chunks)
        for r in config.corruption_rates:
            robustness[f"{name}/decodable@{r:g}"] = timeseries_eval.corrupted_decodable(
                lambda seqs, fast=fast: fast.decode(seqs)[1], toks, fast.vocab_size, float(r), seed=config.seed)
    out = {"test_chunks": len(chunks), **robustness}
    for r in results:
        for k, v in r.mean.items():
            out[f"{r.name}/{k}"] = v
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "rate_distortion.json"), "w") as fh:
            json.dump({"rows": timeseries_eval.summary_rows(results), "robustness": robustness,
                       "per_chunk": {r.name: r.per_chunk for r in results}}, fh, indent=1)
        title = f"{len(chunks)} held-out chunks of {config.dataset}"
        timeseries_eval.plot_rate_distortion(os.path.join(workdir, "rate_distortion.png"), results, title)
        count = len(tuple(config.eval_levels) or (None,))              # the learned rows come first
        best = results[count - 1]
        shown = [best] + ([min(results[count:], key=lambda r: abs(r.mean["tokens_per_chunk"] -
                                                                   best.mean["tokens_per_chunk"]))]
                          if len(results) > count else [])
        timeseries_eval.plot_reconstructions(
            os.path.join(workdir, "reconstructions.png"), chunks[0], [r.example for r in shown],
            [f"{r.name} ({r.per_chunk['tokens_per_chunk'][0]:.0f} tokens)" for r in shown],
            _channel_names(config, chunks.shape[2]), title=f"a held-out chunk of {config.dataset}")
    return out


def _downstream(config, model, variables, train, evaluation, *, vocab) -> dict:
    """Classification accuracy from the tokens at each eval level and from the raw (normalised) series, by the
    same classifier, averaged over ``config.downstream_seeds``; nothing for a set with one class. The tokens are
    embedded two ways: by the tokenizer's own codebook (each position's decoded latent, ``<name>/accuracy``) and by
    embeddings learned from scratch (``<name>/accuracy_learned_embedding``)."""
    classes = int(max(train["label"].max(), evaluation["label"].max())) + 1
    if classes < 2:
        return {}

    def codes_of(signals):
        return np.concatenate([np.asarray(_reconstruct(model, variables, jnp.asarray(signals[i:i + 256]), None)[1])
                               for i in range(0, len(signals), 256)])

    def normalised(signals):
        return np.asarray(model.apply(variables, jnp.asarray(signals), method=model.normalize))

    def latents(codes):
        return np.asarray(model.apply(variables, jnp.asarray(codes), method=lambda m, c: m.quantizer.decode(c)))

    def accuracy(train_x, test_x, **kw):
        return float(np.mean([timeseries_eval.classification_accuracy(
            train_x, train["label"], test_x, evaluation["label"], num_classes=classes,
            steps=int(config.downstream_steps), seed=config.seed + s, **kw)
            for s in range(int(config.downstream_seeds))]))

    values = int(np.prod(evaluation["signal"].shape[1:]))
    out = {"raw/accuracy": accuracy(normalised(train["signal"]), normalised(evaluation["signal"]),
                                    patch=model.hop_length)}
    train_codes, test_codes = codes_of(train["signal"]), codes_of(evaluation["signal"])
    for n in (tuple(config.eval_levels) or (None,)):
        name = f"vqjax {n}q" if n else "vqjax"
        # fewer levels: the later ones marked absent (-1) for the codebook lookup, left out for the embeddings
        absent = (lambda c: np.where(np.arange(c.shape[-1]) < n, c, -1)) if n else (lambda c: c)
        keep = (lambda c: c[..., :n]) if n else (lambda c: c)
        out[f"{name}/accuracy"] = accuracy(latents(absent(train_codes)), latents(absent(test_codes)), patch=1)
        out[f"{name}/accuracy_learned_embedding"] = accuracy(keep(train_codes), keep(test_codes), vocab_size=vocab)
        out[f"{name}/compression"] = values / float(np.prod(keep(test_codes).shape[1:]))
    return out


def report(result: dict, workdir: str) -> str:
    """The final test as a table (every codec by tokens per chunk), and where the figures and tokenizer are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}")]
    names = sorted({k.rsplit("/", 1)[0] for k in result if k.endswith("/nmse")},
                   key=lambda n: result[f"{n}/tokens_per_chunk"])
    for name in names:
        text = "{:6.1f} tokens  NMSE {:.4f}  corr {:.3f}".format(
            *(result.get(f"{name}/{k}", math.nan) for k in ("tokens_per_chunk", "nmse", "correlation")))
        if f"{name}/band_power_db" in result:
            text += f"  band power {result[f'{name}/band_power_db']:.2f} dB"
        rows.append((name, text))
    for k in sorted(k for k in result if "/decodable@" in k):
        rows.append((k, f"{result[k]:.3f}"))
    for k in sorted(k for k in result if k.endswith("/accuracy")):
        ratio = result.get(k.replace("/accuracy", "/compression"))
        learned = result.get(f"{k}_learned_embedding")
        rows.append((f"downstream {k}", f"{result[k]:.3f}" + (f" ({ratio:.0f}x fewer values)" if ratio else "")
                     + (f"; {learned:.3f} with embeddings learned from scratch" if learned is not None else "")))
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"per chunk: {os.path.join(workdir, 'rate_distortion.json')}",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    return reports.result_table("codec", rows, ("rate_distortion.png", "reconstructions.png", "loss_curves.png"),
                                workdir, extra, result)


TASK = register_task(Task("sequence_tokenizer", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
