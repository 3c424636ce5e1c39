"""Bad files: damaged checkpoints, calibration files and datasets, and a full disk while caching, each ending in a
clear error that names the file, with nothing moved and nothing on disk damaged (pipeline.faults.bad_files), and
the fixes they led to (atomic writes that name their file, NaN tracker weights refused, a feature spec that is not
a string, calibration errors naming their file, checkpoints whose files vouch for each other).

Small on purpose: the compact tracker at 64 px with seeded random weights, a tiny head, 4-12 frame episodes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline.atomic_file import write_atomic
from pipeline.faults.bad_files import bad_file_scenarios, flip_bit, write_tiny_models
from pipeline.faults.core import ScenarioResult
from policy.checkpoint import load_policy
from policy.features import parse_feature_spec
from policy.sam2_build import CheckpointError
from robot.calibration import CalibrationFormatError, load_calibration

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[], ScenarioResult]]:
    """The scenarios over one temporary directory (the tiny models are written once and shared)."""
    return bad_file_scenarios(tmp_path_factory.mktemp("bad_files"))


def _run(scenarios: dict[str, Callable[[], ScenarioResult]], name: str) -> ScenarioResult:
    result = scenarios[name]()
    assert result.scenario == name
    assert (result.end_state, result.passed) == ("error", True), result
    assert result.extra["file"] in result.detail  # the message names the damaged file
    assert result.extra["moved"] is False
    return result


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("bad_policy_truncated", "is not a safetensors file"),
        ("bad_policy_bit_flip", "differs from"),
        ("bad_policy_feature_spec", "feature_spec 'pooled2', saved as 'pooled4'"),
        ("bad_policy_config_extra_key", "unknown ACTConfig keys ['decoder_depth']"),
        ("bad_policy_config_missing_key", "keys missing: ['chunk_size']"),
        ("bad_tracker_truncated", "is not a readable safetensors file"),
        ("bad_tracker_bit_flip", "holds other weights than the tracker"),
    ],
)
def test_damaged_model_files_fail_the_pick_before_any_motion(
    scenarios: dict[str, Callable[[], ScenarioResult]], name: str, says: str
) -> None:
    result = _run(scenarios, name)
    assert result.reason == "models_unavailable"
    assert says in result.detail
    assert "tracking" in result.extra["states"]  # the pick began (models load then) and ended before a command


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("bad_calibration_other_camera", "is for camera '123456789012', but the connected camera is '999999999999'"),
        ("bad_calibration_millimetres", "was it written in millimetres?"),
        ("bad_calibration_truncated", "not valid JSON"),
    ],
)
def test_wrong_or_damaged_calibration_files_are_refused(
    scenarios: dict[str, Callable[[], ScenarioResult]], name: str, says: str
) -> None:
    result = _run(scenarios, name)
    assert result.extra["exit_status"] == 2
    assert says in result.detail


def test_truncated_episode_is_named_and_the_cache_stays_readable(
    scenarios: dict[str, Callable[[], ScenarioResult]],
) -> None:
    result = _run(scenarios, "bad_dataset_truncated_episode")
    assert "cannot be read" in result.detail
    assert "file-001.parquet" in result.extra["dataset_check"]


def test_disk_full_while_caching_is_one_line_and_the_rerun_resumes(
    scenarios: dict[str, Callable[[], ScenarioResult]],
) -> None:
    result = _run(scenarios, "process_disk_full_caching")
    assert "no space to write" in result.detail
    assert "Traceback" not in result.detail
    assert result.extra["rerun"] == {"computed": 1, "reused": 3}


# ---------------------------------------------------------------------------------------------- the fixes
def test_a_failed_atomic_write_names_the_file_and_leaves_it_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.json"
    path.write_text("old")

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: cannot write 3 bytes to .*doc.json") as caught:
        write_atomic(path, b"new")
    assert caught.value.errno == errno.ENOSPC
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]  # no temp file left


def test_tracker_weights_holding_nan_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from policy.cache import load_tracker

    files = write_tiny_models(tmp_path)
    state = load_file(str(files.tracker))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(tmp_path / "nan.safetensors"), metadata={"tracker": "compact", "image_size": "64"})
    with pytest.raises(CheckpointError, match=r"nan.safetensors: 1 weight tensors hold NaN or inf"):
        load_tracker("compact", image_size=64, checkpoint=tmp_path / "nan.safetensors")


def test_a_feature_spec_that_is_not_a_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"feature spec must be a string .* got int 4"):
        parse_feature_spec(4)  # type: ignore[arg-type]


def test_a_binary_calibration_file_is_a_format_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_bytes(b"\x00\xff\xfe\x01")
    with pytest.raises(CalibrationFormatError, match=r"cal.json: not a calibration file \(not UTF-8"):
        load_calibration(path)


def test_checkpoints_saved_before_the_digests_still_load(tmp_path: Path) -> None:
    """A head saved before the two digests existed (config.json without `weights_sha256`, weights without
    `config_sha256`) loads, unchecked by them: the shipped head with both taken out."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    legacy = tmp_path / "legacy_head"
    shutil.copytree(ROOT / "models" / "sam2grasp_head", legacy)
    doc = json.loads((legacy / "config.json").read_text())
    assert "weights_sha256" in doc
    del doc["weights_sha256"]
    (legacy / "config.json").write_text(json.dumps(doc, indent=2))
    weights = legacy / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata() or {})
    assert "config_sha256" in meta
    del meta["config_sha256"]
    save_file(load_file(str(weights)), str(weights), metadata=meta)
    assert load_policy(legacy).config == load_policy(ROOT / "models" / "sam2grasp_head").config


def test_a_bit_flip_in_a_saved_head_is_caught_by_its_digest(tmp_path: Path) -> None:
    files = write_tiny_models(tmp_path)
    load_policy(files.head)
    flip_bit(files.head / "model.safetensors", offset_share=0.1, bit=0)
    with pytest.raises(ValueError, match=r"model.safetensors: sha256 .* differs from .* recorded in config.json"):
        load_policy(files.head)
