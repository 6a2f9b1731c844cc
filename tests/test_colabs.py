"""Notebooks of colabs/ (half of them; the rest in test_colabs_more.py) run top to bottom on small settings."""

import pytest
from notebooks import CHECKS, NOTEBOOKS, run_notebook

HERE = ['audio_codec.ipynb', 'image_1d_tokenizer.ipynb', 'multimodal_lm.ipynb', 'quickstart.ipynb']


@pytest.mark.parametrize("name", HERE)
def test_notebook_runs(name, monkeypatch, tmp_path):
    run_notebook(name, monkeypatch, tmp_path)


def test_every_notebook_is_run_by_one_of_the_two_files():
    from test_colabs_more import HERE as MORE

    assert sorted(HERE + MORE) == sorted(NOTEBOOKS) == sorted(CHECKS) and "quickstart.ipynb" in NOTEBOOKS
