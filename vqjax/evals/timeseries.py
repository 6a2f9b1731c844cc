"""The time-series harness: one set of metrics for every sequence tokenizer on the same test chunks.

A codec here is ``chunks float32 [N, T, C] -> (decoded [N, T, C], tokens per chunk [N])``: a learned tokenizer
(fixed token count) or FAST at some scale (variable). :func:`evaluate_codec` scores the decoded chunks with
:func:`signal_metrics`:

* ``nmse``: the squared error over the variance, per channel (the channel's variance over the test chunks), averaged
  over channels: 1 is as bad as predicting each channel's mean;
* ``correlation``: Pearson's correlation of each chunk's channel with its reconstruction, averaged (constant
  channels skipped);
* ``band_power_db`` (with a sample rate and bands, for EEG): the mean absolute error, in dB, of the power in each
  band (periodogram of each chunk and channel) -- delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz;
  powers get a floor of 1e-6 of the target's total, so a band empty in both counts as equal;
* ``tokens_per_chunk`` and ``tokens_per_second`` (with a sample rate).

:func:`corrupted_decodable` measures what users of FAST run into: the fraction of token sequences that still
decode to a chunk after each token is replaced by a random id with probability ``rate``.

:func:`classification_accuracy` is the downstream test: the same small Transformer
(:class:`vqjax.models.sequence.SequenceClassifier`) trained on a labelled set's tokens or on its raw series.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqjax.evals.figures import pyplot, save_figure
from vqjax.models.fast import FAST
from vqjax.models.sequence import SequenceClassifier

__all__ = ["EEG_BANDS", "signal_metrics", "band_powers", "CodecResult", "evaluate_codec", "corrupted_decodable",
           "classification_accuracy", "summary_rows", "plot_rate_distortion", "plot_reconstructions", "plot_runs",
           "evaluate"]

EEG_BANDS = (("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0),
             ("gamma", 30.0, 45.0))


def band_powers(x: np.ndarray, sample_rate: float, bands=EEG_BANDS) -> np.ndarray:
    """The periodogram power of ``x [N, T, C]`` summed in each band: ``[N, C, len(bands)]`` (a band above the
    Nyquist frequency or narrower than one bin sums no bin: 0)."""
    spec = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2 / x.shape[1]
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / sample_rate)
    out = np.zeros((x.shape[0], x.shape[2], len(bands)))
    for i, (_, lo, hi) in enumerate(bands):
        sel = (freqs >= lo) & (freqs < hi)
        out[..., i] = spec[:, sel].sum(axis=1)
    return out


def signal_metrics(target: np.ndarray, recon: np.ndarray, *, sample_rate: float | None = None,
                   bands=None) -> dict:
    """Per-chunk metrics of ``recon`` against ``target`` (both ``[N, T, C]``): ``nmse`` and ``correlation``
    ``[N]``, and ``band_power_db`` ``[N]`` when ``sample_rate`` and ``bands`` (e.g. :data:`EEG_BANDS`) are given. The NMSE's variance is
    each channel's over all of ``target``."""
    target = np.asarray(target, np.float64)
    recon = np.asarray(recon, np.float64)
    if target.shape != recon.shape or target.ndim != 3:
        raise ValueError(f"signal_metrics: target and recon must be [N, T, C] of one shape; got {target.shape} and "
                         f"{recon.shape}")
    var = target.var(axis=(0, 1))
    var = np.where(var > 1e-12, var, 1.0)
    out = {"nmse": np.mean(np.mean((recon - target) ** 2, axis=1) / var, axis=1)}
    tc = target - target.mean(axis=1, keepdims=True)
    rc = recon - recon.mean(axis=1, keepdims=True)
    denom = np.sqrt((tc ** 2).sum(axis=1) * (rc ** 2).sum(axis=1))
    corr = np.where(denom > 1e-12, (tc * rc).sum(axis=1) / np.where(denom > 1e-12, denom, 1.0), np.nan)
    with np.errstate(invalid="ignore"):
        out["correlation"] = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in corr])
    if sample_rate and bands:
        p_t = band_powers(target, sample_rate, bands)
        p_r = band_powers(recon, sample_rate, bands)
        floor = 1e-6 * p_t.sum(axis=-1, keepdims=True) + 1e-20       # bands without power count as equal
        db = 10.0 * np.abs(np.log10(p_r + floor) - np.log10(p_t + floor))
        out["band_power_db"] = db.mean(axis=(1, 2))
    return out


@dataclasses.dataclass
class CodecResult:
    """One codec on the test chunks: ``per_chunk`` metric lists, their ``mean``, and one ``decoded`` example."""
    name: str
    per_chunk: dict
    mean: dict
    example: np.ndarray


def evaluate_codec(name: str, codec: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], chunks: np.ndarray, *,
                   sample_rate: float | None = None, bands=None, batch_size: int = 256) -> CodecResult:
    """Runs ``codec`` over ``chunks [N, T, C]`` in batches and scores it (see the module docstring)."""
    decoded, tokens = [], []
    for start in range(0, len(chunks), batch_size):
        out, count = codec(chunks[start:start + batch_size])
        decoded.append(np.asarray(out, np.float32))
        tokens.append(np.broadcast_to(np.asarray(count, np.float64), (len(out),)))
    decoded = np.concatenate(decoded)
    per = signal_metrics(chunks, decoded, sample_rate=sample_rate, bands=bands)
    per["tokens_per_chunk"] = np.concatenate(tokens)
    mean = {k: float(np.nanmean(v)) for k, v in per.items()}
    if sample_rate:
        mean["tokens_per_second"] = mean["tokens_per_chunk"] * sample_rate / chunks.shape[1]
    return CodecResult(name, {k: [float(v) for v in vals] for k, vals in per.items()}, mean, decoded[0])


def corrupted_decodable(decode_ok: Callable[[list], np.ndarray], tokens: Sequence[Sequence[int]], vocab_size: int,
                        rate: float, seed: int = 0) -> float:
    """The fraction of ``tokens`` (sequences) that ``decode_ok`` (sequences -> bool mask) still accepts after each
    token is replaced, with probability ``rate``, by a uniformly random id in ``[0, vocab_size)``."""
    rng = np.random.default_rng(seed)
    corrupted = []
    for seq in tokens:
        seq = np.asarray(seq, np.int64).copy()
        hit = rng.random(seq.size) < rate
        seq[hit] = rng.integers(0, vocab_size, int(hit.sum()))
        corrupted.append(seq.tolist())
    return float(np.mean(decode_ok(corrupted)))


def classification_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                            num_classes: int, vocab_size: int | None = None, patch: int | None = None,
                            steps: int = 300, batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 0,
                            width: int = 64, num_layers: int = 2) -> float:
    """Test accuracy of a :class:`~vqjax.models.sequence.SequenceClassifier` trained for ``steps`` AdamW steps
    (cross-entropy, minibatches of ``batch_size`` drawn from ``seed``) on ``train_x``: int codes ``[N, P(, L)]``
    with ``vocab_size``, or float series ``[N, T, C]`` (normalise them first) with ``patch``."""


    model = SequenceClassifier(int(num_classes), width, num_layers, vocab_size, patch)
    params = model.init(jax.random.key(seed), jnp.asarray(train_x[:1]))
    tx = optax.adamw(learning_rate, weight_decay=1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
        def loss_fn(p):
            logits = model.apply(p, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    rng = np.random.default_rng(seed)
    n = len(train_x)
    for _ in range(steps):
        idx = rng.choice(n, min(batch_size, n), replace=False)
        params, opt = step(params, opt, jnp.asarray(train_x[idx]), jnp.asarray(train_y[idx]))
    predict = jax.jit(lambda p, xb: jnp.argmax(model.apply(p, xb), axis=-1))
    hits = sum(int(np.sum(np.asarray(predict(params, jnp.asarray(test_x[i:i + 256]))) == test_y[i:i + 256]))
               for i in range(0, len(test_x), 256))
    return hits / len(test_x)


def summary_rows(results: Sequence[CodecResult]) -> list[dict]:
    """One row per codec: its name and mean metrics (JSON-able)."""
    return [{"codec": r.name, **r.mean} for r in results]


def plot_rate_distortion(path: str, results: Sequence[CodecResult], title: str = "") -> str:
    """NMSE (log) against tokens per chunk: one line per family (the names' first word), one point per codec."""
    plt = pyplot()

    metrics = ["nmse"] + (["band_power_db"] if all("band_power_db" in r.mean for r in results) else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    families: dict[str, list] = {}
    for r in results:
        families.setdefault(r.name.split(" ")[0], []).append(r)
    for ax, metric in zip(axes[0], metrics):
        for family, rs in families.items():
            rs = sorted(rs, key=lambda r: r.mean["tokens_per_chunk"])
            ax.plot([r.mean["tokens_per_chunk"] for r in rs], [r.mean[metric] for r in rs], "o-", label=family)
        ax.set_xlabel("tokens per chunk")
        ax.set_ylabel({"nmse": "normalised MSE", "band_power_db": "band-power error (dB)"}[metric])
        ax.set_xscale("log")
        if metric == "nmse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_title("rate-distortion (lower and further left is better)", fontsize=9)
    return save_figure(fig, path, title)


def plot_reconstructions(path: str, original: np.ndarray, decoded: Sequence[np.ndarray], labels: Sequence[str],
                         channels: Sequence[str], max_channels: int = 4, title: str = "") -> str:
    """One panel per channel (the first ``max_channels``): the original chunk ``[T, C]`` and each decoding."""
    plt = pyplot()

    n = min(max_channels, original.shape[1])
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.8 * n + 0.6), squeeze=False, sharex=True)
    for c in range(n):
        ax = axes[c][0]
        ax.plot(original[:, c], "k-", lw=1.6, label="original")
        for d, label in zip(decoded, labels):
            ax.plot(d[:, c], "-", lw=1.0, label=label)
        ax.set_ylabel(channels[c] if c < len(channels) else f"ch {c}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=len(labels) + 1)
    axes[-1][0].set_xlabel("sample")
    return save_figure(fig, path, title)


def plot_runs(path: str, workdirs: dict, title: str = "") -> str:
    """One rate-distortion panel (NMSE against tokens per chunk, one line per family) per finished
    ``sequence_tokenizer`` run: ``workdirs`` maps a panel's label to a workdir holding ``rate_distortion.json``."""

    plt = pyplot()

    fig, axes = plt.subplots(1, len(workdirs), figsize=(4.2 * len(workdirs), 3.6), squeeze=False)
    for ax, (label, workdir) in zip(axes[0], workdirs.items()):
        with open(os.path.join(workdir, "rate_distortion.json")) as fh:
            rows = json.load(fh)["rows"]
        families: dict[str, list] = {}
        for row in rows:
            families.setdefault(row["codec"].split(" ")[0], []).append(row)
        for family, rs in families.items():
            rs = sorted(rs, key=lambda r: r["tokens_per_chunk"])
            ax.plot([r["tokens_per_chunk"] for r in rs], [r["nmse"] for r in rs], "o-", label=family)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens per chunk")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("normalised MSE")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path, title)


def evaluate(tok, signals: np.ndarray, *, bands=None, fast_train: np.ndarray | None = None,
             fast_scales: Sequence[float] = (10.0,), fast_vocab_size: int = 1024, batch_size: int = 256
             ) -> list[dict]:
    """A time-series tokenizer artifact (:class:`vqjax.tokenizers.TimeSeriesTokenizer`) on held-out raw
    ``signals [N, T, C]``, beside FAST (:class:`vqjax.models.fast.FAST`, fitted on ``fast_train`` at each of
    ``fast_scales``) by one harness: NMSE, correlation, band power error with ``bands`` (at the tokenizer's sample
    rate) and tokens per chunk and per second (see :func:`signal_metrics`).

    Returns:
      One row per codec (:func:`summary_rows`).

    Raises:
      ValueError: a tokenizer of another modality, or signals the tokenizer refuses.
    """
    if tok.modality != "timeseries":
        raise ValueError(f"vqjax.evals.timeseries.evaluate: tok must be a time-series tokenizer; got modality "
                         f"{tok.modality!r}")
    signals = np.asarray(signals, np.float32)
    rate = tok.sample_rate

    def neural(batch):
        codes = tok.encode(batch)
        return np.asarray(tok.decode(codes)), np.full(len(batch), math.prod(codes.shape[1:]))

    results = [evaluate_codec("vqjax", neural, signals, sample_rate=rate, bands=bands, batch_size=batch_size)]
    for scale in fast_scales if fast_train is not None else ():
        fast = FAST.fit(np.asarray(fast_train, np.float32), scale=float(scale), vocab_size=int(fast_vocab_size))

        def codec(batch, fast=fast):
            toks = fast.encode(batch)
            return fast.decode(toks)[0], np.array([len(t) for t in toks])

        results.append(evaluate_codec(f"FAST {scale:g}", codec, signals, sample_rate=rate, bands=bands,
                                      batch_size=batch_size))
    return summary_rows(results)
