"""SAM2 builders: Meta's official SAM2.1 configs and the compact config, strict checkpoint loading (missing file,
not a checkpoint, weights of another configuration, missing and unexpected keys), and round trips through the
official checkpoint format ({"model": state_dict} in a torch file) and safetensors.

Every model here has random weights; no forward pass runs (building is cheap, a 1024 px forward is not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sam2
import torch

from policy.sam2_build import (
    COMPACT,
    OFFICIAL_CONFIGS,
    CheckpointError,
    TrackerSpec,
    build_model,
    build_sam2,
    load_weights,
    read_state_dict,
    save_official_checkpoint,
    save_safetensors,
    tracker_spec,
)

torch.set_num_threads(1)

#: Parameter counts of the official SAM2.1 models (Meta publishes 38.9 / 46 / 80.8 / 224.4 M).
OFFICIAL_PARAMS = {
    "sam2.1-tiny": 38.96e6,
    "sam2.1-small": 46.06e6,
    "sam2.1-base-plus": 80.85e6,
    "sam2.1-large": 224.45e6,
}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(spec: TrackerSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


@pytest.fixture(scope="module")
def compact() -> torch.nn.Module:
    return _build(tracker_spec(COMPACT, 64), seed=0)


@pytest.fixture(scope="module")
def compact_file(compact: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "compact.safetensors"
    save_safetensors(compact, path)
    return path


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key, value in sa.items():
        assert value.dtype == sb[key].dtype, key
        assert torch.equal(value, sb[key]), key


# ------------------------------------------------------------------ specs and builders


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_config_builds_at_1024_with_its_parameter_count(name: str) -> None:
    spec = tracker_spec(name)
    assert spec.image_size == 1024
    assert spec.overrides == ()  # the official config as published
    assert (Path(sam2.__file__).parent / spec.config_file).is_file()
    model: Any = _build(spec, seed=0)  # SAM2Base's attributes are untyped
    assert int(model.image_size) == 1024
    assert not model.training
    assert _num_params(model) == pytest.approx(OFFICIAL_PARAMS[name], abs=0.01e6)
    assert next(model.parameters()).device.type == "cpu"


def test_official_config_at_another_size_sets_it_at_build_time() -> None:
    spec = tracker_spec("sam2.1-tiny", 256)
    assert spec.image_size == 256
    assert "++model.image_size=256" in spec.overrides
    model: Any = build_model(spec)
    assert int(model.image_size) == 256
    # the image size does not change the weights
    assert _num_params(model) == pytest.approx(OFFICIAL_PARAMS["sam2.1-tiny"], abs=0.01e6)


def test_compact_config_is_about_2_34_m_parameters(compact: Any) -> None:
    assert int(compact.image_size) == 64
    assert not compact.training
    assert _num_params(compact) == pytest.approx(2.34e6, abs=0.01e6)
    assert compact.hidden_dim == 64  # d_model
    assert compact.mem_dim == 32
    assert tracker_spec(COMPACT).image_size == 256  # the default compact size


def test_tracker_spec_rejects_an_unknown_name_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown tracker 'sam2\.1-huge'; valid trackers: ") as err:
        tracker_spec("sam2.1-huge")
    for valid in [COMPACT, *OFFICIAL_CONFIGS]:
        assert valid in str(err.value)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        (COMPACT, 48),  # too small
        (COMPACT, 100),  # not a multiple of 32
        (COMPACT, 2048),  # too large
        (COMPACT, -64),
        ("sam2.1-tiny", 128),
        ("sam2.1-tiny", 1000),
        ("sam2.1-tiny", 4096),
        ("sam2.1-large", -1024),
    ],
)
def test_tracker_spec_rejects_bad_image_sizes(name: str, size: int) -> None:
    with pytest.raises(ValueError, match=rf"multiple of 32 within \d+\.\.\d+, got {size}"):
        tracker_spec(name, size)


@pytest.mark.parametrize("name", [COMPACT, "sam2.1-tiny"])
def test_tracker_spec_rejects_image_size_zero(name: str) -> None:
    with pytest.raises(ValueError, match="got 0"):
        tracker_spec(name, 0)


# ------------------------------------------------------------------ strict loading: the file


def test_missing_checkpoint_is_file_not_found_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        build_sam2(tracker_spec(COMPACT, 64), path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(
        torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).numpy().tobytes()
    )
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert str(path) in message
    assert "safetensors" in message  # names the format that was expected
    if suffix == ".pt":
        assert "{'model': state_dict}" in message


def test_a_torch_file_holding_a_list_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2), torch.ones(3)], path)
    with pytest.raises(CheckpointError, match=r"holds list, expected a dict with a 'model' state dict"):
        read_state_dict(path)


def test_a_dict_without_model_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"holds \['epoch', 'state_dict'\], expected a dict with a 'model'"):
        read_state_dict(path)


def test_a_model_entry_that_is_not_a_dict_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"model": [torch.zeros(2)]}, path)
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        read_state_dict(path)


def test_a_dict_with_mixed_key_types_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({0: torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="'model'"):
        read_state_dict(path)


def test_a_state_dict_of_non_tensors_is_not_a_checkpoint(compact: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    state: dict[str, object] = dict(compact.state_dict())
    state["no_mem_embed"] = [0.0] * 64  # one entry that is not a tensor
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="tensor"):
        build_sam2(tracker_spec(COMPACT, 64), path)


# ------------------------------------------------------------------ strict loading: the weights


def test_compact_weights_into_sam2_1_tiny_are_refused(compact_file: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        build_sam2(tracker_spec("sam2.1-tiny", 256), compact_file)
    message = str(err.value)
    assert str(compact_file) in message
    assert "shape mismatches" in message
    assert "another configuration" in message
    assert "missing keys" in message  # tiny has blocks the compact trunk lacks
    assert "file (64," in message  # says which shape the file had


def test_sam2_1_tiny_weights_into_compact_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    save_official_checkpoint(build_model(tracker_spec("sam2.1-tiny", 256)), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*unexpected keys"):
        build_sam2(tracker_spec(COMPACT, 64), path)


def test_an_extra_key_is_unexpected_and_loads_nothing(compact: torch.nn.Module) -> None:
    target = _build(tracker_spec(COMPACT, 64), seed=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = dict(compact.state_dict())
    state["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: \['extra_head.weight'\]") as err:
        load_weights(target, state, "extra.safetensors")
    assert "missing" not in str(err.value)
    assert "extra.safetensors" in str(err.value)
    for key, value in target.state_dict().items():  # a refused file changes nothing
        assert torch.equal(value, before[key]), key


def test_a_missing_key_is_missing(compact: torch.nn.Module, tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in compact.state_dict().items()}
    dropped = "obj_ptr_proj.layers.0.weight"
    assert dropped in state
    del state[dropped]
    path = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"1 missing keys: \['{dropped}'\]") as err:
        build_sam2(tracker_spec(COMPACT, 64), path)
    assert "unexpected" not in str(err.value)


def test_a_tensor_of_another_shape_is_a_shape_mismatch(compact: torch.nn.Module) -> None:
    state = dict(compact.state_dict())
    state["no_mem_embed"] = torch.zeros(1, 1, 32)
    with pytest.raises(CheckpointError, match=r"1 shape mismatches .*no_mem_embed: file \(1, 1, 32\) vs model"):
        load_weights(_build(tracker_spec(COMPACT, 64), seed=1), state, "x")


# ------------------------------------------------------------------ round trips


def test_official_format_round_trip_with_sam2_1_tiny(tmp_path: Path) -> None:
    spec = tracker_spec("sam2.1-tiny")
    source = _build(spec, seed=11)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    save_official_checkpoint(source, path)
    # the format Meta publishes: a torch file holding {"model": state_dict}, readable with weights_only=True
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(raw, dict)
    assert list(raw) == ["model"]
    assert sorted(raw["model"]) == sorted(source.state_dict())
    del raw
    torch.manual_seed(12)  # a different random init, so equal weights come from the file
    loaded = build_sam2(spec, path)
    assert not loaded.training
    _assert_same_weights(source, loaded)


def test_safetensors_round_trip_with_the_compact_model(compact: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "compact.safetensors"
    save_safetensors(compact, path, metadata={"image_size": "64"})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"image_size": "64"}
    torch.manual_seed(99)
    loaded = build_sam2(tracker_spec(COMPACT, 64), path)
    _assert_same_weights(compact, loaded)
    # a 128 px compact model has the same weight shapes, so the recorded image size is what refuses it
    with pytest.raises(CheckpointError, match=r"image_size='64', but image_size='128'"):
        build_sam2(tracker_spec(COMPACT, 128), path)
