"""Strict reading of the project's checkpoint directories: a JSON document naming its format and version beside a
safetensors file whose keys, shapes and dtypes must match the model built from that document.

Every failure raises the caller's error class with a message that names the file, what was found and what was
expected. No pickles: weights are safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


def read_format_doc(path: Path, fmt: str, version: int, error: type[ValueError], holds: str) -> dict[str, Any]:
    """The JSON document at `path`, checked to be a dict of format `fmt` and version `version`.

    holds: what a valid checkpoint directory holds, for the not-found message ("detector.json and ...")."""
    if not path.is_file():
        raise error(f"{path} not found: {holds}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise error(f"{path}: format {found!r}, expected {fmt!r}")
    if doc.get("format_version") != version:
        raise error(f"{path}: format_version {doc.get('format_version')!r}, this code reads version {version}")
    return doc


def load_weights_strict(weights: Path, module: nn.Module, error: type[ValueError]) -> None:
    """Load `weights` (safetensors) into `module`: every key present and no other, each shape and dtype as the
    module's, every floating value finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise error(f"{weights} not found")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise error(f"{weights} is not a safetensors file: {e}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise error(
            f"{weights}: keys do not match the config; missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    for key, value in state.items():
        want = expected[key]
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise error(
                f"{weights}: {key} has shape {tuple(value.shape)} {value.dtype}; "
                f"the config needs {tuple(want.shape)} {want.dtype}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise error(f"{weights}: {key} holds NaN or inf")
    module.load_state_dict(state, strict=True)


def write_checkpoint(
    directory: Path | str,
    module: nn.Module,
    weights_file: str,
    metadata: dict[str, str],
    config_file: str,
    doc: dict[str, Any],
    *,
    digest_key: str | None = None,
) -> Path:
    """Write `module`'s state dict to `directory/weights_file` (safetensors with `metadata`) and `doc` to
    `directory/config_file` (JSON), each atomically; with `digest_key`, the weights' sha256 goes into `doc` under
    that key first. The directory is created if needed and returned."""
    import hashlib

    from safetensors.torch import save

    from pipeline.atomic_file import write_atomic, write_json

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    blob = save(state, metadata=metadata)
    if digest_key is not None:
        doc = {**doc, digest_key: hashlib.sha256(blob).hexdigest()}
    write_atomic(out / weights_file, blob)
    write_json(out / config_file, doc, sort_keys=True)
    return out
