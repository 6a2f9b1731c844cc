"""Writes the tokens of a dataset split for language-model training.

    python -m vqjax.tokenize --workdir=runs/mnist_vq --split=test --out=tokens.npz

The ``.npz`` holds ``codes`` (int32 ``[N, *codes_shape]``), ``labels`` (when the dataset has them),
``vocab_size`` and ``codes_shape``. ``--dataset`` reads another dataset with the same image shape (for example
``vqjax_opencv_digits`` is 20x20 and needs its own tokenizer).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags
from tqdm.auto import tqdm

from vqjax.data import pipeline
from vqjax.tokenizers import Tokenizer
from vqjax.train.config import default_data_dir

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training workdir (vqjax.Tokenizer.load)")
flags.DEFINE_string("split", "test", "dataset split to tokenize")
flags.DEFINE_string("out", None, "output .npz file")
flags.DEFINE_string("dataset", None, "dataset name (default: the one the tokenizer was trained on)")
flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the training config's, else VQJAX_DATA_DIR)")
flags.DEFINE_integer("batch_size", 256, "images per encode call")
flags.mark_flags_as_required(["workdir", "out"])


def tokenize_split(workdir: str, split: str, out: str, *, dataset: str | None = None, data_dir: str | None = None,
                   batch_size: int = 256) -> dict:
    """Encodes every image of ``split`` with the tokenizer in ``workdir`` and saves them to ``out`` (.npz)."""


    tok = Tokenizer.load(workdir)
    with open(os.path.join(workdir, "config.json")) as fh:
        config = json.load(fh)
    source = pipeline.get_source(dataset or config["dataset"], split,
                                 data_dir or config.get("data_dir") or default_data_dir())
    codes, labels = [], []
    for batch in tqdm(pipeline.eval_batches(source, batch_size=batch_size), desc="tokenize", unit="batch"):
        keep = batch["mask"] > 0
        codes.append(np.asarray(tok.encode(batch["image"]))[keep])
        if "label" in batch:
            labels.append(batch["label"][keep])
    arrays = {"codes": np.concatenate(codes).astype(np.int32), "vocab_size": np.int64(tok.vocab_size),
              "codes_shape": np.asarray(tok.codes_shape, np.int64)}
    if labels:
        arrays["labels"] = np.concatenate(labels)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, **arrays)
    return {"out": out, "num": int(arrays["codes"].shape[0]), "codes_shape": list(tok.codes_shape),
            "vocab_size": tok.vocab_size}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(json.dumps(tokenize_split(FLAGS.workdir, FLAGS.split, FLAGS.out, dataset=FLAGS.dataset,
                                    data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size)))


if __name__ == "__main__":
    app.run(main)
