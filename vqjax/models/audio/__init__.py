"""Audio models: streaming encoders and decoders for waveforms, the codec, its side codes, losses and
discriminators. Two architectures:

* SEANet (SoundStream, Zeghidour et al. 2021; EnCodec, Défossez et al. 2022): strided 1D convolutions with
  residual units of dilated convolutions, ELU activations, a frame rate set by the strides, working on the samples.
* STFT/inverse STFT (the Vocos decoder of WavTokenizer, Siuzdak 2023; Ji et al. 2024): the encoder reads the
  short-time spectrum and the decoder predicts a log magnitude and a phase per bin, turned into samples by the
  inverse FFT and overlap-add; ConvNeXt blocks at the frame rate in between, so every layer runs at 50-100 frames
  per second instead of 16000 samples.

Every layer is a function ``(x, state) -> (y, state)``. With ``causal=True`` each convolution only looks back, and
its state holds the input it still needs from the past (a plain convolution, the STFT's framing) or the output it
still owes the future (a transposed convolution's or the overlap-add's overlap): running consecutive chunks with
the state carried gives the result of running the whole signal at once, chunk for chunk. ``state=None`` starts a
signal (zero history). A causal inverse STFT writes each frame's window ahead of the frame, so its output lags the
input by ``n_fft - hop`` samples (``delay``); the task's losses and the tokenizer align for it.

    enc = SEANetEncoder(channels=32, strides=(2, 4, 5, 8), latent_dim=64)        # 320 samples per frame
    z, state = enc.apply(params, wave[:, :, None])                               # [B, T / 320, 64]
    z1, s = enc.apply(params, wave[:, :3200, None]); z2, s = enc.apply(params, wave[:, 3200:, None], s)
    # concat(z1, z2) == z: the causal encoder streams

Chunks must hold a multiple of the layer's stride (the encoder's hop length, the decoder's one frame). With
``causal=False`` the padding is split between both sides (better quality, no streaming; ``state`` stays None).

Modules: :mod:`~vqjax.models.audio.streaming` (the streaming 1D layers, shared with the sequence tokenizer),
:mod:`~vqjax.models.audio.seanet`, :mod:`~vqjax.models.audio.stft` (STFT/inverse STFT and the harmonic part),
:mod:`~vqjax.models.audio.coders` (pitch and envelope codes), :mod:`~vqjax.models.audio.codec`
(:class:`AudioCodec`), :mod:`~vqjax.models.audio.dsp` (numpy DSP), :mod:`~vqjax.models.audio.losses` and
:mod:`~vqjax.models.audio.discriminators`.
"""

from vqjax.models.audio.codec import AudioCodec, align_output, frames_for
from vqjax.models.audio.coders import EnvelopeCoder, PitchCoder
from vqjax.models.audio.dsp import hann_window
from vqjax.models.audio.seanet import SEANetDecoder, SEANetEncoder
from vqjax.models.audio.stft import (
                                     MAX_PITCH,
                                     MIN_PITCH,
                                     ConvNeXtBlock,
                                     ISTFTDecoder,
                                     STFTEncoder,
                                     frame_signal,
                                     frame_spectra,
                                     harmonic_frames,
                                     inverse_stft,
                                     overlap_add,
)
from vqjax.models.audio.streaming import ResidualUnit, StreamingConv1d, StreamingConvTranspose1d

__all__ = ["StreamingConv1d", "StreamingConvTranspose1d", "ResidualUnit", "SEANetEncoder", "SEANetDecoder",
           "ConvNeXtBlock", "STFTEncoder", "ISTFTDecoder", "hann_window", "frame_signal", "frame_spectra",
           "harmonic_frames", "overlap_add", "inverse_stft", "align_output", "frames_for", "PitchCoder",
           "EnvelopeCoder", "AudioCodec", "MIN_PITCH", "MAX_PITCH"]
