"""The other half of the notebooks of colabs/ (see test_colabs.py), run top to bottom on small settings."""

import pytest
from notebooks import run_notebook

HERE = ['semantic_ids.ipynb', 'timeseries_tokenizer.ipynb', 'video_tokenizer.ipynb']


@pytest.mark.parametrize("name", HERE)
def test_notebook_runs(name, monkeypatch, tmp_path):
    run_notebook(name, monkeypatch, tmp_path)
