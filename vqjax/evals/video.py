"""The video harness: one set of metrics for every video codec on the same test clips, learned or classical.

A codec here is a function ``clip float32 [T, H, W, C] in [0, 1] -> (decoded float32 [T, H, W, C], bits)``, the
bits being what the clip costs to store or send (``tokens * log2(vocab)`` for a tokenizer, the compressed
packets' bytes for a classical codec). :func:`evaluate_codec` runs one over the clips and scores each decoded clip
with :func:`frame_metrics`:

* ``psnr`` and ``ssim``: per frame, averaged over frames and clips (and kept per frame index: ``psnr_per_frame``);
* ``flicker``: the mean squared error of consecutive-frame differences (temporal artefacts a per-frame score misses);
* ``bits_per_pixel`` (measured per clip, averaged) and ``tokens_per_second`` (tokenizers only).

The codecs compared with a video tokenizer on the same clips:

* :func:`frame_by_frame`: an image :class:`vqjax.Tokenizer` applied to each frame on its own;
* :func:`pyav_roundtrip`: MPEG-4 part 2 (``'mpeg4'``) or VP9 (``'vp9'``, libvpx) through PyAV, at the highest
  quality whose packets fit a bit budget (a search over the constant quantizer, or VP9's CRF), so that every anchor
  is measured at (or, where even its coarsest setting needs more, just above) the tokenizer's bits per clip.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.evals import image as image_eval
from vqjax.evals.figures import pyplot, save_figure

__all__ = ["frame_metrics", "CodecResult", "evaluate_codec", "frame_by_frame", "pyav_roundtrip", "anchor_codecs",
           "ANCHORS", "summary_rows", "plot_rate_distortion", "METRICS", "evaluate"]

METRICS = ("psnr", "ssim", "flicker", "bits_per_pixel", "tokens_per_second")
# name -> (PyAV encoder, the encoder option searched, its range from best to worst quality)
ANCHORS = {"mpeg4": ("mpeg4", "q", (2, 31)), "vp9": ("libvpx-vp9", "crf", (4, 63))}


def frame_metrics(clips: jax.Array, recon: jax.Array) -> dict:
    """Per clip and frame PSNR and SSIM ``[B, T]``, and per clip the flicker: the mean squared error of the
    consecutive-frame differences ``[B]`` (0 for one-frame clips)."""
    b, t = clips.shape[:2]
    flat = lambda v: v.reshape((b * t,) + v.shape[2:])
    psnr = image_eval.psnr(flat(clips), flat(recon)).reshape(b, t)
    ssim = image_eval.ssim(flat(clips), flat(recon)).reshape(b, t)
    if t > 1:
        diff = (recon[:, 1:] - recon[:, :-1]) - (clips[:, 1:] - clips[:, :-1])
        flicker = jnp.mean(diff * diff, axis=(1, 2, 3, 4))
    else:
        flicker = jnp.zeros((b,), jnp.float32)
    return {"psnr": psnr, "ssim": ssim, "flicker": flicker}


_frame_metrics_jit = jax.jit(frame_metrics)


@dataclasses.dataclass
class CodecResult:
    """One codec on a set of clips: per-clip ``psnr``, ``ssim``, ``flicker`` and ``bits_per_pixel``, the PSNR per
    frame index averaged over clips, the means (:data:`METRICS`; ``tokens_per_second`` for tokenizers only) and
    the first clip as decoded (for figures)."""

    name: str
    per_clip: dict[str, list[float]]
    psnr_per_frame: list[float]
    mean: dict[str, float]
    first_decoded: np.ndarray


def evaluate_codec(name: str, codec: Callable[[np.ndarray], tuple[np.ndarray, float]], clips: Sequence[np.ndarray],
                   *, frame_rate: float, tokens_per_clip: int | None = None) -> CodecResult:
    """Runs ``codec`` on every clip (float32 ``[T, H, W, C]`` in ``[0, 1]``) and scores it (the decoded clip is
    clipped to ``[0, 1]``): PSNR and SSIM averaged over frames, PSNR over the frames past the first (where a causal
    video tokenizer spends as many tokens a frame as its later rate; NaN for one-frame clips), flicker and bits per
    pixel, per clip and their means. ``tokens_per_clip`` (a tokenizer's) gives ``tokens_per_second`` at
    ``frame_rate``."""
    if not len(clips):
        raise ValueError(f"evaluate_codec({name!r}): no clips")
    per_clip: dict[str, list[float]] = {"psnr": [], "psnr_past_first": [], "ssim": [], "flicker": [],
                                        "bits_per_pixel": []}
    per_frame = np.zeros(np.asarray(clips[0]).shape[0])
    first = None
    for clip in clips:
        clip = np.asarray(clip, np.float32)
        decoded, bits = codec(clip)
        decoded = np.clip(np.asarray(decoded, np.float32), 0.0, 1.0)
        if decoded.shape != clip.shape:
            raise ValueError(f"codec {name!r} returned shape {decoded.shape} for a clip of shape {clip.shape}")
        first = decoded if first is None else first
        m = _frame_metrics_jit(jnp.asarray(clip[None]), jnp.asarray(decoded[None]))
        psnr = np.asarray(m["psnr"][0], np.float64)
        per_frame += psnr
        per_clip["psnr"].append(float(psnr.mean()))
        per_clip["psnr_past_first"].append(float(psnr[1:].mean()) if len(psnr) > 1 else math.nan)
        per_clip["ssim"].append(float(np.mean(m["ssim"][0])))
        per_clip["flicker"].append(float(m["flicker"][0]))
        per_clip["bits_per_pixel"].append(float(bits) / (clip.shape[0] * clip.shape[1] * clip.shape[2]))
    t = np.asarray(clips[0]).shape[0]
    mean = {k: float(np.mean(v)) for k, v in per_clip.items()}
    if tokens_per_clip:
        mean["tokens_per_second"] = tokens_per_clip * frame_rate / t
    return CodecResult(name=name, per_clip=per_clip, psnr_per_frame=(per_frame / len(clips)).tolist(), mean=mean,
                       first_decoded=first)


def frame_by_frame(tokenizer) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, float]], int]:
    """An image :class:`vqjax.Tokenizer` as a video codec: each frame encoded and decoded on its own. Returns the
    codec and its tokens per frame."""
    if tokenizer.modality != "image":
        raise ValueError(f"frame_by_frame: needs an image tokenizer; got modality {tokenizer.modality!r}")
    tokens = math.prod(tokenizer.codes_shape)
    bits = tokens * math.log2(tokenizer.vocab_size)

    def codec(clip: np.ndarray) -> tuple[np.ndarray, float]:
        codes = tokenizer.encode(clip)
        return np.asarray(tokenizer.decode(codes)).reshape(clip.shape), bits * clip.shape[0]

    return codec, tokens


def _to_uint8(clip: np.ndarray) -> np.ndarray:
    return np.round(np.clip(clip, 0.0, 1.0) * 255.0).astype(np.uint8)


def _encode_decode(frames: np.ndarray, encoder: str, option: str, value: int, frame_rate: float
                   ) -> tuple[np.ndarray, int]:
    """One clip (uint8 ``[T, H, W, 3]``) through ``encoder`` at one quality setting: the decoded frames and the
    bytes of the compressed packets (container overhead not counted)."""
    import av  # optional dependency

    t, h, w, _ = frames.shape
    buf = io.BytesIO()
    rate = max(1, int(round(frame_rate)))
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if option == "q":          # MPEG-4 part 2: one constant quantizer, one keyframe
            stream.options = {"qmin": str(value), "qmax": str(value), "g": str(t + 1), "bf": "0"}
        else:                      # VP9: constant quality, one keyframe, best effort
            stream.options = {"crf": str(value), "b": "0", "g": str(t + 1), "deadline": "good", "cpu-used": "1",
                              "lag-in-frames": "0"}
        size = 0
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                size += packet.size
                out.mux(packet)
        for packet in stream.encode(None):
            size += packet.size
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    if len(decoded) != t:
        raise RuntimeError(f"{encoder}: decoded {len(decoded)} frames of {t}")
    return np.stack(decoded), size


def pyav_roundtrip(clip: np.ndarray, anchor: str, max_bits: float, frame_rate: float) -> tuple[np.ndarray, float]:
    """``clip`` (float ``[T, H, W, C]`` in ``[0, 1]``, C = 1 or 3) through the classical codec ``anchor`` (a key of
    :data:`ANCHORS`) at the best quality whose packets take at most ``max_bits`` (a binary search over the
    quantizer or CRF; the coarsest setting when none fits). Grey clips are coded as grey RGB and read back as the
    channels' mean. Returns the decoded clip and its bits."""
    if anchor not in ANCHORS:
        raise ValueError(f"pyav_roundtrip: anchor must be one of {sorted(ANCHORS)}; got {anchor!r}")
    encoder, option, (best, worst) = ANCHORS[anchor]
    clip = np.asarray(clip, np.float32)
    grey = clip.shape[-1] == 1
    frames = _to_uint8(np.repeat(clip, 3, axis=-1) if grey else clip)
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"pyav_roundtrip: frame size {frames.shape[1]}x{frames.shape[2]} must be even (4:2:0)")
    found = _encode_decode(frames, encoder, option, worst, frame_rate)
    if 8 * found[1] <= max_bits:              # the smallest setting (best quality) that fits the budget
        lo, hi = best, worst - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            decoded, size = _encode_decode(frames, encoder, option, mid, frame_rate)
            if 8 * size <= max_bits:
                found, hi = (decoded, size), mid - 1
            else:
                lo = mid + 1
    decoded, size = found
    out = decoded.astype(np.float32) / 255.0
    if grey:
        out = out.mean(axis=-1, keepdims=True)
    return out, 8.0 * size


def anchor_codecs(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The anchors among ``names`` that can run here, and a reason for each that cannot (PyAV missing, or its
    build lacking the encoder). An unknown name raises ``ValueError``."""
    unknown = [n for n in names if n not in ANCHORS]
    if unknown:
        raise ValueError(f"video anchors must be among {sorted(ANCHORS)}; got {list(names)}")
    try:
        import av  # optional dependency
    except ImportError:
        return [], [f"{n}: PyAV is not installed (pip install av, or vqjax[video])" for n in names]
    ok, skipped = [], []
    for n in names:
        (ok if ANCHORS[n][0] in av.codecs_available else skipped).append(n)
    return ok, [f"{n}: this PyAV build has no {ANCHORS[n][0]} encoder" for n in skipped]


def summary_rows(results: Sequence[CodecResult]) -> list[dict]:
    """One row per codec: its name and mean metrics (JSON-able)."""
    return [{"codec": r.name, **r.mean} for r in results]


def plot_rate_distortion(path: str, results: Sequence[CodecResult], title: str = "") -> str:
    """PSNR against bits per pixel (one point per codec) and PSNR by frame index (one line per codec)."""
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in results:
        line = ax.plot([r.mean["bits_per_pixel"]], [r.mean["psnr"]], "o", label=r.name)[0]
        bx.plot(np.arange(len(r.psnr_per_frame)), r.psnr_per_frame, "-", color=line.get_color(), label=r.name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.set_xscale("log")
    ax.set_title("rate-distortion (higher and further left is better)", fontsize=9)
    bx.set_xlabel("frame index")
    bx.set_ylabel("PSNR (dB)")
    bx.set_title("PSNR by frame", fontsize=9)
    for a in (ax, bx):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, title)


def evaluate(tok, clips: Sequence[np.ndarray], *, frame_rate: float | None = None,
             anchors: Sequence[str] = ("mpeg4", "vp9")) -> list[dict]:
    """A video tokenizer artifact (:class:`vqjax.tokenizers.VideoTokenizer`) beside classical codecs, by one
    harness on the same clips (float32 ``[T, H, W, C]`` in ``[0, 1]``): the tokenizer's round trip, and each anchor
    (:data:`ANCHORS`) at the best quality within the tokenizer's bits per clip (:func:`pyav_roundtrip`).

    Returns:
      One row per codec (:func:`summary_rows`); anchors PyAV cannot run here are named in ``skipped`` rows.

    Raises:
      ValueError: a tokenizer of another modality, no clips, or an unknown anchor.
    """
    if tok.modality != "video":
        raise ValueError(f"vqjax.evals.video.evaluate: tok must be a video tokenizer; got modality {tok.modality!r}")
    if not len(clips):
        raise ValueError("vqjax.evals.video.evaluate: clips is empty")
    rate = float(frame_rate or tok.frame_rate)
    tokens = math.prod(tok.encode(np.asarray(clips[0])[None]).shape[1:])
    bits = tokens * math.log2(tok.vocab_size)

    def neural(clip: np.ndarray) -> tuple[np.ndarray, float]:
        return np.asarray(tok.decode(tok.encode(clip[None])))[0], bits

    runnable, skipped = anchor_codecs(tuple(anchors))
    results = [evaluate_codec("vqjax", neural, clips, frame_rate=rate, tokens_per_clip=tokens)]
    for name in runnable:
        codec = lambda clip, a=name: pyav_roundtrip(clip, a, bits, rate)
        results.append(evaluate_codec(name, codec, clips, frame_rate=rate))
    return summary_rows(results) + [{"codec": reason, "skipped": True} for reason in skipped]
