"""Loading is safe for folders from strangers: each refusal the artifact format promises, with its message naming
the file and the field, and a property-based test that mutates specs and weight files and finds that every
mutation either loads a consistent tokenizer or ends in that clear error (never another exception, a hang or an
allocation blow-up)."""

import json
import os
import re
import shutil
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizers import image_tokenizer, item_tokenizer

import vqjax
from vqjax.tokenizers import ArtifactError, Limits, fingerprint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_tokenizer().export(str(tmp_path_factory.mktemp("safe") / "tok"))


def _copy(folder, tmp_path, name="t"):
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def _spec(path):
    return json.load(open(path / "spec.json"))


def _write_spec(path, spec):
    (path / "spec.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("change, field, message", [
    (lambda s: s["model"].update(name="os.system"), "model.name", "must be one of vqjax's models"),
    (lambda s: s.update(shell="rm -rf /"), "shell", "unknown field"),
    (lambda s: s.update(format_version=3), "format_version", "newer than this vqjax reads"),
    (lambda s: s["model"]["kwargs"].update(channels="8"), "model.kwargs.channels", "must be int; got '8'"),
    (lambda s: s["model"]["kwargs"].update(callback="x"), "model.kwargs.callback", "unknown argument"),
    (lambda s: s["model"]["kwargs"]["quantizer_kwargs"].update(codebook_size=2.5),
     "model.kwargs.quantizer_kwargs.codebook_size", "must be int"),
    (lambda s: s["model"]["kwargs"].update(channels=1 << 22, latent_dim=1 << 20), "model", "parameters, more than"),
    (lambda s: s["model"]["kwargs"].update(num_res_blocks=100000), "model.kwargs.num_res_blocks",
     "repeated layers"),
    (lambda s: s["files"].update(weights="../../etc/passwd"), "files.weights", "plain file name inside the folder"),
    (lambda s: s.update(kbps=3.0), "kbps", "is a field of ['audio'] tokenizers"),
    (lambda s: s.update(vocab_size=True), "vocab_size", "must be of type int"),
    (lambda s: s["input"].update(range=[1.0, 0.0]), "input.range", "must be [low, high]"),
])
def test_a_spec_refusal_names_the_file_and_the_field(folder, tmp_path, change, field, message):
    path = _copy(folder, tmp_path)
    spec = _spec(path)
    change(spec)
    _write_spec(path, spec)
    start = time.perf_counter()
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        vqjax.Tokenizer.load(str(path))
    assert err.value.field == field and err.value.file.endswith("spec.json") and str(path) in str(err.value)
    assert time.perf_counter() - start < 30                          # refused before building anything large


def test_weights_of_other_names_shapes_or_dtypes_and_a_changed_value_are_refused(folder, tmp_path):
    from safetensors.numpy import load_file, save_file

    weights = load_file(os.path.join(folder, "model.safetensors"))
    key = sorted(k for k in weights if k.endswith("kernel"))[0]
    for name, edit, message in (
            ("shape", lambda w: w.update({key: w[key][..., :1]}), rf"{key}: float32 .*; the model has float32"),
            ("dtype", lambda w: w.update({key: w[key].astype(np.float64)}), rf"{key}: float64"),
            ("name", lambda w: w.update({"params/evil": np.zeros(3, np.float32)}), "hold unknown"),
            ("missing", lambda w: w.pop(key), "the weights lack")):
        path = _copy(folder, tmp_path, name)
        w = dict(weights)
        edit(w)
        save_file(w, str(path / "model.safetensors"))
        with pytest.raises(ArtifactError, match=message) as err:
            vqjax.Tokenizer.load(str(path))
        assert err.value.file.endswith("model.safetensors"), name
    path = _copy(folder, tmp_path, "value")
    save_file({**weights, key: weights[key] + 1.0}, str(path / "model.safetensors"))
    with pytest.raises(ArtifactError, match="fingerprint: .* does not match the loaded weights"):
        vqjax.Tokenizer.load(str(path))


def test_a_link_out_of_the_folder_and_a_table_at_odds_with_the_spec_are_refused(folder, tmp_path):
    from safetensors.numpy import save_file

    path = _copy(folder, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(path / "model.safetensors", outside)
    os.remove(path / "model.safetensors")
    os.symlink(outside, path / "model.safetensors")
    with pytest.raises(ArtifactError, match="resolves outside the folder"):
        vqjax.Tokenizer.load(str(path))
    items = item_tokenizer().export(str(tmp_path / "items"))
    save_file({"codes": np.array([[0, 0], [0, 5]], np.int32)}, os.path.join(items, "table.safetensors"))
    with pytest.raises(ArtifactError, match=r"table.safetensors: codes: int32 \(2, 2\); the spec has 6 items"):
        vqjax.Tokenizer.load(items)


def test_a_tighter_limit_refuses_a_model_the_default_admits(folder):
    assert vqjax.Tokenizer.load(folder).vocab_size == 16
    with pytest.raises(ArtifactError, match="parameters, more than the limit of 100"):
        vqjax.Tokenizer.load(folder, limits=Limits(max_params=100))


# -- mutations -------------------------------------------------------------------------------------------------
def _paths(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, prefix + (i,))
    yield prefix


REPLACEMENTS = st.one_of(st.none(), st.booleans(), st.integers(-2, 10), st.sampled_from([10 ** 12, -1, 2 ** 40]),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                         st.sampled_from(["../x", "/etc/passwd", "rvq", "audio", "image_tokenizer"]),
                         st.lists(st.integers(0, 3), max_size=3), st.just({}), st.just({"a": 1}))


@st.composite
def spec_mutation(draw, spec):
    spec = json.loads(json.dumps(spec))
    paths = [p for p in _paths(spec) if p]
    path = draw(st.sampled_from(paths))
    parent = spec
    for k in path[:-1]:
        parent = parent[k]
    kind = draw(st.sampled_from(["replace", "delete", "add", "scale"]))
    if kind == "delete":
        parent.pop(path[-1]) if isinstance(parent, dict) else parent.pop(path[-1])
    elif kind == "add" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=6))] = draw(REPLACEMENTS)
    elif kind == "scale" and isinstance(parent[path[-1]], int) and not isinstance(parent[path[-1]], bool):
        parent[path[-1]] = parent[path[-1]] * draw(st.sampled_from([0, -1, 7, 1000, 10 ** 9]))
    else:
        parent[path[-1]] = draw(REPLACEMENTS)
    return spec


@st.composite
def bytes_mutation(draw, data: bytes):
    data = bytearray(data)
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    kind = draw(st.sampled_from(["truncate", "flip_header", "flip_data", "length", "append"]))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "flip_header":
        at = draw(st.integers(8, 8 + length - 1))
        data[at] = draw(st.integers(0, 255))
    elif kind == "flip_data":
        at = draw(st.integers(8 + length, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    elif kind == "length":
        data[:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, length - 1, length + 1, 2 ** 63, len(data)])))
    else:
        data += bytes(draw(st.integers(1, 16)))
    return bytes(data)


def _load_or_refuse(path):
    """Loads the folder or returns the refusal; any other exception fails the test. A loaded tokenizer must
    be what its spec's fingerprint says (when the mutated spec still has one)."""
    start = time.perf_counter()
    try:
        tok = vqjax.Tokenizer.load(str(path), limits=Limits(max_params=50_000_000))
    except (ArtifactError, FileNotFoundError) as err:
        assert str(err)
        return err
    finally:
        assert time.perf_counter() - start < 20, "loading took too long"
    assert tok.spec.get("fingerprint") in (None, fingerprint(tok))      # a spec without one: format 1's way
    return tok


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_every_spec_mutation_loads_consistently_or_is_refused_clearly(folder, tmp_path_factory, data):
    path = _copy(folder, tmp_path_factory.mktemp("mut"))
    _write_spec(path, data.draw(spec_mutation(_spec(path))))
    _load_or_refuse(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_every_weights_mutation_is_refused_clearly(folder, tmp_path_factory, data):
    path = _copy(folder, tmp_path_factory.mktemp("mutw"))
    raw = open(path / "model.safetensors", "rb").read()
    mutated = data.draw(bytes_mutation(raw))
    (path / "model.safetensors").write_bytes(mutated)
    _load_or_refuse(path)              # loaded only when the arrays are those the fingerprint names


def test_a_registered_modality_loads_with_its_own_spec_fields(tmp_path):
    import dataclasses

    from vqjax.tokenizers import base
    from vqjax.tokenizers.image import ImageTokenizer

    if "sketch" not in base._CLASSES:
        @base.register_tokenizer("sketch")
        @dataclasses.dataclass(frozen=True)
        class SketchTokenizer(ImageTokenizer):
            SPEC_FIELDS = {"pen": str}
    tok = image_tokenizer()
    sketch = vqjax.Tokenizer({**tok.spec, "modality": "sketch", "pen": "ink"}, tok.model, tok.variables)
    loaded = vqjax.Tokenizer.load(sketch.export(str(tmp_path / "sketch")))
    assert loaded.modality == "sketch" and loaded.spec["pen"] == "ink"
    spec = _spec(tmp_path / "sketch")
    _write_spec(tmp_path / "sketch", {**spec, "pen": 3})
    with pytest.raises(ArtifactError, match="pen: must be of type str"):
        vqjax.Tokenizer.load(str(tmp_path / "sketch"))


def test_pickled_arrays_and_deeply_nested_json_are_refused(folder, tmp_path):
    """An npz table holding a pickled object array is never unpickled; JSON nested past the parser's limit is
    refused like any malformed spec."""
    items = tmp_path / "items"
    item_tokenizer().export(str(items))
    spec = _spec(items)
    spec["files"].pop("table")                          # the format-1 way: item_ids.npz
    _write_spec(items, spec)
    os.remove(items / "table.safetensors")
    np.savez(items / "item_ids.npz", codes=np.array([{"evil": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match=r"item_ids.npz: arrays: not readable as plain arrays"):
        vqjax.Tokenizer.load(str(items))
    path = _copy(folder, tmp_path, "nested")
    (path / "spec.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match=r"spec.json: spec: not valid JSON"):
        vqjax.Tokenizer.load(str(path))
