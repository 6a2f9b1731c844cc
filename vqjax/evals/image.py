"""Image tokenizers judged as image coding: PSNR and SSIM per image (SSIM as Wang et al. 2004: an 11-tap Gaussian
window of sigma 1.5, K1 = 0.01, K2 = 0.03, as scikit-image computes it with ``gaussian_weights=True``), and
:func:`evaluate`, which scores a tokenizer artifact on held-out images without the trainer.

:func:`rate_distortion` puts tokenizers beside the classical image codecs by one harness on the same images: every
1D tokenizer at ``k = k_min, 2 k_min, ... K`` tokens (and its adaptive mode at each fixed-k PSNR), every grid
tokenizer at its token count, and JPEG and WebP (Pillow) both swept over their quality and at each tokenizer's
bits per image (per image, the highest quality whose payload fits). A tokenizer's bits are ``tokens x log2
vocabulary``; a classical codec's are its entropy-coded payload (:func:`payload_bytes` x 8): the JPEG scan data
between the start-of-scan header and the end marker, the WebP VP8 frame data after the RIFF and chunk headers and
the 10-byte frame header. Headers (markers, quantisation and Huffman tables, image size) are excluded: at 32x32 they
would be most of the file, and a tokenizer's spec carries the same information once for all images.
"""

from __future__ import annotations

import io
import math
import re
import struct
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.evals.figures import pyplot, save_figure
from vqjax.metrics import CodeCounter
from vqjax.models.perceptual import perceptual_distance

__all__ = ["psnr", "ssim", "evaluate", "payload_bytes", "pillow_roundtrip", "classical_at_bits", "score",
           "rate_distortion", "plot_rate_distortion", "ANCHORS", "prefix_lengths"]

# Pillow codecs: name -> (format, quality range searched, encoder options for the smallest files)
ANCHORS = {"jpeg": ("JPEG", (1, 95), {"optimize": True}), "webp": ("WEBP", (0, 100), {"method": 6})}


def psnr(x: jax.Array, y: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Per-image PSNR in dB of ``[B, H, W, C]`` images: ``10 log10(max² / mean((x - y)²))``."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(max_value ** 2 / jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-0.5 * (r / sigma) ** 2)
    return g / jnp.sum(g)


def ssim(x: jax.Array, y: jax.Array, max_value: float = 1.0, window: int = 11, sigma: float = 1.5) -> jax.Array:
    """Per-image SSIM (Wang et al. 2004) of ``[B, H, W, C]`` images: Gaussian ``window`` (shrunk to fit small
    images), ``K1 = 0.01``, ``K2 = 0.03``, valid positions only, averaged over positions and channels."""
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    size = min(window, x.shape[1], x.shape[2])
    g = _gaussian_window(size, sigma)

    def blur(v):  # separable valid filtering of [B, H, W, C]
        v = jnp.moveaxis(v, -1, 1).reshape((-1,) + v.shape[1:3] + (1,))
        k_h = g.reshape(size, 1, 1, 1)
        k_w = g.reshape(1, size, 1, 1)
        dn = ("NHWC", "HWIO", "NHWC")
        v = jax.lax.conv_general_dilated(v, k_h, (1, 1), "VALID", dimension_numbers=dn)
        v = jax.lax.conv_general_dilated(v, k_w, (1, 1), "VALID", dimension_numbers=dn)
        return v.reshape((x.shape[0], x.shape[3]) + v.shape[1:3])

    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def _images(images, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(as given [N, H, W, C], float32 in [0, 1])``; refuses an empty set."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"vqjax.evals.image.{name}: images must be [N, H, W, C] (or [N, H, W]); got shape "
                         f"{images.shape}")
    if not len(images):
        raise ValueError(f"vqjax.evals.image.{name}: images is empty")
    reference = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    return images, reference


def _tokens(tok) -> int:
    """Tokens per image: a grid tokenizer's ``prod(codes_shape)``, a 1D tokenizer's ``K x levels``."""
    shape = tok.codes_shape
    if shape and shape[0] is None:
        return int(tok.token_range[1]) * math.prod(shape[1:])
    return math.prod(shape)


def evaluate(tok, images, *, batch_size: int = 250, num_tokens: int | None = None) -> list[dict]:
    """An image tokenizer artifact judged as image coding on held-out ``images`` (``[N, H, W, C]`` floats in
    ``[0, 1]`` or uint8): every image through ``tok.decode(tok.encode(...))`` (a 1D tokenizer's first
    ``num_tokens`` tokens, default all). Returns one row: ``codec``, ``bits_per_image`` (tokens x log2
    vocabulary), ``bits_per_pixel``, mean ``psnr``, ``ssim`` and ``mse``, and the codes' ``usage``,
    ``perplexity`` and ``dead_codes`` over the set.

    Raises:
      ValueError: a tokenizer of another modality, no images, or input the tokenizer refuses.
    """
    if tok.modality != "image":
        raise ValueError(f"vqjax.evals.image.evaluate: tok must be an image tokenizer; got modality {tok.modality!r}")
    images, reference = _images(images, "evaluate")
    shape = tok.codes_shape
    one_d = bool(shape) and shape[0] is None
    levels = shape[-1] if len(shape) == (2 if one_d else 3) else 1
    counter = CodeCounter(tok.vocab_size, levels)
    sums = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0}
    kwargs = {"num_tokens": num_tokens} if num_tokens is not None else {}
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(reference[start:start + batch_size])
        codes = tok.encode(images[start:start + batch_size], **kwargs)
        counter.update(np.asarray(codes))
        recon = jnp.asarray(tok.decode(codes))
        sums["psnr"] += float(jnp.sum(psnr(x, recon)))
        sums["ssim"] += float(jnp.sum(ssim(x, recon)))
        sums["mse"] += float(jnp.sum(jnp.mean((x - recon) ** 2, axis=(1, 2, 3))))
    tokens = _tokens(tok) if num_tokens is None else int(num_tokens) * math.prod(shape[1:])
    bits = tokens * math.log2(tok.vocab_size)
    return [{"codec": "vqjax", "tokens": tokens, "bits_per_image": bits,
             "bits_per_pixel": bits / math.prod(images.shape[1:3]),
             **{k: v / len(images) for k, v in sums.items()}, **counter.result()}]


# -- classical codecs at equal bits --------------------------------------------------------------------------------

def payload_bytes(data: bytes, codec: str) -> int:
    """Bytes of a JPEG's or WebP's entropy-coded payload, headers excluded (module docstring).

    Raises:
      ValueError: an unknown codec, or a file without the structure it names (no scan, no VP8 chunk).
    """
    if codec == "jpeg":
        i = 2                                             # after SOI
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError("payload_bytes: not a JPEG marker sequence")
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker == 0xDA:                            # start of scan: the payload runs to the end marker
                end = data.rfind(b"\xff\xd9")
                return max(end - (i + 2 + length), 0)
            i += 2 + length
        raise ValueError("payload_bytes: the JPEG has no start-of-scan marker")
    if codec == "webp":
        if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise ValueError("payload_bytes: not a RIFF WebP file")
        i = 12
        while i + 8 <= len(data):
            fourcc, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
            if fourcc == b"VP8 ":
                return max(size - 10, 0)                  # frame tag, start code, dimensions
            if fourcc == b"VP8L":
                return max(size - 5, 0)                   # signature, dimensions
            i += 8 + size + (size & 1)
        raise ValueError("payload_bytes: the WebP has no VP8/VP8L chunk")
    raise ValueError(f"payload_bytes: codec must be one of {sorted(ANCHORS)}; got {codec!r}")


def pillow_roundtrip(image: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, int]:
    """One uint8 image ``[H, W, C]`` (C = 1 or 3) through Pillow's ``codec`` at ``quality``: the decoded float32
    image in ``[0, 1]`` and the payload's bits (:func:`payload_bytes`)."""
    # optional import: Pillow comes with matplotlib; only the classical anchors need it
    from PIL import Image

    fmt, _, options = ANCHORS[codec]
    gray = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if gray else image, "L" if gray else "RGB")
    buf = io.BytesIO()
    pil.save(buf, format=fmt, quality=int(quality), **options)
    data = buf.getvalue()
    out = Image.open(io.BytesIO(data)).convert("L" if gray else "RGB")
    decoded = np.asarray(out, np.float32) / 255.0
    return (decoded[..., None] if gray else decoded), 8 * payload_bytes(data, codec)


def classical_at_bits(images: np.ndarray, codec: str, max_bits: float) -> tuple[np.ndarray, np.ndarray]:
    """Each uint8 image ``[N, H, W, C]`` at the highest quality of ``codec`` whose payload fits ``max_bits``
    (a bisection over the quality; an image whose lowest quality needs more is kept at the lowest, just above
    the budget). Returns the decoded float32 images and the bits ``[N]`` each spent."""
    lo_q, hi_q = ANCHORS[codec][1]
    decoded, bits = [], []
    for image in images:
        best = pillow_roundtrip(image, codec, lo_q)
        lo, hi = lo_q + 1, hi_q
        while lo <= hi:
            mid = (lo + hi) // 2
            out = pillow_roundtrip(image, codec, mid)
            if out[1] <= max_bits:
                best, lo = out, mid + 1
            else:
                hi = mid - 1
        decoded.append(best[0])
        bits.append(best[1])
    return np.stack(decoded), np.asarray(bits, np.float64)


@jax.jit
def _per_image(x, y):
    return psnr(x, y), ssim(x, y), jnp.mean((x - y) ** 2, axis=(1, 2, 3))


def score(reference: np.ndarray, decoded: np.ndarray, *, features: Callable | None = None,
          batch_size: int = 250) -> dict:
    """Mean ``psnr``, ``ssim``, ``mse`` of ``decoded`` against ``reference`` (float ``[N, H, W, C]`` in ``[0, 1]``;
    ``decoded`` is clipped), and ``feature_distance`` (:func:`vqjax.models.perceptual.perceptual_distance` on the
    feature network ``features``; NaN without one)."""
    sums = {"psnr": 0.0, "ssim": 0.0, "mse": 0.0, "feature_distance": 0.0}
    for start in range(0, len(reference), batch_size):
        x = jnp.asarray(reference[start:start + batch_size], jnp.float32)
        y = jnp.clip(jnp.asarray(decoded[start:start + batch_size], jnp.float32), 0.0, 1.0)
        for key, v in zip(("psnr", "ssim", "mse"), _per_image(x, y)):
            sums[key] += float(jnp.sum(v))
        if features is not None:
            sums["feature_distance"] += float(perceptual_distance(features, x, y)) * len(x)
    out = {k: v / len(reference) for k, v in sums.items()}
    if features is None:
        out["feature_distance"] = float("nan")
    return out


def prefix_lengths(token_range: tuple[int, int]) -> list[int]:
    """The token counts a 1D tokenizer is scored at: ``k_min`` doubled while below ``K``, then ``K``."""
    out, k = [], int(token_range[0])
    while k < token_range[1]:
        out.append(k)
        k *= 2
    return out + [int(token_range[1])]


def _decode_all(tok, images: np.ndarray, batch_size: int, num_tokens: int | None = None) -> np.ndarray:
    kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
    return np.concatenate([np.asarray(tok.decode(tok.encode(images[s:s + batch_size], **kwargs)))
                           for s in range(0, len(images), batch_size)])


def _length_errors(tok, images: np.ndarray, reference: np.ndarray, batch_size: int) -> np.ndarray:
    """float64 ``[N, K - k_min + 1]``: each image's MSE decoded from each length of a 1D tokenizer."""
    lo, hi = tok.token_range
    codes = np.concatenate([np.asarray(tok.encode(images[s:s + batch_size]))
                            for s in range(0, len(images), batch_size)])
    out = np.zeros((len(images), hi - lo + 1))
    for j, n in enumerate(range(lo, hi + 1)):
        for s in range(0, len(images), batch_size):
            decoded = np.asarray(tok.decode(codes[s:s + batch_size, :n]), np.float64)
            out[s:s + batch_size, j] = np.mean((decoded - reference[s:s + batch_size]) ** 2, axis=(1, 2, 3))
    return out


def _matching_bound(errors: np.ndarray, target_psnr: float, min_tokens: int) -> float:
    """The largest per-image MSE bound whose adaptive lengths (the first length within it, else the longest) give
    a mean PSNR of at least ``target_psnr`` over the images (a bisection over the errors the images reach); 0 (every
    image spends the longest length) when none does."""
    candidates = np.unique(errors)
    best = 0.0
    lo, hi = 0, len(candidates) - 1
    while lo <= hi:                                # mean PSNR falls (nearly) monotonically as the bound grows
        mid = (lo + hi) // 2
        bound = candidates[mid]
        ok = errors <= bound
        pick = np.where(ok.any(1), np.argmax(ok, 1), errors.shape[1] - 1)
        chosen = errors[np.arange(len(errors)), pick]
        if np.mean(10 * np.log10(1.0 / np.maximum(chosen, 1e-10))) >= target_psnr:
            best, lo = float(bound), mid + 1
        else:
            hi = mid - 1
    return best


def _adaptive_run(tok, images: np.ndarray, bound: float, batch_size: int, per: int, bits_per_token: float):
    """``(mean tokens, bits, decoded images)`` of :meth:`encode_adaptive` at ``max_error=bound``."""
    lengths, decoded = [], []
    for s in range(0, len(images), batch_size):
        a = tok.encode_adaptive(images[s:s + batch_size], max_error=float(bound))
        lengths.append(a.lengths)
        decoded.append(np.asarray(tok.decode(a.codes, lengths=a.lengths)))
    mean_tokens = float(np.concatenate(lengths).mean()) * per
    return mean_tokens, mean_tokens * bits_per_token, np.concatenate(decoded)


def rate_distortion(tokenizers: Mapping[str, object], images, *, features: Callable | None = None,
                    anchors: Sequence[str] = ("jpeg", "webp"), qualities: Mapping[str, Sequence[int]] | None = None,
                    adaptive: bool = True, batch_size: int = 250) -> list[dict]:
    """Image tokenizers and classical codecs by one harness on the same held-out ``images`` (module docstring).

    Args:
      tokenizers: ``{name: image tokenizer}``; a 1D one is scored at each of :func:`prefix_lengths`.
      images: ``[N, H, W, C]`` uint8, or floats in ``[0, 1]`` (quantised to uint8 for the classical codecs and
        scored against that uint8 reference by all).
      features: a feature network ``x -> [feature maps]`` for ``feature_distance`` (None: NaN).
      anchors: classical codecs of :data:`ANCHORS`.
      qualities: ``{codec: qualities}`` of the sweep (default: 12 settings across the codec's range).
      adaptive: also score each 1D tokenizer's :meth:`~vqjax.tokenizers.ImageTokenizer.encode_adaptive` against
        each of its fixed-k rows: ``'adaptive'`` with ``max_error`` the fixed-k mean squared error (every image
        within the error the fixed budget has on average), ``'adaptive_matched'`` with the largest bound whose mean
        PSNR still reaches the fixed-k mean PSNR (the same average quality for fewer tokens).

    Returns:
      Rows ``{codec, kind, tokens, bits_per_image, bits_per_pixel, psnr, ssim, mse, feature_distance}``: ``kind``
      ``'fixed'`` (a tokenizer at ``tokens``), ``'adaptive'`` / ``'adaptive_matched'`` (``tokens`` the mean spent,
      ``max_error``, the fixed row's ``fixed_tokens`` and ``target_psnr``), ``'at_bits'`` (a classical codec at
      the bits of the tokenizer row ``matched`` / ``matched_tokens``, within ``budget``) or ``'sweep'`` (a
      classical codec at ``quality``).

    Raises:
      ValueError: no images, a tokenizer that is not an image tokenizer, or an unknown anchor.
    """
    unknown = [a for a in anchors if a not in ANCHORS]
    if unknown:
        raise ValueError(f"vqjax.evals.image.rate_distortion: anchors must be among {sorted(ANCHORS)}; got {unknown}")
    for name, tok in tokenizers.items():
        if getattr(tok, "modality", None) != "image":
            raise ValueError(f"vqjax.evals.image.rate_distortion: tokenizers[{name!r}] must be an image tokenizer; "
                             f"got {type(tok).__name__}")
    images, reference = _images(images, "rate_distortion")
    if images.dtype != np.uint8:
        images = np.round(reference * 255.0).astype(np.uint8)
        reference = images.astype(np.float32) / 255.0
    pixels = math.prod(images.shape[1:3])
    rows = []

    def row(codec, kind, tokens, bits, decoded, **extra):
        return {"codec": codec, "kind": kind, "tokens": tokens, "bits_per_image": float(bits),
                "bits_per_pixel": float(bits) / pixels, **score(reference, decoded, features=features,
                                                                  batch_size=batch_size), **extra}

    for name, tok in tokenizers.items():
        bits_per_token = math.log2(tok.vocab_size)
        shape = tok.codes_shape
        if shape and shape[0] is None:
            per = math.prod(shape[1:])
            fixed = []
            for k in prefix_lengths(tok.token_range):
                fixed.append(row(name, "fixed", k * per, k * per * bits_per_token,
                                 _decode_all(tok, images, batch_size, k)))
            rows += fixed
            if adaptive:
                table = _length_errors(tok, images, reference, batch_size)
                for f in fixed:
                    k = f["tokens"] // per
                    for kind, bound in (("adaptive", f["mse"]),
                                        ("adaptive_matched", _matching_bound(table, f["psnr"], tok.token_range[0]))):
                        rows.append(row(name, kind, *_adaptive_run(tok, images, bound, batch_size, per,
                                                                   bits_per_token),
                                        max_error=bound, target_psnr=f["psnr"], matched_tokens=f["tokens"],
                                        fixed_tokens=k))
        else:
            tokens = math.prod(shape)
            rows.append(row(name, "fixed", tokens, tokens * bits_per_token, _decode_all(tok, images, batch_size)))
    budgets = sorted({(r["bits_per_image"], r["codec"], r["tokens"]) for r in rows if r["kind"] == "fixed"})
    for codec in anchors:
        for bits, matched, tokens in budgets:
            decoded, spent = classical_at_bits(images, codec, bits)
            rows.append(row(codec, "at_bits", float("nan"), spent.mean(), decoded, matched=matched,
                            matched_tokens=tokens, budget=bits))
        lo_q, hi_q = ANCHORS[codec][1]
        sweep = (qualities or {}).get(codec) or sorted({int(q) for q in np.linspace(lo_q, hi_q, 12)})
        for q in sweep:
            outs = [pillow_roundtrip(image, codec, q) for image in images]
            rows.append(row(codec, "sweep", float("nan"), np.mean([o[1] for o in outs]),
                            np.stack([o[0] for o in outs]), quality=int(q)))
    return rows


def plot_rate_distortion(path: str, rows: Sequence[dict], title: str = "", *, metric: str = "psnr") -> str:
    """``metric`` against bits per pixel: each tokenizer's fixed-k points as a line, its adaptive points at the
    fixed-k mean PSNR (``'adaptive_matched'``), and each classical codec's quality sweep as a line
    (:func:`rate_distortion`'s rows); codecs named ``..._grid<k>`` (a grid tokenizer per token count) share one
    line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = lambda name: re.sub(r"(grid)\d+$", r"\1", name)      # one grid tokenizer per count: one line
    names = list(dict.fromkeys(series(r["codec"]) for r in rows))
    for name in names:
        for kind, style in (("fixed", "o-"), ("adaptive_matched", "^--"), ("sweep", "s:")):
            pts = sorted((r["bits_per_pixel"], r[metric]) for r in rows
                         if series(r["codec"]) == name and r["kind"] == kind)
            if pts:
                label = name if kind != "adaptive_matched" else f"{name} adaptive (same mean PSNR)"
                ax.plot(*zip(*pts), style, label=label, markersize=4)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (tokens x log2 vocabulary; classical: payload without headers)")
    ax.set_ylabel(metric.upper() if metric != "feature_distance" else "feature distance (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, title)
