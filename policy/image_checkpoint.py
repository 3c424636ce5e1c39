"""Image-baseline checkpoints: a directory with `model.safetensors` (CNN + transformer weights + normaliser
buffers) and `config.json`.

config.json: {"format": "sam2grasp-image-act", "format_version": 1, "policy": TYPE, "config": ImageACTConfig,
"training": {...}}. Loading is strict: missing or unexpected keys, shape mismatches, a policy type, image size or
action mode other than the one expected, or a checkpoint of another format (a SAM2Grasp head) are
`PolicyCheckpointError`s saying what was found and what was expected. No pickles.

`checkpoint_policy_type` tells the two checkpoint kinds apart ("sam2grasp" or a baseline's type), so that
`sam2grasp eval --policy PATH` runs whichever PATH holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.checkpoint_files import load_weights_strict, read_format_doc, write_checkpoint
from policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, PolicyCheckpointError
from policy.checkpoint import FORMAT as HEAD_FORMAT
from policy.image_act import ImageACTPolicy
from policy.image_act_config import ImageACTConfig

FORMAT = "sam2grasp-image-act"
FORMAT_VERSION = 1


def save_image_policy(directory: Path | str, policy: ImageACTPolicy, training: dict[str, Any] | None = None) -> Path:
    """Write `policy` to `directory` (created if needed); `training` is free-form JSON-able info kept alongside."""
    cfg = policy.config
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "policy": cfg.policy,
        "image_size": f"{cfg.image_width}x{cfg.image_height}",
        "action_mode": cfg.head.action_mode,
    }
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy": cfg.policy,
        "config": cfg.to_dict(),
        "training": training or {},
    }
    return write_checkpoint(directory, policy, WEIGHTS_FILE, meta, CONFIG_FILE, doc)


def checkpoint_policy_type(directory: Path | str) -> str:
    """ "sam2grasp" for a SAM2Grasp head checkpoint, the baseline's type for an image-baseline checkpoint;
    PolicyCheckpointError for anything else."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise PolicyCheckpointError(f"{path} not found: a policy checkpoint holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PolicyCheckpointError(f"{path} is not valid JSON: {e}") from None
    found = doc.get("format") if isinstance(doc, dict) else None
    if found == HEAD_FORMAT:
        return "sam2grasp"
    if found == FORMAT and isinstance(doc, dict) and isinstance(doc.get("policy"), str):
        return str(doc["policy"])
    raise PolicyCheckpointError(
        f"{path}: format {found!r} is not a policy checkpoint; valid: {HEAD_FORMAT!r} (SAM2Grasp head) or "
        f"{FORMAT!r} (image baseline)"
    )


def read_image_checkpoint_info(directory: Path | str) -> tuple[ImageACTConfig, dict[str, Any]]:
    """The config and training info of an image-baseline checkpoint directory, validated."""
    path = Path(directory) / CONFIG_FILE
    holds = f"an image-baseline checkpoint holds {CONFIG_FILE} and {WEIGHTS_FILE}"
    try:
        doc = read_format_doc(path, FORMAT, FORMAT_VERSION, PolicyCheckpointError, holds)
    except PolicyCheckpointError as e:
        if path.is_file() and checkpoint_policy_type(directory) == "sam2grasp":
            raise PolicyCheckpointError(
                f"{directory} holds a SAM2Grasp head (format {HEAD_FORMAT!r}), not an image baseline; "
                "load it with policy.agent.load_agent"
            ) from None
        raise e from None
    try:
        config = ImageACTConfig.from_dict(doc.get("config"))
    except ValueError as e:
        raise PolicyCheckpointError(f"{path}: invalid config: {e}") from None
    if doc.get("policy") != config.policy:
        raise PolicyCheckpointError(
            f"{path}: policy {doc.get('policy')!r} disagrees with its config's {config.policy!r}"
        )
    training = doc.get("training", {})
    return config, training if isinstance(training, dict) else {}


def load_image_policy(
    directory: Path | str,
    *,
    expect_policy: str | None = None,
    expect_image_size: tuple[int, int] | None = None,
    expect_action_mode: str | None = None,
    device: torch.device | str = "cpu",
) -> ImageACTPolicy:
    """The baseline saved in `directory`, in eval mode, strictly checked against its config and the expectations
    (policy type, image size (width, height) in pixels, action mode)."""
    d = Path(directory)
    config, _ = read_image_checkpoint_info(d)
    if expect_policy is not None and config.policy != expect_policy:
        raise PolicyCheckpointError(f"{d}: checkpoint is a {config.policy!r} policy, expected {expect_policy!r}")
    if expect_image_size is not None and config.image_size != tuple(expect_image_size):
        w, h = expect_image_size
        raise PolicyCheckpointError(
            f"{d}: checkpoint reads {config.image_width}x{config.image_height} frames, expected {w}x{h}"
        )
    if expect_action_mode is not None and config.head.action_mode != expect_action_mode:
        raise PolicyCheckpointError(
            f"{d}: checkpoint predicts action mode {config.head.action_mode!r}, expected {expect_action_mode!r}"
        )
    policy = ImageACTPolicy(config)
    load_weights_strict(d / WEIGHTS_FILE, policy, PolicyCheckpointError)
    return policy.to(device).eval()
