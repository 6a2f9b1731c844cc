"""The 'sequence_tokenizer' task end to end on a few simulated Pusher episodes: it trains, scores itself and FAST by
one harness, draws its figures and leaves a TimeSeriesTokenizer that carries its channels' normalisation; the
time-series metrics against hand-made cases; config errors named before any data is read."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="needs the vqjax[timeseries] extra")

from vqjax.data import timeseries  # noqa: E402
from vqjax.evals import timeseries as timeseries_eval
from vqjax.train import train_and_evaluate  # noqa: E402
from vqjax.train.tasks import sequence_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def action_run(tmp_path_factory, devices):
    from experiments_loader import load_experiment

    mp = pytest.MonkeyPatch()
    mp.setattr(timeseries, "PUSHER_EPISODES", {"train": 8, "test": 2})
    root = tmp_path_factory.mktemp("sequence")
    c = load_experiment("action_tokenizer", "runlocal")
    c.data_dir = str(root / "tfds")
    workdir = str(root / "run")
    try:
        result = train_and_evaluate(c, workdir, progress=False, devices=devices[:1])
    finally:
        mp.undo()
    return c, workdir, result


def test_the_run_scores_itself_and_fast_on_the_same_chunks(action_run):
    c, workdir, result = action_run
    assert result["test_chunks"] == 6                  # 2 held-out episodes x 3 non-overlapping windows of 32 steps
    # 2 residual levels of 8 positions (4x down from 32 steps), 1.6 s a chunk
    for levels in (1, 2):
        assert result[f"vqjax {levels}q/tokens_per_chunk"] == 8 * levels
        assert result[f"vqjax {levels}q/tokens_per_second"] == pytest.approx(8 * levels / 1.6)
        assert 0 <= result[f"vqjax {levels}q/nmse"] < 10
    for scale in ("2", "10"):
        assert result[f"FAST {scale}/nmse"] < 0.1 and result[f"FAST {scale}/tokens_per_chunk"] > 0
        for rate in ("0.01", "0.05"):
            assert 0 <= result[f"FAST {scale}/decodable@{rate}"] <= 1
    assert result["FAST 10/tokens_per_chunk"] > result["FAST 2/tokens_per_chunk"]
    assert result["FAST 10/nmse"] < result["FAST 2/nmse"]
    table = json.load(open(os.path.join(workdir, "rate_distortion.json")))
    assert [r["codec"] for r in table["rows"]] == ["vqjax 1q", "vqjax 2q", "FAST 2", "FAST 10"]
    assert len(table["per_chunk"]["FAST 2"]["nmse"]) == 6
    for fig in ("rate_distortion.png", "reconstructions.png", "loss_curves.png"):
        assert os.path.getsize(os.path.join(workdir, fig)) > 1000
    text = sequence_tokenizer.report(result, workdir)
    assert "FAST 10/decodable@0.05" in text and "vqjax 2q" in text
    both = timeseries_eval.plot_runs(os.path.join(workdir, "runs.png"), {"actions": workdir, "again": workdir})
    assert os.path.getsize(both) > 1000


def test_the_tokenizer_takes_raw_signals_and_refuses_bad_input(action_run, tmp_path):
    import vqjax

    _, workdir, _ = action_run
    tok = vqjax.Tokenizer.load(workdir)
    assert isinstance(tok, vqjax.TimeSeriesTokenizer) and tok.modality == "timeseries"
    assert tok.channels == 7 and tok.channel_names[0] == "shoulder_pan" and tok.sample_rate == 20.0
    assert tok.codes_shape == (8, 2) and tok.tokens_per_second == pytest.approx(16 / 1.6)
    chunks = timeseries.pusher_actions("test", episodes={"test": 1}).signals[0, :96].reshape(3, 32, 7)
    norm = tok.normalization
    assert len(norm["mean"]) == 7 and min(norm["scale"]) > 0
    codes = np.asarray(tok.encode(chunks))
    assert codes.shape == (3, 8, 2) and codes.min() >= 0 and codes.max() < tok.vocab_size
    decoded = np.asarray(tok.decode(codes))
    assert decoded.shape == chunks.shape and decoded.dtype == np.float32
    # the normalisation is the model's: the same signal in other units is another signal
    assert not np.array_equal(np.asarray(tok.encode(chunks * 3.0 + 1.0)), codes)
    # any whole number of positions: two chunks end to end
    assert np.asarray(tok.encode(chunks[:2].reshape(1, 64, 7))).shape == (1, 16, 2)
    exported = vqjax.Tokenizer.load(tok.export(str(tmp_path / "exported")))
    np.testing.assert_array_equal(np.asarray(exported.encode(chunks)), codes)
    np.testing.assert_array_equal(np.asarray(exported.decode(codes)), decoded)
    bad = chunks.copy()
    bad[0, 3, 2] = np.nan
    for x, match in ((bad, "1 NaN/Inf"), (chunks[..., :6], r"\[B, T, 7\] \(7 channels: shoulder_pan"),
                     (chunks[:, :30], "multiple of 4 samples"), (chunks[:, :0], "empty"),
                     (chunks.astype(np.int32), "floating")):
        with pytest.raises(ValueError, match=match):
            tok.encode(x)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        tok.decode(codes + 100)
    with pytest.raises(ValueError, match="codes must be integer"):
        tok.decode(codes[..., :1])


def test_signal_metrics_on_hand_made_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 128, 2))
    perfect = timeseries_eval.signal_metrics(x, x)
    assert np.allclose(perfect["nmse"], 0) and np.allclose(perfect["correlation"], 1)
    mean_only = timeseries_eval.signal_metrics(x, np.broadcast_to(x.mean(axis=(0, 1)), x.shape))
    assert mean_only["nmse"].mean() == pytest.approx(1.0, rel=1e-6)
    t = np.arange(256) / 128.0
    wave = np.sin(2 * np.pi * 10 * t)[None, :, None]                 # 10 Hz at 128 Hz: all alpha power
    assert "band_power_db" not in timeseries_eval.signal_metrics(wave, wave, sample_rate=128.0)
    same = timeseries_eval.signal_metrics(wave, wave, sample_rate=128.0, bands=timeseries_eval.EEG_BANDS)
    assert same["band_power_db"][0] == pytest.approx(0.0, abs=1e-6)
    powers = timeseries_eval.band_powers(wave, 128.0)
    assert powers[0, 0].argmax() == 2 and powers[0, 0, 2] > 1e3 * powers[0, 0, [0, 1, 3, 4]].max()
    every = sum(np.sin(2 * np.pi * f * t) for f in (2, 6, 10, 20, 40))[None, :, None]    # power in every band
    bands = timeseries_eval.EEG_BANDS
    twice = timeseries_eval.signal_metrics(every, 2 * every, sample_rate=128.0, bands=bands)  # 4x the power: 6 dB
    assert twice["band_power_db"][0] == pytest.approx(10 * np.log10(4), rel=1e-4)
    # a band empty in both counts as equal: the sine's 6 dB error is its one band's, averaged over five
    one_band = timeseries_eval.signal_metrics(wave, 2 * wave, sample_rate=128.0, bands=bands)["band_power_db"][0]
    assert one_band == pytest.approx(10 * np.log10(4) / 5, rel=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        timeseries_eval.signal_metrics(x, x[:, :10])


def test_corruption_counts_what_still_decodes():
    tokens = [[1, 2, 3]] * 200
    assert timeseries_eval.corrupted_decodable(lambda s: np.ones(len(s), bool), tokens, 10, 0.5) == 1.0
    unchanged = timeseries_eval.corrupted_decodable(lambda s: np.array([q == [1, 2, 3] for q in s]), tokens, 1000,
                                                     0.1)
    assert unchanged == pytest.approx(0.9 ** 3, abs=0.08)


@pytest.mark.parametrize("field, value, match", [
    ("length", 30, r"config.length \(30\) must be a multiple of 4"),
    ("eval_levels", (9,), r"config.eval_levels must hold ints in \[1, 8\]"),
    ("fast_scales", (0.0,), "config.fast_scales must be positive"),
    ("corruption_rates", (1.5,), r"config.corruption_rates must lie in \(0, 1\)"),
])
def test_config_errors_name_the_field(field, value, match):
    from experiments_loader import load_experiment

    from vqjax.train import check_config

    c = load_experiment("action_tokenizer")
    c[field] = value
    with pytest.raises(ValueError, match=match):
        check_config(c)
    c = load_experiment("eeg_tokenizer")
    c.spectral_patch = 48
    with pytest.raises(ValueError, match=r"multiple of config.spectral_patch \(48\)"):
        check_config(c)
    c = load_experiment("action_tokenizer")
    c.quantizer, c.quantizer_kwargs = "fsq", {"levels": (5, 5)}
    c.model.latent_dim = 2
    with pytest.raises(ValueError, match="eval_levels applies to a residual quantizer"):
        check_config(c)


def test_the_downstream_classifier_reads_tokens_and_raw_series(tmp_path, devices):
    pytest.importorskip("aeon", reason="needs the vqjax[timeseries] extra")
    from experiments_loader import load_experiment

    c = load_experiment("motion_tokenizer", "runlocal")
    c.data_dir = str(tmp_path / "tfds")
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 2, 2, 2, 1
    c.fast_scales, c.corruption_rates = (2.0,), ()
    c.downstream_steps, c.eval_levels = 3, (1,)
    result = train_and_evaluate(c, str(tmp_path / "run"), progress=False, devices=devices[:1])
    assert 0 <= result["raw/accuracy"] <= 1
    # BasicMotions: 6 channels, 4x fewer positions, one code each
    assert result["vqjax 1q/compression"] == pytest.approx(6 * 4)
    assert 0 <= result["vqjax 1q/accuracy"] <= 1 and 0 <= result["vqjax 1q/accuracy_learned_embedding"] <= 1
    assert "with embeddings learned from scratch" in sequence_tokenizer.report(result, str(tmp_path / "run"))


def test_a_step_sharded_over_four_devices_equals_one_device(devices):
    """EMA codebooks, their k-means start and the spectral loss see the global batch: 4 devices, 1 result."""
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from vqjax.models import sequence_tokenizer as build
    from vqjax.train.core import data_mesh
    from vqjax.train.scaffold import TokenizerState

    model = build(channels=4, strides=(2, 2), latent_dim=4, signal_channels=3, mean=[0.0] * 3, scale=[1.0] * 3,
                  quantizer="vq", quantizer_kwargs=dict(codebook_size=8, codebook_learning="ema",
                                                        codebook_init="kmeans", dead_code_threshold=1.0))
    tx = optax.adam(1e-3)
    parts = sequence_tokenizer.StepParts(model, tx, 1.0, 1.0, 8)
    batch = jax.random.normal(jax.random.key(0), (8, 16, 3))
    variables = jax.jit(model.init)({"params": jax.random.key(1), "vq": jax.random.key(2)}, batch)
    state = TokenizerState(jnp.int32(0), variables["params"], variables["vq_stats"],
                                                  tx.init(variables["params"]), jax.random.key_data(jax.random.key(3)))
    step = functools.partial(sequence_tokenizer.train_step, parts)
    results = []
    for devs in (devices[:1], devices[:4]):
        replicated, sharded = data_mesh({"batch_size": 8}, devs)
        run = jax.jit(step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))
        s = state
        for _ in range(2):
            s, metrics = run(s, batch)
        results.append((s, metrics))
    (one, m1), (four, m4) = results
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves((one.params, one.vq_stats)), jax.tree.leaves((four.params, four.vq_stats))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_action_tokens_join_the_multimodal_vocabulary(action_run):
    """A time-series tokenizer is a modality of the LM bridge: text and action chunks in one id stream, decoded
    back to the same codes and the tokenizer's reconstruction."""
    import vqjax
    from vqjax.lm import MultimodalVocab
    from vqjax.lm.text import train_bpe

    _, workdir, _ = action_run
    tok = vqjax.Tokenizer.load(workdir)
    vocab = MultimodalVocab.build(train_bpe(["push the puck to the goal"] * 4, 300), {"actions": tok})
    chunk = timeseries.pusher_actions("test", episodes={"test": 1}).signals[0, :32]
    ids = vocab.encode(["push the puck", ("actions", chunk)])
    start, stop = vocab.range("actions")
    assert np.sum((ids >= start) & (ids < stop)) == 16                 # 8 positions x 2 levels
    out = vocab.decode(ids)
    codes = np.asarray(tok.encode(chunk[None]))[0]
    assert out[0].text == "push the puck" and out[1].modality == "actions"
    np.testing.assert_array_equal(out[1].codes, codes)
    np.testing.assert_allclose(out[1].data, np.asarray(tok.decode(codes[None]))[0], rtol=1e-6)
