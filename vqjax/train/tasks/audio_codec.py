"""Task ``'audio_codec'``: a neural speech codec (an STFT or SEANet encoder/decoder around a quantizer, chosen by
``config.model.architecture``) on tfds + grain input.

One train step updates the codec on random crops (``config.crop_seconds``) with the weighted sum
(``config.losses``) of the multi-scale mel loss, the multi-resolution STFT loss, time-domain L1, optionally the
phase loss on the inverse-STFT decoder's predicted spectra and the pitch loss of the harmonic decoder
(``config.model.harmonic``) against the input's pitch track, and the quantizer's loss, plus, when
``config.gan.weight > 0`` and from ``config.gan.start_step``, the adversarial and feature-matching terms of the
multi-period and multi-resolution STFT discriminators (:mod:`vqjax.models.audio.discriminators`), which are updated in the
same step. Residual quantizers with ``quantizer_dropout`` learn to serve every number of levels, so one model has
several bitrates: ``kbps = frame_rate * levels * log2(codebook size) / 1000``.

Periodic evaluation reads the first ``config.eval_seconds`` of each clip of ``config.eval_split`` and reports, per
bitrate of ``config.eval_levels``, SI-SDR and the multi-scale mel distance. The final test
(:mod:`vqjax.evals.speech`) decodes every whole clip at every bitrate and scores it with PESQ, STOI, SI-SDR
and the mel distance next to the classical codecs of ``config.anchors`` on the same clips, writing
``rate_distortion.png``, ``rate_distortion.json`` (per clip) and ``audio_examples.png``. The artifact is a
:class:`vqjax.AudioTokenizer` (``modality='audio'``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax.data import audio as audio_data
from vqjax.data import pipeline
from vqjax.evals import figures
from vqjax.evals import speech as speech_eval
from vqjax.metrics import CodeCounter
from vqjax.models import model_from_spec
from vqjax.models.audio import align_output, frame_signal, hann_window
from vqjax.models.audio.discriminators import (
    AudioDiscriminators,
    discriminator_losses,
    feature_matching,
    generator_losses,
)
from vqjax.models.audio.losses import (
    l1_loss,
    multiresolution_stft_loss,
    multiscale_mel_loss,
    phase_loss,
    pitch_loss,
    pitch_track,
    si_sdr,
)
from vqjax.models.registry import check_audio_layout
from vqjax.models.vqgan import GAN_LOSSES
from vqjax.train import reports, scaffold
from vqjax.train.config import (
    add_example_data,
    add_step_options,
    check_example_data,
    check_positive,
    core_config,
    data_options,
    default_data_dir,
    plain,
    read_example_splits,
)
from vqjax.train.core import make_optimizer, to_host
from vqjax.train.sharding import compute_dtype
from vqjax.train.tasks import Run, Task, register_task

__all__ = ["TASK", "DiscState", "check", "default_config", "model_spec", "report", "runlocal", "setup"]


class DiscState(NamedTuple):
    """The waveform discriminators' parameters and optimizer state (the run state's ``gan``)."""

    params: Any
    opt_state: Any


def default_config() -> ml_collections.ConfigDict:
    """Every field of a speech-codec experiment. The defaults: 16 kHz, the causal STFT encoder and inverse-STFT
    decoder (``model.architecture='stft'``: STFT hop 160, window 640, then 2 frames per latent, so 50 frames per
    second; width ``channels`` 256, ``num_residual`` 2 ConvNeXt blocks at each rate); ``'seanet'`` reads
    ``channels`` as the base width, ``strides`` as the downsampling (e.g. (2, 4, 5, 8)) and ``num_residual`` as
    residual units per stride. ``model.harmonic`` adds a voiced part to the ``'stft'`` decoder (a pitch, a voicing
    and an envelope per frame shaping a harmonic excitation whose phase runs on from frame to frame);
    ``model.pitch_codes`` sends its pitch, tracked from the input, as the first code level;
    ``model.envelope_levels`` (> 0, ``'stft'`` only) sends the input's spectral envelope next, as that many
    residual levels (of the quantizer's codebook size) over the log powers in ``model.envelope_bands`` mel bands,
    on which the decoder builds its magnitudes (:class:`vqjax.models.audio.EnvelopeCoder`). A residual
    VQ of 12 levels of 1024 codes (0.5 kbps per level, so 6 kbps at 12) with quantizer dropout, trained on the
    bundled recorded speech. Losses compare the decoder's output with the input it reconstructs (shifted by the
    model's ``delay``); ``losses.phase`` (APNet's phase losses on the decoder's predicted spectra) and
    ``losses.pitch`` (the harmonic decoder's pitch and voicing against the input's pitch track) are off (0) by
    default, as are ``speed`` (the training crops' speed perturbation range, :func:`vqjax.data.audio.perturbed_rate`)
    and ``equalize_db`` (a random smooth equaliser on the training crops, :func:`vqjax.data.audio.random_equalize`).
    Every example, training, evaluation and test alike, is high-passed at ``highpass_hz`` (60 Hz;
    :func:`vqjax.data.audio.highpass`) before its loudness is normalised: some bundled recordings carry a DC
    offset of up to 70% of their RMS and others mains hum, which skewed their loudness and taught the codec to
    spend bits on them (the codecs are judged against the same high-passed clips)."""
    c = add_step_options(add_example_data(core_config("audio_codec"), "vqjax_speech", batch_size=16,
                                          eval_batch_size=8))
    c.sample_rate = 16000
    c.crop_seconds = 1.0
    c.eval_seconds = 4.0
    c.loudness_db = -23.0
    c.speed = (1.0, 1.0)                       # training crops' random speed factor range (1, 1: none)
    c.highpass_hz = ml_collections.FieldReference(60.0, field_type=float)    # DC and hum removed (None: kept)
    c.equalize_db = 0.0                        # training crops' random equaliser, dB (0: none)

    c.model = ml_collections.ConfigDict(dict(architecture="stft", channels=256, strides=(160, 2), latent_dim=64,
                                             num_residual=2, causal=True, harmonic=False, pitch_codes=False,
                                             envelope_levels=0, envelope_bands=20, envelope_per_frame=1))
    c.quantizer = "rvq"
    c.quantizer_kwargs = ml_collections.ConfigDict(dict(num_levels=12, codebook_size=1024, quantizer_dropout=0.5,
                                                        codebook_learning="ema", codebook_init="kmeans",
                                                        dead_code_threshold=1.0))
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.8
    c.optimizer.b2 = 0.99
    c.losses = ml_collections.ConfigDict(dict(mel=1.0, stft=1.0, l1=0.1, phase=0.0, pitch=0.0))
    c.gan = ml_collections.ConfigDict(dict(weight=0.0, loss="hinge", start_step=0, feature_weight=3.0,
                                           periods=(2, 3, 5, 7, 11), fft_sizes=(512, 1024, 2048), channels=16))
    c.eval_levels = (3, 6, 12)
    c.anchors = ("codec2:1200", "codec2:2400", "codec2:3200", "opus:6", "opus:12")
    c.test_max_clips = ml_collections.FieldReference(None, field_type=int)
    c.ood_splits = ("test_music",)
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny codec, 10 steps of 0.4 s crops, 4 eval clips of 1 s, no anchors."""
    c.model.channels = 4 if c.model.architecture == "seanet" else 16
    c.model.latent_dim = 8
    c.model.strides = (4, 5, 8) if c.model.architecture == "seanet" else (80, 2)          # 160 samples a frame
    c.model.num_residual = 1
    if "codebook_size" in c.quantizer_kwargs:
        c.quantizer_kwargs.codebook_size = 32
    if "num_levels" in c.quantizer_kwargs:
        c.quantizer_kwargs.num_levels = 2
    c.eval_levels = ()
    c.crop_seconds = 0.4
    c.eval_seconds = 1.0
    c.batch_size = 4
    c.eval_batch_size = 4
    c.max_eval_examples = 4
    c.test_max_clips = 2
    c.anchors = ()
    c.ood_splits = ()
    c.gan.channels = 4
    c.gan.periods = (2, 3)
    c.gan.fft_sizes = (256,)
    c.num_train_steps = 10
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 5
    c.optimizer.warmup_steps = 2
    return c


def model_spec(config: ml_collections.ConfigDict) -> dict:
    """The codec's explicit constructor arguments (:func:`vqjax.models.audio_codec`)."""
    m = config.model
    return {"name": "audio_codec",
            "kwargs": {"channels": int(m.channels), "strides": [int(s) for s in m.strides],
                       "latent_dim": int(m.latent_dim), "num_residual": int(m.num_residual),
                       "causal": bool(m.causal), "audio_channels": 1, "architecture": str(m.architecture),
                       **({"harmonic": True} if m.harmonic else {}),
                       **({"pitch_codes": True} if m.pitch_codes else {}),
                       **({"envelope_levels": int(m.envelope_levels), "envelope_bands": int(m.envelope_bands),
                           "envelope_per_frame": int(m.envelope_per_frame), "sample_rate": int(config.sample_rate)}
                          if m.envelope_levels else {}),
                       "quantizer": config.quantizer,
                       "quantizer_kwargs": plain(config.quantizer_kwargs.to_dict())}}


def _hop(config) -> int:
    return int(np.prod(config.model.strides))


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses a bad codec config with a message naming the field, before any data is read."""
    check_example_data(config)
    check_positive(config, "sample_rate", "model.channels", "model.latent_dim", "model.num_residual",
                   "gan.channels")
    if config.test_max_clips is not None:
        check_positive(config, "test_max_clips")
    speed = tuple(config.speed)
    if len(speed) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in speed) or \
            not 0.0 < speed[0] <= speed[1]:
        raise ValueError(f"config.speed must be (low, high) speed factors with 0 < low <= high (1, 1: no speed "
                         f"perturbation); got {config.speed!r}")
    if not config.equalize_db >= 0:
        raise ValueError(f"config.equalize_db must be >= 0 dB (0: no random equaliser); got {config.equalize_db!r}")
    if config.highpass_hz is not None and not 0.0 < config.highpass_hz < config.sample_rate / 2:
        raise ValueError(f"config.highpass_hz must lie in (0, sample_rate / 2 = {config.sample_rate / 2:g}) Hz, "
                         f"or be None (no high-pass); got {config.highpass_hz!r}")
    if any(not isinstance(split, str) or not split for split in config.ood_splits):
        raise ValueError(f"config.ood_splits must hold split names (e.g. 'test_music'); got {config.ood_splits!r}")
    m = config.model
    check_audio_layout(architecture=m.architecture, strides=tuple(m.strides), harmonic=m.harmonic,
                       pitch_codes=m.pitch_codes, envelope_levels=m.envelope_levels,
                       field=lambda name: f"config.model.{name}", flag=lambda name: f"config.model.{name}", where="")
    hop = _hop(config)
    for field in ("crop_seconds", "eval_seconds"):
        samples = config[field] * config.sample_rate
        if not samples >= hop or abs(samples - round(samples)) > 1e-6:
            raise ValueError(f"config.{field} ({config[field]}) must be a whole number of samples at "
                             f"config.sample_rate ({config.sample_rate}) and at least one frame ({hop} samples, the "
                             f"product of config.model.strides)")
    model = model_from_spec(model_spec(config))       # refuses an unknown quantizer or quantizer field
    levels = model.num_levels
    for n in config.eval_levels:
        if levels is None:
            raise ValueError(f"config.eval_levels applies to a residual quantizer; quantizer {config.quantizer!r} "
                             f"has one bitrate: set config.eval_levels = ()")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= levels:
            raise ValueError(f"config.eval_levels must hold ints in [1, {levels}] (the quantizer's levels); got "
                             f"{tuple(config.eval_levels)}")
    for name, weight in config.losses.items():
        if weight < 0:
            raise ValueError(f"config.losses.{name} must be >= 0; got {weight}")
    if config.losses.get("phase", 0.0) > 0 and m.architecture != "stft":
        raise ValueError(f"config.losses.phase compares the phase the inverse-STFT decoder predicts, so it needs "
                         f"config.model.architecture='stft'; got {m.architecture!r} (set config.losses.phase = 0)")
    if config.losses.get("pitch", 0.0) > 0 and (not m.harmonic or m.pitch_codes):
        raise ValueError(f"config.losses.pitch trains the pitch the harmonic decoder predicts and needs "
                         f"config.model.harmonic=True with config.model.pitch_codes=False; got {m.harmonic}, "
                         f"{m.pitch_codes} (set config.losses.pitch = 0)")
    if not any(w > 0 for w in config.losses.values()):
        raise ValueError(f"config.losses needs a positive weight; got {config.losses.to_dict()}")
    g = config.gan
    if g.weight < 0 or g.feature_weight < 0 or g.start_step < 0:
        raise ValueError(f"config.gan: weight, feature_weight and start_step must be >= 0; got {g.weight}, "
                         f"{g.feature_weight}, {g.start_step}")
    if g.loss not in GAN_LOSSES:
        raise ValueError(f"config.gan.loss must be one of {GAN_LOSSES}; got {g.loss!r}")
    if g.weight > 0 and not (len(g.periods) or len(g.fft_sizes)):
        raise ValueError("config.gan: periods and fft_sizes are both empty; the adversarial term needs a "
                         "discriminator (or set config.gan.weight = 0)")
    speech_eval.anchor_codecs(tuple(config.anchors))          # refuses a malformed anchor name


def _bitrate(frame_rate: float, levels: int, vocab: int) -> float:
    return frame_rate * levels * math.log2(vocab) / 1000.0


@dataclasses.dataclass(frozen=True)
class StepParts:
    """The static pieces of a train step."""

    model: Any
    tx: optax.GradientTransformation
    sample_rate: int
    losses: tuple[tuple[str, float], ...]
    disc: Any = None
    gan_half: scaffold.GANHalf | None = None
    gan_weight: float = 0.0
    feature_weight: float = 0.0
    gan_loss: str = "hinge"
    gan_start: int = 0
    accum_steps: int = 1


DECODER_LOSSES = ("phase", "pitch")        # losses on what the inverse-STFT decoder predicts, not on its output


def _wants_intermediates(parts: StepParts) -> bool:
    return any(weight > 0 for name, weight in parts.losses if name in DECODER_LOSSES)


def _recon_terms(parts: StepParts, recon, target, wave, updates) -> dict:
    """The weighted reconstruction losses: ``recon`` against ``target`` (the input delayed as the output is);
    ``phase`` compares the decoder's predicted spectra with the input's own (``wave``) on the decoder's frames,
    ``pitch`` the harmonic decoder's pitch and voicing with the input's pitch track on those frames."""
    decoder = parts.model.decoder
    sown = updates.get("intermediates", {}).get("decoder", {})

    def frames():
        return frame_signal(wave[..., 0], decoder.n_fft, int(decoder.strides[0]), decoder.causal)[0]

    def pitch():
        target, voiced = pitch_track(frames(), decoder.min_pitch, decoder.max_pitch)
        return pitch_loss(sown["pitch"][0], sown["voicing_logit"][0], target, voiced)

    fns = {"mel": lambda: multiscale_mel_loss(recon, target, parts.sample_rate),
           "stft": lambda: multiresolution_stft_loss(recon, target), "l1": lambda: l1_loss(recon, target),
           "phase": lambda: phase_loss(sown["spectrum"][0], jnp.fft.rfft(frames() * hann_window(decoder.n_fft))),
           "pitch": pitch}
    return {name: fns[name]() for name, weight in parts.losses if weight > 0}


def train_step(parts: StepParts, state: scaffold.TokenizerState, wave):
    """Reconstruction + quantizer [+ adversarial + feature matching] loss through
    :func:`vqjax.train.scaffold.tokenizer_step`, the discriminators updating on the (delayed) input crops and
    their reconstructions."""
    weights = dict(parts.losses)
    on = (state.step >= parts.gan_start).astype(jnp.float32)
    delay = parts.model.delay

    def target_of(w):
        return align_output(w, w, delay)[1]             # the input samples the (delayed) output reconstructs

    def loss_fn(params, vq_stats, wave, rng, apply_update):
        target = target_of(wave)
        # The discriminators' view of the real crops does not depend on the codec: no gradient flows through it.
        real = jax.lax.stop_gradient(parts.disc.apply(state.gan.params, target)) if parts.disc is not None else None
        mutable = ["vq_stats", "intermediates"] if _wants_intermediates(parts) else ["vq_stats"]
        (recon, q), upd = parts.model.apply({"params": params, "vq_stats": vq_stats}, wave, train=True,
                                            apply_update=apply_update, mutable=mutable, rngs={"vq": rng})
        recon, _ = align_output(recon, wave, delay)
        terms = _recon_terms(parts, recon, target, wave, upd)
        loss = sum(weights[k] * v for k, v in terms.items()) + q.loss
        aux = {f"{k}_loss": v for k, v in terms.items()}
        aux["quantizer_loss"] = q.loss
        if parts.disc is not None:
            fake = parts.disc.apply(state.gan.params, recon)
            adv, fm = generator_losses(fake, parts.gan_loss), feature_matching(real, fake)
            loss = loss + on * (parts.gan_weight * adv + parts.feature_weight * fm)
            aux.update(gen_loss=adv, feature_matching=fm)
        return loss, (upd.get("vq_stats", {}), recon, q, aux)

    return scaffold.tokenizer_step(parts.tx, state, loss_fn, wave, target_of=target_of, gan=parts.gan_half,
                                   accum_steps=parts.accum_steps)


def discriminators_half(disc: AudioDiscriminators, tx: optax.GradientTransformation, loss: str, start_step: int
                        ) -> scaffold.GANHalf:
    """The codec's GAN half: :class:`DiscState` of ``disc``, updated on the real and decoded crops with the
    discriminators' ``loss`` from ``start_step`` on (zero before: the parameters stay, the optimizer's count moves)."""
    def init(key, sample):
        params = disc.init(key, sample)
        return DiscState(params, tx.init(params))

    def step(state: DiscState, real, fake, train_step):
        on = (train_step >= start_step).astype(jnp.float32)
        d_loss, grads = jax.value_and_grad(
            lambda p: on * discriminator_losses(disc.apply(p, real), disc.apply(p, fake), loss))(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return DiscState(optax.apply_updates(state.params, updates), opt_state), {"disc_loss": d_loss}

    return scaffold.GANHalf(init, step)


def _levels_mask(codes: jax.Array, levels) -> jax.Array:
    """Codes with the levels from ``levels`` on marked absent (-1): a residual codec's lower bitrate."""
    if levels is None:
        return codes
    keep = jnp.arange(codes.shape[-1]) < levels
    return jnp.where(keep, codes, -1)


def reconstruct(model, variables, wave, levels=None):
    """The codec's reconstruction of ``wave [B, T, 1]`` from its first ``levels`` residual levels (None: all),
    and the codes."""
    codes = model.apply(variables, wave, method=model.encode)
    return model.apply(variables, _levels_mask(codes, levels), method=model.decode), codes


def eval_step(model, sample_rate, levels_list, variables, wave, length):
    """Per bitrate: masked sums over the batch of SI-SDR and the mel distance; and the codes (all levels)."""
    codes = model.apply(variables, wave, method=model.encode)
    mask = (jnp.arange(wave.shape[1])[None, :] < length[:, None]).astype(jnp.float32)
    valid = (length > 0).astype(jnp.float32)
    out = {}
    _, mask = align_output(mask, mask, model.delay)
    for levels in levels_list:
        recon = model.apply(variables, _levels_mask(codes, levels), method=model.decode)
        recon, target = align_output(recon, wave, model.delay)
        recon = recon * mask[..., None]
        tag = "all" if levels is None else str(levels)
        out[f"si_sdr@{tag}"] = jnp.sum(si_sdr(target, recon, mask) * valid)
        per = jax.vmap(lambda r, w: multiscale_mel_loss(r[None], w[None], sample_rate))(recon, target)
        out[f"mel_distance@{tag}"] = jnp.sum(per * valid)
    return out, codes


def setup(config: ml_collections.ConfigDict, workdir: str, *, devices=None, stop=None) -> Run:
    """Reads the data, builds the codec (and discriminators) and the steps; refuses an empty split first."""
    train_source, eval_source = read_example_splits(config)
    sr = int(config.sample_rate)
    spec_model = model_spec(config)
    model = model_from_spec(spec_model)
    hop = model.hop_length
    frame_rate = sr / hop
    crop = int(round(config.crop_seconds * sr))
    window = int(round(config.eval_seconds * sr))
    g = config.gan
    disc = AudioDiscriminators(tuple(int(p) for p in g.periods), tuple(int(n) for n in g.fft_sizes),
                               int(g.channels), dtype=compute_dtype(config.precision)) if g.weight > 0 else None
    half = discriminators_half(disc, make_optimizer(config.optimizer, config.num_train_steps), g.loss,
                               int(g.start_step)) if disc is not None else None
    sample = jnp.zeros((config.batch_size, crop, 1), jnp.float32)
    sc = scaffold.build(config, model=model, sample=sample, devices=devices, gan=half)
    levels = model.num_levels
    vocab = sc.vocab_size
    codes_tail = [levels] if levels is not None else list(sc.codes_shape[1:])
    per_frame = int(np.prod(codes_tail)) if codes_tail else 1
    parts = StepParts(model=scaffold.training_model(spec_model, config), tx=sc.tx, sample_rate=sr,
                      losses=tuple((k, float(v)) for k, v in sorted(config.losses.items())), disc=disc,
                      gan_half=half, gan_weight=float(g.weight), feature_weight=float(g.feature_weight),
                      gan_loss=g.loss, gan_start=int(g.start_step), accum_steps=int(config.grad_accum_steps))
    train = sc.jit_train(functools.partial(train_step, parts))
    eval_levels = tuple(int(n) for n in config.eval_levels) or (None,)
    jit_eval = jax.jit(functools.partial(eval_step, model, sr, eval_levels),
                       in_shardings=(sc.replicated, sc.batch_sharding, sc.batch_sharding),
                       out_shardings=(sc.replicated, sc.batch_sharding))

    def train_example(example, rng):
        return _prepare(config, example, crop_length=crop, rng=rng, speed=tuple(config.speed),
                        equalize_db=config.equalize_db)

    def eval_example(example):
        return _prepare(config, example, crop_length=window)

    def run_eval(state, step):
        counter = CodeCounter(vocab, per_frame)
        totals: dict[str, float] = {}
        count = 0.0
        for batch in sc.eval_batches(config, eval_source, eval_example):
            length = np.where(batch["mask"] > 0, batch["length"], 0).astype(np.int32)
            sums, codes = jit_eval(sc.variables(state), sc.global_batch(batch["audio"]), sc.global_batch(length))
            for k, v in sums.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            count += float(batch["mask"].sum())
            codes = to_host(codes)
            codes = codes.reshape(codes.shape[0], codes.shape[1], per_frame)
            frames = -(-to_host(sc.global_batch(length)) // hop)             # the frames that hold signal
            counter.update(codes, np.arange(codes.shape[1])[None, :] < frames[:, None])
        result = {k: v / count for k, v in totals.items()}
        result.update(counter.result())
        result["kbps"] = _bitrate(frame_rate, per_frame, vocab)
        return result

    def run_test(state, step):
        return _test(config, model, sc.variables(state), eval_source, workdir,
                     frame_rate=frame_rate, vocab=vocab, levels=levels, per_frame=per_frame)

    tokens_per_second = frame_rate * per_frame
    spec = sc.spec("audio", spec_model, {"shape": [None, 1], "dtype": "float32", "range": [-1.0, 1.0]}, config,
                   codes_shape=[None] + codes_tail, sample_rate=sr, frame_rate=frame_rate,
                   tokens_per_second=tokens_per_second, kbps=_bitrate(frame_rate, per_frame, vocab),
                   loudness_db=config.loudness_db, highpass_hz=config.highpass_hz)
    info = {"sample_rate": sr, "hop_length": hop, "frame_rate": frame_rate, "vocab_size": int(vocab),
            "codes_per_frame": per_frame, "kbps": spec["kbps"], "dataset": config.dataset,
            "quantizer": config.quantizer, "train_examples": len(train_source), "eval_examples": len(eval_source)}
    make_step = sc.make_step(config, train_source, train, "audio", random_transform=train_example)
    return Run(init_state=sc.init_state, make_step=make_step, evaluate=run_eval, replicated=sc.replicated, info=info,
               test=run_test, spec=spec, abstract=sc.abstract,
               state_sharding=sc.state_sharding)


def _bucket(length: int, multiple: int) -> int:
    return max(multiple, -(-length // multiple) * multiple)


def _prepare(config, example, **extra) -> dict:
    """One example as every split reads it (:func:`vqjax.data.audio.prepare_example`): at the model's rate,
    high-passed at ``config.highpass_hz``, normalised to ``config.loudness_db``; ``extra``: a crop, and the
    training crops' augmentations."""
    return audio_data.prepare_example(example, sample_rate=int(config.sample_rate), target_db=config.loudness_db,
                                      highpass_hz=config.highpass_hz, **extra)


def _clips(config, source, limit=None) -> tuple[list[np.ndarray], list[str]]:
    """The prepared test clips and each one's language ('' where the split has none)."""
    total = len(source) if limit is None else min(len(source), limit)
    examples = [source[i] for i in range(total)]
    languages = [e["language"].decode() if isinstance(e.get("language"), bytes) else str(e.get("language", ""))
                 for e in examples]
    return [_prepare(config, e)["audio"][:, 0] for e in examples], languages


def _test(config, model, variables, eval_source, workdir, *, frame_rate, vocab, levels, per_frame) -> dict:
    """Whole clips at every bitrate of ``config.eval_levels`` (or the one bitrate) and the anchors, through
    :func:`vqjax.evals.speech.evaluate_codec`, on ``config.eval_split`` and on each of ``config.ood_splits``
    (out of domain: keys and figures carry the split's name); writes the figures and ``rate_distortion.json``."""
    sr = int(config.sample_rate)
    bucket = model.hop_length * max(1, int(round(frame_rate)))        # pad clips to whole seconds: few shapes
    recon_fn = jax.jit(reconstruct, static_argnums=0)      # levels traced: one compilation per clip length
    used_levels = tuple(int(v) for v in config.eval_levels) or (None,)
    anchors, skipped = speech_eval.anchor_codecs(tuple(config.anchors))
    for name in skipped:
        logging.getLogger("vqjax.train").warning("anchor skipped: %s", name)

    def neural(levels_used):
        def codec(wave, rate):                 # zeros after the clip cover the decoder's delay
            padded = np.zeros((1, _bucket(wave.size + model.delay, bucket), 1), np.float32)
            padded[0, :wave.size, 0] = wave
            recon, _ = recon_fn(model, variables, jnp.asarray(padded),
                                None if levels_used is None else jnp.int32(levels_used))
            return np.asarray(recon)[0, model.delay:model.delay + wave.size, 0]
        return codec

    def score(clips):
        results = []
        for n in used_levels:
            used = per_frame if n is None else n
            results.append(speech_eval.evaluate_codec(f"vqjax {used}q", _bitrate(frame_rate, used, vocab),
                                                      neural(n), clips, sr))
        return results + [speech_eval.evaluate_codec(name, kbps, fn, clips, sr)
                          for name, (kbps, fn) in anchors.items()]

    clips, languages = _clips(config, eval_source, config.test_max_clips)
    sets = {config.eval_split: (clips, score(clips))}
    split_languages = {config.eval_split: languages}
    for split in config.ood_splits:
        source = pipeline.get_source(config.dataset, split, config.data_dir or default_data_dir(),
                                     **data_options(config))
        if not len(source):
            logging.getLogger("vqjax.train").warning("out-of-domain split %s is empty: not scored", split)
            continue
        ood, split_languages[split] = _clips(config, source, config.test_max_clips)
        sets[split] = (ood, score(ood))
    out = {"clips": len(clips), "anchors_skipped": len(skipped)}
    for split, (split_clips, results) in sets.items():
        prefix = "" if split == config.eval_split else f"{split}/"
        if prefix:
            out[f"{prefix}clips"] = len(split_clips)
        for r in results:
            for k, v in r.mean.items():
                out[f"{prefix}{r.name}/{k}"] = v
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "rate_distortion.json"), "w") as fh:
            json.dump({split: {"rows": speech_eval.summary_rows(results),
                               "by_language": speech_eval.group_rows(results, split_languages[split]),
                               "languages": split_languages[split],
                               "per_clip": {r.name: r.per_clip for r in results}}
                       for split, (_, results) in sets.items()} | {"skipped": skipped}, fh, indent=1)
        for split, (split_clips, results) in sets.items():
            tag = "" if split == config.eval_split else f"_{split}"
            what = "held-out clips" if not tag else "out-of-domain clips"
            speech_eval.plot_rate_distortion(os.path.join(workdir, f"rate_distortion{tag}.png"), results,
                                             f"{len(split_clips)} {what}, {config.dataset}:{split}")
            figures.save_waveforms(os.path.join(workdir, f"audio_examples{tag}.png"),
                                   [split_clips[0]] + [neural(n)(split_clips[0], sr) for n in used_levels],
                                   ["original"] + [r.name for r in results[:len(used_levels)]], sr)
    return out


def report(result: dict, workdir: str) -> str:
    """The final evaluation as a table (the test's codecs by bitrate), and where the figures and tokenizer are."""
    workdir = os.path.abspath(workdir)
    rows = [("step", f"{result['step']}")]
    names = sorted({k.rsplit("/", 1)[0] for k in result if k.endswith("/pesq_wb")})
    for name in names:
        rows.append((name, "PESQ-WB {:.2f}  PESQ-NB {:.2f}  STOI {:.3f}  SI-SDR {:.1f} dB  mel {:.3f}".format(
            *(result.get(f"{name}/{k}", math.nan) for k in ("pesq_wb", "pesq_nb", "stoi", "si_sdr",
                                                              "mel_distance")))))
    for k in sorted(result):
        if k.startswith("si_sdr@"):
            rows.append((f"eval {k}", f"{result[k]:.2f} dB"))
    extra = [f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: {os.path.join(workdir, 'tensorboard')})",
             f"per clip: {os.path.join(workdir, 'rate_distortion.json')}",
             f"tokenizer: vqjax.Tokenizer.load({workdir!r})"]
    if result.get("anchors_skipped"):
        with open(os.path.join(workdir, "rate_distortion.json")) as fh:
            extra.append(f"anchors skipped: {'; '.join(json.load(fh)['skipped'])}")
    return reports.result_table("codec", rows, ("rate_distortion.png", "audio_examples.png", "loss_curves.png"),
                                workdir, extra, result)


TASK = register_task(Task("audio_codec", default_config, check, runlocal, setup, report,
                          free_fields=("quantizer_kwargs",)))
