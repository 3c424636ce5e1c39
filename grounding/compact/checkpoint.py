"""Compact grounder checkpoints: `detector.safetensors` (weights) and `detector.json` (config and training facts).

Loading is strict: a missing file, another format, missing or unexpected keys and shape mismatches are
`GrounderCheckpointError`s saying what was found and what was expected. No pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grounding.compact.config import DetectorConfig
from grounding.compact.model import CompactDetector
from pipeline.atomic_file import write_atomic, write_json
from pipeline.checkpoint_files import load_weights_strict, read_format_doc

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
    holds = f"a compact grounder holds {CONFIG_FILE} and {WEIGHTS_FILE}"
    doc = read_format_doc(path, FORMAT, FORMAT_VERSION, GrounderCheckpointError, holds)
    try:
        config = DetectorConfig.from_dict(doc["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise GrounderCheckpointError(f"{path}: invalid config: {e}") from None
    training = doc.get("training") or {}
    return config, training if isinstance(training, dict) else {}


def load_detector(directory: Path, device: str = "cpu") -> CompactDetector:
    """The detector saved in `directory`, in eval mode, with strict key and shape checks."""
    config, _ = read_detector_info(directory)
    model = CompactDetector(config)
    load_weights_strict(directory / WEIGHTS_FILE, model, GrounderCheckpointError)
    return model.to(device).eval()
