"""Sharing tokenizers the way model hubs expect: a folder with a model card, resolved by hub name or path.

    tok.save_pretrained("mnist-vq")                       # spec.json, model.safetensors, README.md (model card)
    tok = vqjax.Tokenizer.from_pretrained("mnist-vq")     # a folder: nothing else needed
    tok = vqjax.Tokenizer.from_pretrained("org/mnist-vq", revision="v1")    # a hub repository (the hub extra)
    tok.push_to_hub("org/mnist-vq")

A name that is not an existing folder is a hub repository id, resolved through ``huggingface_hub`` (``pip install
'vqjax[hub]'``): ``snapshot_download`` into the hub cache, ``revision`` a branch, tag or commit. Nothing is
downloaded unless asked: ``local_files_only=None`` (the default) reads only what the cache already holds, unless
the environment sets ``VQJAX_HUB_DOWNLOAD=1``; ``local_files_only=False`` downloads. The model card's YAML header
and sections are built from the spec (modality, input, codes, rates, vocabulary, training data) and the run's
final metrics (the held-out evaluation at the exported step, read from the training workdir's ``metrics.jsonl``,
kept in the spec's ``card`` field so that a re-saved folder keeps them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

__all__ = ["CARD_FILE", "card_info", "model_card", "push_folder", "resolve"]

CARD_FILE = "README.md"
DOWNLOAD_ENV = "VQJAX_HUB_DOWNLOAD"


def resolve(name_or_dir: str, *, revision: str | None = None, local_files_only: bool | None = None,
            cache_dir: str | None = None) -> str:
    """The local folder of ``name_or_dir``: the folder itself, or the hub repository's snapshot in the cache.

    Raises:
      FileNotFoundError: a repository the cache does not hold when downloads are off (the message says how to
        allow them); ImportError: a hub name without ``huggingface_hub`` installed.
    """
    path = os.path.expanduser(name_or_dir)
    if os.path.isdir(path):
        return os.path.abspath(path)
    if revision is not None and not isinstance(revision, str):
        raise ValueError(f"revision must be a branch, tag or commit string; got {revision!r}")
    try:
        import huggingface_hub  # optional dependency (the hub extra)
        from huggingface_hub.errors import LocalEntryNotFoundError  # optional dependency (the hub extra)
    except ImportError as err:
        raise ImportError(f"{name_or_dir!r} is not a folder; loading it from a model hub needs huggingface_hub: "
                          f"pip install 'vqjax[hub]'") from err
    if local_files_only is None:
        local_files_only = os.environ.get(DOWNLOAD_ENV, "") != "1"
    try:
        return huggingface_hub.snapshot_download(name_or_dir, revision=revision, cache_dir=cache_dir,
                                                 local_files_only=local_files_only)
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(f"{name_or_dir!r} is neither a folder nor a repository in the hub cache"
                                f"{'' if revision is None else f' at revision {revision!r}'}; pass "
                                f"local_files_only=False (or set {DOWNLOAD_ENV}=1) to download it") from err


def card_info(spec: Mapping, workdir: str | None, step: int | None) -> dict:
    """The model card's facts beyond the spec: the run's final held-out metrics at ``step`` (the last ``test``
    record of ``workdir/metrics.jsonl``, else the last ``eval`` one at or before ``step``), or the spec's own
    ``card`` when the workdir has none."""
    card = dict(spec.get("card") or {})
    file = None if workdir is None else os.path.join(workdir, "metrics.jsonl")
    if file is None or not os.path.exists(file):
        return card
    best = {}
    with open(file) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("split") not in ("test", "eval"):
                continue
            if step is not None and record.get("step", 0) > step:
                continue
            best[record["split"]] = record
    chosen = best.get("test") or best.get("eval")
    if chosen:
        metrics = {k: v for k, v in chosen.items() if k not in ("step", "split") and isinstance(v, (int, float))}
        card.update({"metrics": metrics, "metrics_split": chosen["split"], "metrics_step": chosen.get("step")})
    return card


def _rate(spec: Mapping) -> list[str]:
    out = []
    for key, label in (("tokens_per_second", "tokens per second"), ("sample_rate", "sample rate (Hz)"),
                       ("frame_rate", "frames per second"), ("kbps", "bitrate (kbps)"),
                       ("bits_per_pixel", "bits per pixel")):
        if spec.get(key) is not None:
            out.append(f"| {label} | {spec[key]:g} |")
    return out


def model_card(spec: Mapping, *, name: str | None = None) -> str:
    """The ``README.md`` of a tokenizer folder: a YAML header (library, tags, datasets, metrics) and what the
    tokenizer reads and writes, its rates and vocabulary, its training data and final metrics, how to load it."""
    card = spec.get("card") or {}
    modality = spec["modality"]
    title = name or f"vqjax {modality} tokenizer"
    dataset = spec.get("dataset")
    lines = ["---", "library_name: vqjax", "tags:", "- vqjax", "- tokenizer", f"- {modality}"]
    if dataset:
        lines += ["datasets:", f"- {dataset}"]
    lines += ["---", "", f"# {title}", "",
              f"A {modality} tokenizer trained with vqjax: it turns {modality} input into discrete codes a language "
              f"model can read and write, and decodes codes back.", "",
              "| | |", "| --- | --- |",
              f"| modality | {modality} |",
              f"| model | `{spec['model']['name']}` |",
              f"| input shape (one example) | {spec['input'].get('shape')} |",
              f"| input range | {spec['input'].get('range')} |",
              f"| codes shape (one example) | {spec['codes_shape']} |",
              f"| vocabulary (values of one code) | {spec['vocab_size']} |",
              *_rate(spec),
              f"| training data | {dataset or 'not recorded'} |",
              f"| training step | {spec.get('step')} |",
              f"| fingerprint | `{spec.get('fingerprint', '')[:16]}` |", ""]
    metrics = card.get("metrics")
    if metrics:
        lines += [f"Final metrics ({card.get('metrics_split')} split, step {card.get('metrics_step')}):", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items())]
        lines.append("")
    lines += ["## Use", "", "```python", "import vqjax", "",
              f"tok = vqjax.Tokenizer.from_pretrained({(name or 'PATH_OR_REPO_ID')!r})",
              "codes = tok.encode(batch)", "batch = tok.decode(codes)", "```", "",
              "Loading checks every file (no code runs from it); the weights are safetensors.", ""]
    return "\n".join(lines)


def push_folder(folder: str, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | None = None, commit_message: str = "Upload vqjax tokenizer") -> str:
    """Uploads ``folder`` to the hub repository ``repo_id`` (created when missing); returns the commit's URL."""
    try:
        from huggingface_hub import HfApi  # optional dependency (the hub extra)
    except ImportError as err:
        raise ImportError("push_to_hub needs huggingface_hub: pip install 'vqjax[hub]'") from err
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
