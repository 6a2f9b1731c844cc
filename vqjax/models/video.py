"""Causal 3D convolutional video encoder and decoder (the MAGVIT-v2 layout, Yu et al. 2024).

Videos are ``[B, T, H, W, C]``. Every temporal convolution only looks back, and the first frame is padded by copies
of itself, so frame 0 is encoded on its own: a clip of ``1 + s * n`` frames (``s`` the temporal stride) gives
``1 + n`` latent frames, and a single image gives one latent frame (one model tokenizes images and videos).

Every temporal layer is a function ``(x, state) -> (y, state)``: the state holds the frames a convolution still
needs from the past (``None``: the start of a clip). Encoding a clip chunk by chunk, the state carried, gives the
whole clip's latents: the first chunk holds ``1 + s * a`` frames, later chunks ``s * b``. Normalisation is per
frame (GroupNorm over space and channels), so no frame sees a later one.

    enc = VideoEncoder(channels=32, channel_mult=(1, 2, 2), temporal_down=(True, True), latent_dim=8)
    z, state = enc.apply(params, video)                 # [B, 1 + (T - 1) / 4, H / 4, W / 4, 8]
    z1, s = enc.apply(params, video[:, :5]); z2, s = enc.apply(params, video[:, 5:], s)   # == z
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models import remat as remat_lib
from vqjax.models.autoencoder import group_count
from vqjax.models.streaming import StateChain

__all__ = ["CausalConv3d", "Conv3d", "VideoResBlock", "VideoEncoder", "VideoDecoder", "VideoAutoencoder",
           "VideoDiscriminator", "latent_frames", "space_to_depth", "depth_to_space", "inflate_image_params"]


def latent_frames(num_frames: int, temporal_stride: int) -> int:
    """Latent frames of a clip of ``num_frames = 1 + temporal_stride * n`` frames: ``1 + n``."""
    if num_frames < 1 or (num_frames - 1) % temporal_stride:
        raise ValueError(f"a clip must hold 1 + {temporal_stride} * n frames (the first frame alone, then whole "
                         f"groups of {temporal_stride}); got {num_frames}")
    return 1 + (num_frames - 1) // temporal_stride


def _check_video(x: jax.Array, where: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{where}: x must be a video [batch, frames, height, width, channels]; got shape {x.shape}")


class CausalConv3d(nn.Module):
    """A 3D convolution ``[B, T, H, W, Cin] -> [B, T', H / sh, W / sw, features]``, causal in time.

    Temporally, output frame ``j`` reads input frames ``j * st - (kt - 1) .. j * st`` (stride ``st``, kernel
    ``kt``), the frames before the clip being copies of its first frame; spatially the padding is 'SAME'. A first
    chunk (``state=None``) of ``1 + st * a`` frames gives ``1 + a`` frames; the state is the last ``kt - st`` input
    frames (padding included), and a later chunk of ``st * b`` frames gives ``b``.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3, 3)
    strides: Sequence[int] = (1, 1, 1)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, state: jax.Array | None = None):
        _check_video(x, "CausalConv3d")
        kt, kh, kw = (int(k) for k in self.kernel_size)
        st, sh, sw = (int(s) for s in self.strides)
        if kt < st:
            raise ValueError(f"CausalConv3d: the temporal kernel ({kt}) must cover the temporal stride ({st})")
        if state is None:
            if (x.shape[1] - 1) % st:
                raise ValueError(f"CausalConv3d: a clip's first chunk must hold 1 + {st} * n frames; got {x.shape[1]}")
            first = jnp.repeat(x[:, :1], kt - 1, axis=1)
            full = jnp.concatenate([first, x], axis=1)
        else:
            if x.shape[1] % st:
                raise ValueError(f"CausalConv3d: a later chunk must hold a multiple of {st} frames; got {x.shape[1]}")
            full = jnp.concatenate([state.astype(x.dtype), x], axis=1)
        new_state = full[:, full.shape[1] - (kt - st):]
        kernel = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                            (kt, kh, kw, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        return _conv_by_taps(full, kernel, (st, sh, sw), self.dtype) + bias.astype(self.dtype), new_state


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """'SAME' padding of a side of ``n`` for kernel ``k`` and stride ``s``: ``ceil(n / s)`` outputs."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv_by_taps(full: jax.Array, kernel: jax.Array, strides: Sequence[int], dtype) -> jax.Array:
    """The 3D convolution of ``full`` ``[B, T, H, W, C]`` (already padded in time: 'VALID' there) with ``kernel``
    ``[kt, kh, kw, C, F]``, 'SAME' in space, as a sum of ``kt`` 2D convolutions over the frames each temporal tap
    reads: XLA's CPU 3D convolution is several times slower (forward and input gradient) than its 2D one."""
    kt, kh, kw = kernel.shape[:3]
    st, sh, sw = strides
    pads = (_same_pads(full.shape[2], kh, sh), _same_pads(full.shape[3], kw, sw))
    full = jnp.pad(full, ((0, 0), (0, 0), *pads, (0, 0)))          # explicit padding: fast kernel gradients on CPU
    b, frames = full.shape[0], (full.shape[1] - kt) // st + 1
    y = 0.0
    for k in range(kt):
        taps = full[:, k:k + (frames - 1) * st + 1:st].astype(dtype)
        out = jax.lax.conv_general_dilated(taps.reshape((b * frames,) + taps.shape[2:]), kernel[k].astype(dtype),
                                           (sh, sw), [(0, 0)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y + out.reshape((b, frames) + out.shape[1:])
    return y


class Conv3d(nn.Module):
    """A 3D convolution ``[B, T, H, W, Cin] -> [B, ceil(T / st), ceil(H / sh), ceil(W / sw), features]``, 'SAME'
    (zero) padding in time and space, computed as :class:`CausalConv3d` is (a sum of 2D convolutions per temporal
    tap). For layers that may look both ways in time (the discriminator); the tokenizer's layers are causal."""

    features: int
    kernel_size: Sequence[int] = (3, 3, 3)
    strides: Sequence[int] = (1, 1, 1)
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_video(x, "Conv3d")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            tuple(int(k) for k in self.kernel_size) + (x.shape[-1], self.features), self.param_dtype)
        st = int(self.strides[0])
        full = jnp.pad(x, ((0, 0), _same_pads(x.shape[1], kernel.shape[0], st), (0, 0), (0, 0), (0, 0)))
        y = _conv_by_taps(full, kernel, tuple(int(s) for s in self.strides), self.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(self.dtype)
        return y


def _frame_norm(x: jax.Array, dtype, param_dtype=jnp.float32) -> jax.Array:
    """GroupNorm of each frame on its own (over height, width and channel groups): causal in time."""
    b, t = x.shape[:2]
    h = nn.GroupNorm(group_count(x.shape[-1]), dtype=dtype, param_dtype=param_dtype)(x.reshape((b * t,) + x.shape[2:]))
    return h.reshape(x.shape)


class VideoResBlock(nn.Module):
    """Per-frame GroupNorm, swish, causal 3x3x3 convolution, twice, plus a (1x1x1-projected when the width
    changes) skip connection. The state is the two convolutions'."""

    channels: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None):
        state = (None, None) if state is None else state
        h = nn.swish(_frame_norm(x, self.dtype, self.param_dtype))
        h, s1 = CausalConv3d(self.channels, dtype=self.dtype, param_dtype=self.param_dtype)(h, state[0])
        h = nn.swish(_frame_norm(h, self.dtype, self.param_dtype))
        h, s2 = CausalConv3d(self.channels, dtype=self.dtype, param_dtype=self.param_dtype)(h, state[1])
        if x.shape[-1] != self.channels:
            x = nn.Dense(self.channels, dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x + h, (s1, s2)


class _Video(nn.Module):
    """The fields the video encoder and decoder share.

    Attributes:
      channels: base width; level ``i`` has ``channels * channel_mult[i]``.
      channel_mult: width multipliers per resolution level; ``len(channel_mult) - 1`` spatial halvings.
      temporal_down: per halving, whether time is halved too (``(True, True)``: 4x in time).
      num_res_blocks: residual blocks per level.
      patch_size: each frame is first cut into ``patch_size x patch_size`` patches stacked on the channels
        (space-to-depth, per frame: causality and streaming unchanged) and the decoder's last convolution writes
        them back; the convolutions then run at ``1 / patch_size`` of the resolution (a cheap stem, as Cosmos'
        patchified input); ``1`` works at full resolution.
    """

    channels: int = 32
    channel_mult: Sequence[int] = (1, 2, 2)
    temporal_down: Sequence[bool] = (True, True)
    num_res_blocks: int = 1
    patch_size: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False

    def _block(self, channels: int) -> nn.Module:
        return remat_lib.block(VideoResBlock, self.remat)(channels, dtype=self.dtype, param_dtype=self.param_dtype)

    def _check_fields(self, name: str) -> None:
        if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) or self.patch_size < 1:
            raise ValueError(f"{name}: patch_size must be a positive int; got {self.patch_size!r}")
        if len(self.temporal_down) != len(self.channel_mult) - 1:
            raise ValueError(f"{name}: temporal_down needs one entry per spatial halving ({len(self.channel_mult) - 1}"
                             f"); got {tuple(self.temporal_down)}")

    @property
    def temporal_stride(self) -> int:
        return int(2 ** sum(bool(d) for d in self.temporal_down))

    @property
    def spatial_stride(self) -> int:
        return int(self.patch_size * 2 ** (len(self.channel_mult) - 1))


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """``[B, T, H, W, C] -> [B, T, H / p, W / p, p * p * C]``: each frame's ``p x p`` patches on the channels."""
    if p == 1:
        return x
    b, t, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"space_to_depth: frame size {h}x{w} is not divisible by patch_size {p}")
    x = x.reshape(b, t, h // p, p, w // p, p, c)
    return jnp.transpose(x, (0, 1, 2, 4, 3, 5, 6)).reshape(b, t, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
    """The inverse of :func:`space_to_depth`."""
    if p == 1:
        return x
    b, t, h, w, pc = x.shape
    c = pc // (p * p)
    x = x.reshape(b, t, h, w, p, p, c)
    return jnp.transpose(x, (0, 1, 2, 4, 3, 5, 6)).reshape(b, t, h * p, w * p, c)


class VideoEncoder(_Video):
    """Videos ``[B, 1 + s n, H, W, C]`` -> latents ``[B, 1 + n, H / f, W / f, latent_dim]`` (``s`` the
    temporal stride, ``f = patch_size * 2^L`` the spatial one): the patch stem, a causal 3x3x3 convolution, per
    level residual blocks and a strided causal 3x4x4 convolution (stride 2 in space, and in time where
    ``temporal_down``), a middle block, per-frame GroupNorm, swish, a 1x1x1 projection to ``latent_dim``. With
    ``patch_size=1`` this is the image :class:`~vqjax.models.autoencoder.Encoder`'s layout with causal 3D kernels
    plus the middle block, so an image encoder's weights inflate into it (:func:`inflate_image_params`)."""

    latent_dim: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, state=None):
        _check_video(x, "VideoEncoder")
        self._check_fields("VideoEncoder")
        run = StateChain(state)
        h = run(CausalConv3d(self.channels * self.channel_mult[0], dtype=self.dtype, param_dtype=self.param_dtype),
                space_to_depth(x.astype(self.dtype) * 2.0 - 1.0, self.patch_size))
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = run(self._block(self.channels * mult), h)
            if level < len(self.channel_mult) - 1:
                st = 2 if self.temporal_down[level] else 1
                h = run(CausalConv3d(self.channels * mult, (3, 4, 4), (st, 2, 2), dtype=self.dtype, param_dtype=self.param_dtype), h)
        h = run(self._block(h.shape[-1]), h)
        h = nn.swish(_frame_norm(h, self.dtype, self.param_dtype))
        return nn.Dense(self.latent_dim, dtype=self.dtype, param_dtype=self.param_dtype)(h), tuple(run.states)


class _TimeUpsample(nn.Module):
    """Doubles the frame rate causally: a dense layer to twice the width, each frame split into two; a clip's first
    frame keeps only its second half (``1 + n`` frames -> ``1 + 2 n``). The state marks a clip already started."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None):
        b, t, hh, ww, c = x.shape
        y = nn.Dense(2 * c, dtype=self.dtype, param_dtype=self.param_dtype)(x).reshape(b, t, hh, ww, 2, c)
        y = jnp.moveaxis(y, 4, 2).reshape(b, 2 * t, hh, ww, c)
        if state is None:
            y = y[:, 1:]
        return y, jnp.zeros((), jnp.int32)


class VideoDecoder(_Video):
    """Latents ``[B, 1 + n, h, w, latent_dim]`` -> videos ``[B, 1 + s n, h f, w f, out_channels]`` (values near
    ``[0, 1]``): a causal convolution and a middle block, then the encoder mirrored (per level, residual blocks,
    then a causal frame doubling where ``temporal_down``, nearest spatial doubling and a causal convolution to the
    next level's width, as the image :class:`~vqjax.models.autoencoder.Decoder`); per-frame GroupNorm, swish and a causal
    3x3x3 convolution to ``out_channels * patch_size^2``, the patches put back, mapped from ``[-1, 1]`` to
    ``[0, 1]``.

    The last layer is explicit, as the image decoder's: :meth:`last_layer` is that causal convolution (its
    parameters under ``LAST_LAYER``) and ``__call__(z, return_features=True)`` also returns the features it reads,
    so the VQGAN adaptive weight can differentiate through that layer alone (:meth:`apply_last_layer`)."""

    out_channels: int = 3

    LAST_LAYER = "conv_out"

    def last_layer(self, **kwargs) -> CausalConv3d:
        """The final causal 3x3x3 convolution (features -> ``out_channels * patch_size^2``), in float32."""
        return CausalConv3d(self.out_channels * self.patch_size ** 2, dtype=jnp.float32, param_dtype=self.param_dtype,
                            **kwargs)

    def to_frames(self, out: jax.Array) -> jax.Array:
        """The last layer's output to frames: the patches put back, ``(out + 1) / 2``."""
        return (depth_to_space(out, self.patch_size) + 1.0) * 0.5

    def apply_last_layer(self, last_params, features: jax.Array) -> jax.Array:
        """Frames of a whole clip from its ``features`` and the last layer's parameters (a pure function of both)."""
        out, _ = self.last_layer(parent=None).apply({"params": last_params}, features)
        return self.to_frames(out)

    @nn.compact
    def __call__(self, z: jax.Array, state=None, *, return_features: bool = False):
        _check_video(z, "VideoDecoder")
        self._check_fields("VideoDecoder")
        run = StateChain(state)
        top = self.channels * self.channel_mult[-1]
        h = run(CausalConv3d(top, dtype=self.dtype, param_dtype=self.param_dtype), z.astype(self.dtype))
        h = run(self._block(top), h)
        for level in reversed(range(len(self.channel_mult))):
            width = self.channels * self.channel_mult[level]
            for _ in range(self.num_res_blocks):
                h = run(self._block(width), h)
            if level > 0:
                if self.temporal_down[level - 1]:
                    h = run(_TimeUpsample(self.dtype, self.param_dtype), h)
                h = jnp.repeat(jnp.repeat(h, 2, axis=2), 2, axis=3)
                h = run(CausalConv3d(self.channels * self.channel_mult[level - 1], dtype=self.dtype, param_dtype=self.param_dtype), h)
        h = nn.swish(_frame_norm(h, self.dtype, self.param_dtype))
        frames = self.to_frames(run(self.last_layer(name=self.LAST_LAYER), h))
        if return_features:
            return frames, tuple(run.states), h
        return frames, tuple(run.states)


class VideoAutoencoder(nn.Module):
    """Video encoder -> quantizer -> video decoder (MAGVIT-v2 layout).

    ``__call__(x, train)`` returns ``(reconstruction, Quantized)`` for clips ``[B, 1 + s n, H, W, C]`` in
    ``[0, 1]``; ``encode(x)`` the int32 codes ``[B, 1 + n, H / 2^L, W / 2^L(, levels)]`` and ``decode(codes)``
    the clip. ``encode_stream``/``decode_stream`` carry the encoder's or decoder's state, so consecutive chunks
    (the first ``1 + s a`` frames, then ``s b``) give the whole clip's codes and frames.
    """

    encoder: VideoEncoder
    quantizer: nn.Module
    decoder: VideoDecoder

    @property
    def temporal_stride(self) -> int:
        return self.encoder.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.encoder.spatial_stride

    def __call__(self, x: jax.Array, *, train: bool = False, return_features: bool = False,
                 apply_update: bool | jax.Array = True):
        """``(reconstruction, Quantized)``, or ``(reconstruction, Quantized, decoder features)`` with
        ``return_features`` (the input of the decoder's last layer). ``apply_update=False`` holds the codebook
        statistics of this call pending (gradient accumulation: all micro-batches but the last)."""
        z, _ = self.encoder(x)
        q = self.quantizer(z, train=train, apply_update=apply_update)
        if return_features:
            y, _, h = self.decoder(q.values, return_features=True)
            return y, q, h
        y, _ = self.decoder(q.values)
        return y, q

    def last_layer_params(self, params) -> dict:
        """The decoder's last-layer parameters within this model's ``params``."""
        return params["decoder"][VideoDecoder.LAST_LAYER]

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encode_stream(x, None)[0]

    def encode_stream(self, x: jax.Array, state):
        """``(codes, state)`` of one chunk of frames (``state=None``: a new clip)."""
        z, state = self.encoder(x, state)
        return self.quantizer.encode(z), state

    def decode(self, codes: jax.Array) -> jax.Array:
        return self.decode_stream(codes, None)[0]

    def decode_stream(self, codes: jax.Array, state):
        """``(frames, state)`` of one chunk of latent frames (``state=None``: a new clip)."""
        return self.decoder(self.quantizer.decode(codes), state)


class VideoDiscriminator(nn.Module):
    """A frame + temporal PatchGAN for clips ``[B, T, H, W, C]`` in ``[0, 1]``: each frame through stride-2 4x4
    convolutions with GroupNorm and leaky ReLU (the image :class:`~vqjax.models.vqgan.PatchDiscriminator`'s
    layers), then ``temporal_layers`` 3x3x3 convolutions across frames (stride 2 in time), one logit per
    space-time patch ``[B, T', H / 2^num_layers, W / 2^num_layers, 1]``. It judges whole clips, so it looks both
    ways in time (only the tokenizer must be causal); the temporal layers see motion that no single frame shows.

    Attributes:
      channels: width of the first layer (doubled per layer, at most 8x).
      num_layers: stride-2 per-frame layers.
      temporal_layers: 3x3x3 layers across frames, each halving the frame count (rounded up).
    """

    channels: int = 32
    num_layers: int = 2
    temporal_layers: int = 2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_video(x, "VideoDiscriminator")
        b, t = x.shape[:2]
        h = x.reshape((b * t,) + x.shape[2:]).astype(self.dtype) * 2.0 - 1.0
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), strides=(2, 2), **kw)(h), 0.2)
        width = self.channels
        for i in range(1, self.num_layers):
            width = self.channels * min(2 ** i, 8)
            h = nn.Conv(width, (4, 4), strides=(2, 2), use_bias=False, **kw)(h)
            h = nn.leaky_relu(nn.GroupNorm(group_count(width), **kw)(h), 0.2)
        h = h.reshape((b, t) + h.shape[1:])
        for _ in range(self.temporal_layers):
            h = Conv3d(width, (3, 3, 3), strides=(2, 1, 1), use_bias=False, **kw)(h)
            h = nn.leaky_relu(_frame_norm(h, self.dtype, self.param_dtype), 0.2)
        return Conv3d(1, (3, 3, 3), param_dtype=self.param_dtype)(h.astype(jnp.float32))


def _numbered(tree: dict, prefix: str) -> list[str]:
    """The keys ``prefix_0, prefix_1, ...`` of ``tree``, in index order."""
    return sorted((k for k in tree if k.rsplit("_", 1)[0] == prefix), key=lambda k: int(k.rsplit("_", 1)[1]))


def _take(image: dict, video: dict, where: str) -> dict:
    """``image``'s leaves in ``video``'s shapes: each kernel as is, reshaped (a 1x1 conv to a dense layer), or put
    in the last temporal tap of a causal kernel (``[kh, kw, ci, co] -> [kt, kh, kw, ci, co]``, other taps 0)."""
    if set(image) != set(video):
        raise ValueError(f"inflate_image_params: {where} holds {sorted(image)} in the image tokenizer and "
                         f"{sorted(video)} in the video tokenizer")
    out = {}
    for name, v in video.items():
        w = jnp.asarray(image[name], v.dtype)
        if w.shape == v.shape:
            out[name] = w
        elif w.ndim + 1 == v.ndim and w.shape == v.shape[1:]:
            out[name] = jnp.zeros(v.shape, v.dtype).at[-1].set(w)
        elif w.shape == (1,) * (w.ndim - v.ndim) + v.shape:
            out[name] = w.reshape(v.shape)
        else:
            raise ValueError(f"inflate_image_params: {where}/{name} has shape {w.shape} in the image tokenizer; the "
                             f"video tokenizer's is {v.shape} (the two need the same channels, channel_mult, "
                             f"num_res_blocks, latent_dim and quantizer, and patch_size=1)")
    return out


def _res_block(image: dict, video: dict, where: str) -> dict:
    names = {"Conv_0": "CausalConv3d_0", "Conv_1": "CausalConv3d_1", "Conv_2": "Dense_0",
             "GroupNorm_0": "GroupNorm_0", "GroupNorm_1": "GroupNorm_1"}
    if set(image) - set(names) or {names[k] for k in image} != set(video):
        raise ValueError(f"inflate_image_params: {where} holds {sorted(image)} in the image tokenizer and "
                         f"{sorted(video)} in the video tokenizer")
    return {names[k]: _take(image[k], video[names[k]], f"{where}/{names[k]}") for k in image}


def _identity_block(video: dict) -> dict:
    """A residual block whose second convolution is zero: the identity (its input passes the skip alone)."""
    out = dict(video)
    out["CausalConv3d_1"] = jax.tree.map(jnp.zeros_like, video["CausalConv3d_1"])
    return out


def _counts_match(image: dict, video: dict, where: str, image_prefix: str, video_prefix: str, extra: int):
    a, b = _numbered(image, image_prefix), _numbered(video, video_prefix)
    if len(a) + extra != len(b):
        raise ValueError(f"inflate_image_params: the {where} has {len(a)} {image_prefix} layers in the image "
                         f"tokenizer and {len(b)} {video_prefix} in the video tokenizer (expected {len(a) + extra}): "
                         f"channel_mult or num_res_blocks differ")
    return a, b


def inflate_image_params(image_params: dict, video_params: dict) -> dict:
    """``video_params`` (a :class:`VideoAutoencoder` with ``patch_size=1``) with an image tokenizer's weights
    (:class:`vqjax.models.ImageTokenizer` of the same ``channels``, ``channel_mult``, ``num_res_blocks``,
    ``latent_dim`` and quantizer) inflated into it, as MAGVIT-v2 initialises its 3D tokenizer from a 2D one.

    Each 2D kernel goes to the last temporal tap of its causal 3D kernel (the current frame; earlier taps zero), the
    middle blocks the image layout lacks become the identity (second convolution zero), each frame doubling copies
    its frame, and the quantizer is the image one's. The inflated tokenizer is then the image tokenizer on the last
    frame of each group of ``s`` (the temporal stride) frames, shown for the whole group (frame 0 on its own):
    training starts from a still image per group and learns the motion. Raises ``ValueError`` naming the first
    layer whose layout differs."""
    image_enc, video_enc = image_params["encoder"], video_params["encoder"]
    convs, causal = _counts_match(image_enc, video_enc, "encoder", "Conv", "CausalConv3d", -1)
    blocks, video_blocks = _counts_match(image_enc, video_enc, "encoder", "ResBlock", "VideoResBlock", 1)
    enc = {v: _take(image_enc[i], video_enc[v], f"encoder/{v}") for i, v in zip(convs[:-1], causal)}
    enc.update({v: _res_block(image_enc[i], video_enc[v], f"encoder/{v}") for i, v in zip(blocks, video_blocks)})
    enc[video_blocks[-1]] = _identity_block(video_enc[video_blocks[-1]])
    enc["GroupNorm_0"] = _take(image_enc["GroupNorm_0"], video_enc["GroupNorm_0"], "encoder/GroupNorm_0")
    enc["Dense_0"] = _take(image_enc[convs[-1]], video_enc["Dense_0"], "encoder/Dense_0")

    image_dec, video_dec = image_params["decoder"], video_params["decoder"]
    convs, causal = _counts_match(image_dec, video_dec, "decoder", "Conv", "CausalConv3d", 0)
    blocks, video_blocks = _counts_match(image_dec, video_dec, "decoder", "ResBlock", "VideoResBlock", 1)
    dec = {v: _take(image_dec[i], video_dec[v], f"decoder/{v}") for i, v in zip(convs, causal)}
    dec[video_blocks[0]] = _identity_block(video_dec[video_blocks[0]])
    dec.update({v: _res_block(image_dec[i], video_dec[v], f"decoder/{v}") for i, v in zip(blocks, video_blocks[1:])})
    for name in _numbered(video_dec, "_TimeUpsample"):
        kernel = video_dec[name]["Dense_0"]["kernel"]
        eye = jnp.eye(kernel.shape[0], dtype=kernel.dtype)
        dec[name] = {"Dense_0": {"kernel": jnp.concatenate([eye, eye], axis=1),
                                 "bias": jnp.zeros_like(video_dec[name]["Dense_0"]["bias"])}}
    for name in ("GroupNorm_0", VideoDecoder.LAST_LAYER):
        dec[name] = _take(image_dec[name], video_dec[name], f"decoder/{name}")

    image_q, video_q = image_params.get("quantizer", {}), video_params.get("quantizer", {})
    if jax.tree.structure(image_q) != jax.tree.structure(video_q) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(image_q), jax.tree.leaves(video_q))):
        raise ValueError("inflate_image_params: the quantizers' parameters differ (the two tokenizers need the same "
                         "quantizer, quantizer_kwargs and latent_dim)")
    out = dict(video_params)
    out.update(encoder=enc, decoder=dec)
    if "quantizer" in video_params:
        out["quantizer"] = jax.tree.map(jnp.asarray, image_q)
    missing = set(video_enc) - set(enc), set(video_dec) - set(dec)
    if any(missing):
        raise ValueError(f"inflate_image_params: no image layer for the video tokenizer's {sorted(missing[0])} "
                         f"(encoder) and {sorted(missing[1])} (decoder)")
    return out
