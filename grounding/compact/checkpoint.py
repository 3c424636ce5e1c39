"""Compact grounder checkpoints: `detector.safetensors` (weights) and `detector.json` (config and training facts).

Loading is strict: a missing file, another format, missing or unexpected keys and shape mismatches are
`GrounderCheckpointError`s saying what was found and what was expected. No pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grounding.compact.config import DetectorConfig
from grounding.compact.model import CompactDetector
from pipeline.atomic_file import write_atomic, write_json

FORMAT = "sam2grasp-compact-grounder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector.json"


class GrounderCheckpointError(ValueError):
    """A compact grounder checkpoint that cannot be loaded (missing files, wrong format, keys or shapes)."""


def save_detector(directory: Path, model: CompactDetector, training: dict[str, Any] | None = None) -> Path:
    """Write `model` into `directory` (created if needed); `training` is JSON-able information kept with it."""
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(directory / WEIGHTS_FILE, save(state, metadata={"format": FORMAT}))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(), "training": training}
    write_json(directory / CONFIG_FILE, doc, sort_keys=True)
    return directory


def read_detector_info(directory: Path) -> tuple[DetectorConfig, dict[str, Any]]:
    """The config and training facts of a checkpoint directory, validated."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise GrounderCheckpointError(f"{path} not found: a compact grounder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GrounderCheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise GrounderCheckpointError(f"{path}: format {found!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise GrounderCheckpointError(
            f"{path}: format_version {doc.get('format_version')!r}, this code reads version {FORMAT_VERSION}"
        )
    try:
        config = DetectorConfig.from_dict(doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise GrounderCheckpointError(f"{path}: invalid config: {e}") from None
    training = doc.get("training") or {}
    return config, training if isinstance(training, dict) else {}


def load_detector(directory: Path, device: str = "cpu") -> CompactDetector:
    """The detector saved in `directory`, in eval mode, with strict key and shape checks."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, _ = read_detector_info(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise GrounderCheckpointError(f"{path} not found: a compact grounder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise GrounderCheckpointError(f"{path} is not a safetensors file: {e}") from None
    model = CompactDetector(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise GrounderCheckpointError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise GrounderCheckpointError(
                f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
