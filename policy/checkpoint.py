"""ACT head checkpoints: a directory with `model.safetensors` (weights + normaliser buffers) and `config.json`.

config.json: {"format": "sam2grasp-act", "format_version": 1, "config": ACTConfig, "training": {...}}.
Loading is strict: missing or unexpected keys, shape mismatches, a feature spec or action mode other than the one
expected are `PolicyCheckpointError`s that say what was found and what was expected. No pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.atomic_file import write_atomic, write_json
from pipeline.checkpoint_files import load_weights_strict, read_format_doc
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
    from safetensors.torch import save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    cfg = policy.config
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "feature_spec": cfg.feature_spec,
        "action_mode": cfg.action_mode,
    }
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict(), "training": training or {}}
    write_atomic(out / WEIGHTS_FILE, save(state, metadata=meta))
    write_json(out / CONFIG_FILE, doc, sort_keys=True)
    return out


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
    policy = ACTPolicy(config)
    load_weights_strict(d / WEIGHTS_FILE, policy, PolicyCheckpointError)
    return policy.to(device).eval()
