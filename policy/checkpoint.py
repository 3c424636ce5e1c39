"""ACT head checkpoints: a directory with `model.safetensors` (weights + normaliser buffers) and `config.json`.

config.json: {"format": "sam2grasp-act", "format_version": 1, "config": ACTConfig, "training": {...},
"weights_sha256": hex sha256 of model.safetensors}; the weights' metadata records the sha256 of the config as saved
("config_sha256"), so each file vouches for the other. Loading is strict: missing or unexpected keys, shape
mismatches, a feature spec or action mode other than the one expected, a config edited or damaged since saving
(a key dropped, a value changed), weights whose sha256 differs from the one recorded (a bit flipped on disk, a file
swapped in) are `PolicyCheckpointError`s that say what was found and what was expected. Checkpoints saved before
the two digests existed are loaded without those two checks. No pickles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from pipeline.checkpoint_files import load_weights_strict, read_format_doc, write_checkpoint
from policy.act import ACTPolicy
from policy.act_config import ACTConfig

FORMAT = "sam2grasp-act"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class PolicyCheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked (missing files, wrong format, keys, shapes, spec or mode)."""


def save_policy(directory: Path | str, policy: ACTPolicy, training: dict[str, Any] | None = None) -> Path:
    """Write `policy` to `directory` (created if needed); `training` is free-form JSON-able info kept alongside."""
    cfg = policy.config
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "feature_spec": cfg.feature_spec,
        "action_mode": cfg.action_mode,
        "config_sha256": _config_sha256(cfg.to_dict()),
    }
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict(), "training": training or {}}
    return write_checkpoint(directory, policy, WEIGHTS_FILE, meta, CONFIG_FILE, doc, digest_key="weights_sha256")


def read_checkpoint_info(directory: Path | str) -> tuple[ACTConfig, dict[str, Any]]:
    """The config and training info of a checkpoint directory, validated."""
    path = Path(directory) / CONFIG_FILE
    holds = f"a policy checkpoint holds {CONFIG_FILE} and {WEIGHTS_FILE}"
    doc = read_format_doc(path, FORMAT, FORMAT_VERSION, PolicyCheckpointError, holds)
    try:
        config = ACTConfig.from_dict(doc.get("config"))  # type: ignore[arg-type]
    except ValueError as e:
        raise PolicyCheckpointError(f"{path}: invalid config: {e}") from None
    training = doc.get("training", {})
    return config, training if isinstance(training, dict) else {}


def load_policy(
    directory: Path | str,
    *,
    expect_feature_spec: str | None = None,
    expect_action_mode: str | None = None,
    device: torch.device | str = "cpu",
) -> ACTPolicy:
    """The policy saved in `directory`, in eval mode, strictly checked against its config and the expectations."""
    d = Path(directory)
    config, _ = read_checkpoint_info(d)
    if expect_feature_spec is not None and config.feature_spec != expect_feature_spec:
        raise PolicyCheckpointError(
            f"{d}: checkpoint was trained on feature spec {config.feature_spec!r}, expected {expect_feature_spec!r}"
        )
    if expect_action_mode is not None and config.action_mode != expect_action_mode:
        raise PolicyCheckpointError(
            f"{d}: checkpoint predicts action mode {config.action_mode!r}, expected {expect_action_mode!r}"
        )
    _check_config_digest(d)
    policy = ACTPolicy(config)
    load_weights_strict(d / WEIGHTS_FILE, policy, PolicyCheckpointError)
    _check_weights_digest(d)
    return policy.to(device).eval()


def _config_sha256(config: Any) -> str:
    """Hex sha256 of a config dict's canonical JSON text."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _check_config_digest(directory: Path) -> None:
    """PolicyCheckpointError when config.json's config is not the one the weights were saved with (their metadata
    records its sha256); nothing is checked when the weights are unreadable (loading them says why) or older."""
    from safetensors import SafetensorError, safe_open

    path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    try:
        with safe_open(str(weights), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return
    if "config_sha256" not in meta:
        return
    config = read_format_doc(path, FORMAT, FORMAT_VERSION, PolicyCheckpointError, "").get("config")
    if _config_sha256(config) == meta["config_sha256"]:
        return
    found = config if isinstance(config, dict) else {}
    missing = sorted({f.name for f in fields(ACTConfig)} - set(found))
    changed = [
        f"{k} {found.get(k)!r}, saved as {meta[k]!r}"
        for k in ("feature_spec", "action_mode")
        if k in meta and found.get(k) != meta[k]
    ]
    what = f"keys missing: {missing}" if missing else "; ".join(changed) or "a value differs"
    raise PolicyCheckpointError(
        f"{path}: its config is not the one {WEIGHTS_FILE} was saved with ({what}): the file was edited or "
        "damaged; restore it (a policy is only valid with the config it was trained with)"
    )


def _check_weights_digest(directory: Path) -> None:
    """PolicyCheckpointError when the weights' sha256 differs from the one config.json recorded at saving."""
    want = read_format_doc(directory / CONFIG_FILE, FORMAT, FORMAT_VERSION, PolicyCheckpointError, "").get(
        "weights_sha256"
    )
    if want is None:
        return  # saved before checkpoints recorded it
    weights = directory / WEIGHTS_FILE
    got = hashlib.sha256(weights.read_bytes()).hexdigest()
    if got != want:
        raise PolicyCheckpointError(
            f"{weights}: sha256 {got[:16]}... differs from {str(want)[:16]}... recorded in {CONFIG_FILE} when the "
            "checkpoint was saved: the weights file is corrupted or was replaced; restore it or train again"
        )
