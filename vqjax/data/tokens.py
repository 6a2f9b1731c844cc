"""Token shards: a dataset's codes as array_record files with a manifest, read back as a grain data source.

``python -m vqjax.tokenize`` writes them (see :mod:`vqjax.tokenize`); the ``lm`` task trains on them. A folder of
shards holds ``tokens-00000-of-000NN.array_record`` files and ``manifest.json``:

* each record is one example, msgpack-encoded (no pickle): ``codes`` (int32, the tokenizer's codes of the
  example, ``codes_shape`` with its variable axis cut to the example's length), ``length`` (the extent of that
  axis, where lengths vary), ``key`` (the source example's key or index), and ``caption`` / ``label`` when the
  dataset has them;
* the manifest states the tokenizer (``fingerprint``, :func:`~vqjax.tokenizers.fingerprint`; ``modality``,
  ``vocab_size``, ``codes_shape``, ``tokens_per_second``, and ``tokenizer``, the path it was read from), the
  source (``dataset``, ``split``, ``examples``, the ``features`` mapping and ``files`` options), the ``shards`` (file, records, tokens, longest length, bytes, sha256), the longest example's length
  (``max_length``, where lengths vary) and the vqjax version. ``complete`` is true once every shard is written.

A shard is written to ``NAME.partial`` and renamed when complete, so a shard file that exists is whole.
:class:`TokenShards` refuses an incomplete manifest, a missing shard and a shard whose record count or size
differs from the manifest (and, with ``verify=True``, whose checksum does).
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import flax.serialization
import numpy as np

__all__ = [
    "MANIFEST_FILE",
    "TOKENS_FORMAT",
    "TokenShards",
    "decode_record",
    "encode_record",
    "file_sha256",
    "read_manifest",
    "shard_name",
    "write_manifest",
    "write_shard",
]

MANIFEST_FILE = "manifest.json"
TOKENS_FORMAT = "vqjax-token-shards/1"


def shard_name(index: int, count: int) -> str:
    """``tokens-IIIII-of-NNNNN.array_record``."""
    return f"tokens-{index:05d}-of-{count:05d}.array_record"


def encode_record(codes: np.ndarray, *, key: str, length: int | None = None, caption: str | None = None,
                  label: int | None = None) -> bytes:
    """One example's record (msgpack; the same inputs give the same bytes)."""
    record: dict[str, Any] = {"codes": np.ascontiguousarray(np.asarray(codes, np.int32)), "key": str(key)}
    if length is not None:
        record["length"] = int(length)
    if caption is not None:
        record["caption"] = str(caption)
    if label is not None:
        record["label"] = int(label)
    return flax.serialization.msgpack_serialize(record)


def decode_record(raw: bytes) -> dict:
    """The dict :func:`encode_record` wrote."""
    return flax.serialization.msgpack_restore(raw)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(path: str, records: Iterable[bytes]) -> dict:
    """Writes ``records`` to ``path + '.partial'``, then renames it to ``path``. Returns the shard's manifest
    entry: ``{'file', 'records', 'bytes', 'sha256'}``."""
    from array_record.python import array_record_module  # heavy import, needed only when writing shards

    partial = path + ".partial"
    writer = array_record_module.ArrayRecordWriter(partial, "group_size:1")
    count = 0
    try:
        for raw in records:
            writer.write(raw)
            count += 1
    finally:
        writer.close()
    os.replace(partial, path)
    return {"file": os.path.basename(path), "records": count, "bytes": os.path.getsize(path),
            "sha256": file_sha256(path)}


def read_manifest(folder: str) -> dict | None:
    """``folder/manifest.json`` as a dict, or None when there is none."""
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        manifest = json.load(fh)
    if manifest.get("format") != TOKENS_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {TOKENS_FORMAT!r}")
    return manifest


def write_manifest(folder: str, manifest: dict) -> str:
    """Writes ``folder/manifest.json`` atomically (a temporary file renamed)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MANIFEST_FILE)
    with open(path + ".tmp", "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(path + ".tmp", path)
    return path


class TokenShards(collections.abc.Sequence):
    """The records of a folder of token shards, in shard order: a random-access grain data source whose items
    are the dicts of :func:`decode_record`.

    Args:
      folder: what ``python -m vqjax.tokenize --out`` wrote.
      verify: also check every shard's sha256 against the manifest (reads every byte once).

    Raises:
      FileNotFoundError: no manifest, or a shard file missing.
      ValueError: an incomplete manifest (the tokenize run has not finished), or a shard whose record count,
        size or checksum differs from the manifest.
    """

    def __init__(self, folder: str, *, verify: bool = False):
        from array_record.python import array_record_data_source  # heavy import, needed only to read shards

        self.folder = os.path.abspath(os.path.expanduser(folder))
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise FileNotFoundError(f"{self.folder}: no {MANIFEST_FILE} (write token shards with "
                                    f"`python -m vqjax.tokenize ... --out={folder}`)")
        if not manifest.get("complete"):
            raise ValueError(f"{self.folder}/{MANIFEST_FILE}: the shards are incomplete (rerun the tokenize command "
                             f"to finish them)")
        paths = []
        for entry in manifest["shards"]:
            path = os.path.join(self.folder, entry["file"])
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: a shard the manifest lists is missing")
            if os.path.getsize(path) != entry["bytes"] or (verify and file_sha256(path) != entry["sha256"]):
                raise ValueError(f"{path}: the shard differs from {MANIFEST_FILE} (size or sha256); it was changed "
                                 f"after the tokenize run")
            paths.append(path)
        self.manifest = manifest
        self._source = array_record_data_source.ArrayRecordDataSource(paths) if paths else []
        expected = sum(int(e["records"]) for e in manifest["shards"])
        if len(self._source) != expected:
            raise ValueError(f"{self.folder}: the shards hold {len(self._source)} records; {MANIFEST_FILE} says "
                             f"{expected}")

    @property
    def tokenizer(self) -> dict:
        """The manifest's tokenizer fields: ``fingerprint``, ``modality``, ``vocab_size``, ``codes_shape``,
        ``tokens_per_second`` and ``path`` (where it was read from)."""
        m = self.manifest
        return {"fingerprint": m["fingerprint"], "modality": m["modality"], "vocab_size": m["vocab_size"],
                "codes_shape": m["codes_shape"], "tokens_per_second": m["tokens_per_second"],
                "path": m["tokenizer"]}

    @property
    def modality(self) -> str:
        return self.manifest["modality"]

    def check_tokenizer(self, tokenizer, fingerprint: str, name: str = "tokenizer") -> None:
        """Refuses a tokenizer whose fingerprint differs from the one that wrote the shards."""
        if fingerprint != self.tokenizer["fingerprint"]:
            raise ValueError(f"{self.folder}: the shards were written by tokenizer {self.tokenizer['path']!r} "
                             f"(fingerprint {self.tokenizer['fingerprint'][:12]}); {name} has fingerprint "
                             f"{fingerprint[:12]}")

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"TokenShards: index {i} out of range for {len(self)} records")
        return decode_record(self._source[int(i) % len(self)])

    def __repr__(self) -> str:
        return (f"TokenShards({self.folder!r}: {len(self)} records of {self.modality} codes, "
                f"{len(self.manifest['shards'])} shards)")
