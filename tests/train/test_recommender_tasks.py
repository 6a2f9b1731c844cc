"""The semantic-ID, generative-retrieval and SASRec tasks end to end on a small MovieLens-like catalogue, the
semantic-ID artifact (stable, exported, new items, refusals) and the shared ranking harness."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from recsys_data import write_mock_movielens  # noqa: E402

import vqjax
from vqjax.evals import recommendation as recsys_eval
from vqjax.train.tasks import generative_retrieval, recommender, sasrec, semantic_ids


def _ids_config(root):
    c = semantic_ids.runlocal(semantic_ids.default_config())
    c.data_root = root
    c.cold_fraction = 0.2
    c.cf.steps, c.cf.batch_size, c.content_dim, c.cf.dim = 50, 256, 8, 8
    c.quantizer_kwargs.update(num_levels=2, codebook_size=8)
    c.disambiguation_size = 16
    c.batch_size, c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 16, 20, 20, 20, 10
    return c


@pytest.fixture(scope="module")
def ids_run(tmp_path_factory, one):
    from vqjax.train import train_and_evaluate

    root = write_mock_movielens(str(tmp_path_factory.mktemp("ml")))
    workdir = str(tmp_path_factory.mktemp("ids"))
    config = _ids_config(root)
    result = train_and_evaluate(config, workdir, devices=one, progress=False)
    return root, workdir, config, result


def test_semantic_ids_are_collision_free_stable_and_round_trip(ids_run, tmp_path, one):
    from vqjax.train import train_and_evaluate

    root, workdir, config, result = ids_run
    assert result["collision_rate"] == 0.0 and result["extra_level_collision_rate"] == 0.0
    assert result["num_items"] == 60 and result["code_length"] == 3
    for name in ("item_ids.npz", "id_table.tsv", "collisions.json", "semantic_ids.png", "featurizer.npz"):
        assert os.path.exists(os.path.join(workdir, name)), name
    tok = vqjax.Tokenizer.load(workdir)
    assert isinstance(tok, vqjax.SemanticIdTokenizer) and tok.modality == "item"
    assert tok.codes_shape == (3,) and tok.level_sizes == (8, 8, 16) and tok.vocab_size == 16
    every = np.arange(60)
    codes = tok.encode(every)
    np.testing.assert_array_equal(tok.decode(codes), every)
    assert len(np.unique(codes, axis=0)) == 60
    exported = vqjax.Tokenizer.load(tok.export(str(tmp_path / "artifact")))
    np.testing.assert_array_equal(exported.encode(every), codes)
    # the same config and seed in another workdir: the same IDs
    again = str(tmp_path / "again")
    train_and_evaluate(config, again, devices=one, progress=False)
    np.testing.assert_array_equal(vqjax.Tokenizer.load(again).encode(every), codes)


def test_new_items_get_ids_without_changing_the_old_ones(ids_run):
    tok = vqjax.Tokenizer.load(ids_run[1])
    bigger = tok.add_items(["Star night 99", "Star night 98", "Love river 97"], [1990, 1990, 0],
                           [["Action"], ["Action"], ["Romance", "Drama"]])
    assert bigger.num_items == 63
    np.testing.assert_array_equal(bigger.encode(np.arange(60)), tok.item_codes)
    new = bigger.encode([60, 61, 62])
    np.testing.assert_array_equal(bigger.decode(new), [60, 61, 62])
    assert len(np.unique(bigger.item_codes, axis=0)) == 63
    with pytest.raises(ValueError, match="one length"):
        tok.add_items(["a"], [1990, 1991], [["Drama"]])


def test_semantic_id_tokenizer_refuses_bad_input(ids_run):
    tok = vqjax.Tokenizer.load(ids_run[1])
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 60\)"):
        tok.encode([3, 60])
    with pytest.raises(TypeError, match="integers"):
        tok.encode([1.0])
    free = next(t for t in np.ndindex(*tok.level_sizes) if tuple(t) not in {tuple(r) for r in tok.item_codes})
    with pytest.raises(ValueError, match="name no item"):
        tok.decode(np.asarray([free]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\)"):
        tok.decode(np.asarray([[0, 0, 16]]))
    with pytest.raises(ValueError, match=r"integer \[\.\.\., 3\]"):
        tok.decode(np.asarray([[0, 0]]))


def test_a_catalogue_larger_than_the_code_space_is_refused(ids_run, tmp_path, one):
    from vqjax.train import train_and_evaluate

    c = _ids_config(ids_run[0])
    c.quantizer_kwargs.update(num_levels=1, codebook_size=4)
    c.disambiguation_size = 8
    with pytest.raises(ValueError, match="more than the 32 tuples of the code space"):
        train_and_evaluate(c, str(tmp_path / "small"), devices=one, progress=False)


def test_semantic_ids_join_the_lm_vocabulary(ids_run):
    from vqjax.lm import MultimodalVocab
    from vqjax.lm.text import train_bpe

    tok = vqjax.Tokenizer.load(ids_run[1])
    vocab = MultimodalVocab.build(train_bpe(["the user watched next"] * 4, 300), {"item": tok})
    ids = vocab.encode(["the user watched", ("item", 7)])
    out = vocab.decode(ids)
    assert out[1].modality == "item" and int(out[1].data) == 7
    np.testing.assert_array_equal(out[1].codes, tok.encode(7))
    np.testing.assert_array_equal(vocab.valid_rows("item"), tok.item_codes)


def _rec_config(kind, root, ids_path=None):
    if kind == "sasrec":
        c = sasrec.runlocal(sasrec.default_config())
    else:
        c = generative_retrieval.runlocal(generative_retrieval.default_config())
        c.semantic_ids = _ids_config(root)
        c.ids, c.ids_path = kind, ids_path
    c.data_root, c.cold_fraction = root, 0.2
    c.batch_size, c.eval_batch_size, c.max_eval_users = 16, 16, None
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 10, 10, 10
    return c


def test_generative_retrieval_and_baselines_share_one_harness(ids_run, tmp_path, one):
    from vqjax.train import train_and_evaluate

    root, ids_workdir, _, _ = ids_run
    runs = {}
    for kind in ("semantic", "random", "sasrec"):
        workdir = str(tmp_path / kind)
        result = train_and_evaluate(_rec_config(kind, root, ids_workdir), workdir, devices=one, progress=False)
        assert result["users"] == 40 and 0.0 <= result["ndcg@10"] <= result["recall@10"] <= 1.0
        assert result["cold_users"] > 0 and "cold/recall@10" in result
        assert os.path.exists(os.path.join(workdir, "retrieval.png"))
        runs[kind] = workdir
    splits = semantic_ids.load_split(_rec_config("semantic", root))
    for kind in ("semantic", "sasrec"):                     # the trained recommender, reloaded from its workdir
        rank = recommender.load_ranker(runs[kind])
        top = rank(splits.test_history[:5])
        assert top.shape == (5, 10) and ((top >= 0) & (top < 60)).all()
        metrics = recsys_eval.evaluate_ranker(rank, splits, "test", max_items=8 if kind == "semantic" else 10,
                                              batch_size=16)
        saved = recsys_eval.read_result(runs[kind])["test"]
        assert metrics["recall@10"] == pytest.approx(saved["recall@10"])
    with pytest.raises(ValueError, match="'semantic_ids' run"):
        recommender.load_ranker(ids_workdir)
    table = recsys_eval.compare_runs(list(runs.values()), str(tmp_path / "compare.png"))
    assert "| popularity |" in table and "SASRec (ce)" in table and "random IDs" in table
    assert os.path.exists(tmp_path / "compare.png")


def test_retrieval_config_errors(ids_run, tmp_path, one):
    from vqjax.train import train_and_evaluate

    root, ids_workdir, _, _ = ids_run
    c = _rec_config("semantic", root, ids_workdir)
    c.beam_size = 5
    with pytest.raises(ValueError, match="beam_size"):
        train_and_evaluate(c, str(tmp_path / "a"), devices=one, progress=False)
    c = _rec_config("semantic", root, ids_workdir)
    c.cold_fraction = 0.3                                     # the IDs were made on another split
    with pytest.raises(ValueError, match="were made on split"):
        train_and_evaluate(c, str(tmp_path / "b"), devices=one, progress=False)
    c = _rec_config("sasrec", root)
    c.loss = "hinge"
    with pytest.raises(ValueError, match="config.loss must be one of"):
        train_and_evaluate(c, str(tmp_path / "c"), devices=one, progress=False)


def test_ranking_metrics_by_hand():
    ranked = np.asarray([[5, 3, 9, 1, 2, 0, 4, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [9] * 10])
    m = recsys_eval.ranking_metrics(ranked, np.asarray([3, 0, 1]))
    assert m["recall@5"] == pytest.approx(1 / 3) and m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 / np.log2(3)) / 3)
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(11)) / 3)
    with pytest.raises(ValueError, match="history 1 is empty"):
        recsys_eval.history_matrix([np.asarray([1]), np.asarray([], np.int32)], 3)
