"""The compact grounder: decoding, targets, strict checkpoints, resumable training, and the shipped model on
held-out rendered scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grounding.compact.backend import DEFAULT_MODEL, CompactGrounder
from grounding.compact.checkpoint import GrounderCheckpointError, load_detector, save_detector
from grounding.compact.config import DetectorConfig
from grounding.compact.model import CompactDetector, DetectorOutput, decode
from grounding.compact.scenes import LabelledImage, load_shard, save_shard
from grounding.compact.targets import build_targets
from grounding.compact.train import GrounderTrainConfig, train_grounder
from grounding.evaluate import evaluate_grounding
from grounding.service import GroundingService

CFG = DetectorConfig()


def _maps(h: int = 60, w: int = 80) -> DetectorOutput:
    heat = torch.full((1, 1, h, w), -10.0)
    heat[0, 0, 20, 30] = 5.0
    size = torch.zeros((1, 2, h, w))
    size[0, :, 20, 30] = torch.log(torch.tensor([6.0, 4.0]))
    offset = torch.zeros((1, 2, h, w))
    offset[0, :, 20, 30] = torch.tensor([0.5, 0.25])
    colour = torch.zeros((1, CFG.n_colours, h, w))
    colour[0, 2, 20, 30] = 10.0
    shape = torch.zeros((1, CFG.n_shapes, h, w))
    shape[0, 4, 20, 30] = 10.0
    return DetectorOutput(heat, size, offset, colour, shape)


def test_decode_reads_box_and_classes_at_the_peak() -> None:
    (dets,) = decode(_maps(), CFG, sx=2.0, sy=2.0)
    assert len(dets) == 1
    d = dets[0]
    cx, cy = (30 + 0.5) * 4, (20 + 0.25) * 4
    expected = ((cx - 12) * 2, (cy - 8) * 2, (cx + 12) * 2, (cy + 8) * 2)
    assert np.allclose(d.box_xyxy_px, expected, atol=1e-4)
    assert int(np.argmax(d.colour_probs)) == 2
    assert int(np.argmax(d.shape_probs)) == 4
    assert d.confidence > 0.99


def test_decode_keeps_nothing_below_the_threshold() -> None:
    maps = _maps()
    maps.heat[0, 0, 20, 30] = -3.0  # sigmoid 0.047 < 0.3
    assert decode(maps, CFG) == [[]]


def _item(boxes: list[list[float]], visible: list[int]) -> LabelledImage:
    n = len(boxes)
    return LabelledImage(
        np.zeros((240, 320, 3), np.uint8),
        np.array(boxes, np.float32),
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        np.array(visible, np.int64),
        1,
        0,
    )


def test_targets_put_one_peak_per_object_and_ignore_barely_visible_ones() -> None:
    item = _item([[40, 40, 60, 56], [200, 100, 220, 120]], [300, 5])
    t = build_targets([item], [item.boxes], CFG)
    assert int(t.centre.sum()) == 1
    gy, gx = (int(v) for v in torch.nonzero(t.centre[0])[0])
    assert (gx, gy) == (12, 12)
    assert float(t.heat[0, gy, gx]) == 1.0
    assert float(t.heat_weight[0, 27, 52]) == 0.0  # inside the barely visible object's box
    assert int(t.colour[0, gy, gx]) == 0
    assert np.allclose(t.size[0, :, gy, gx].numpy(), np.log([5.0, 4.0]))


def test_checkpoint_round_trip_and_strict_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CompactDetector(CFG).eval()
    save_detector(tmp_path / "m", model, {"note": "test"})
    loaded = load_detector(tmp_path / "m")
    x = torch.rand(1, 3, 240, 320) * 255
    assert torch.equal(model(x).heat, loaded(x).heat)
    with pytest.raises(GrounderCheckpointError, match="not found"):
        load_detector(tmp_path / "nothing")
    doc = json.loads((tmp_path / "m" / "detector.json").read_text())
    doc["format"] = "something-else"
    (tmp_path / "m" / "detector.json").write_text(json.dumps(doc))
    with pytest.raises(GrounderCheckpointError, match="format"):
        load_detector(tmp_path / "m")
    save_detector(tmp_path / "m2", model)
    (tmp_path / "m2" / "detector.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GrounderCheckpointError, match="not a safetensors"):
        load_detector(tmp_path / "m2")
    from safetensors.torch import save_file

    save_detector(tmp_path / "m3", model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "m3" / "detector.safetensors"))
    with pytest.raises(GrounderCheckpointError, match="unexpected keys"):
        load_detector(tmp_path / "m3")


def test_config_validation_names_the_valid_values() -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        DetectorConfig(input_width=300)
    with pytest.raises(ValueError, match="unknown detector config keys"):
        DetectorConfig.from_dict({"bogus": 1})


@pytest.mark.render
@pytest.mark.slow
def test_training_runs_and_resumes(tmp_path: Path) -> None:
    from grounding.compact.scenes import iter_rendered

    data = tmp_path / "data"
    data.mkdir()
    items = list(iter_rendered(range(900, 904), width=320, height=240))
    save_shard(data / "scenes_00000.npz", items[:6])
    save_shard(data / "scenes_00001.npz", items[6:])
    assert len(load_shard(data / "scenes_00000.npz")) == 6
    cfg = GrounderTrainConfig(epochs=2, batch=2, threads=1, warmup_steps=1)
    first = train_grounder(data, tmp_path / "out", cfg, stop_after_steps=2, log=None)
    assert first.steps == 2
    assert (tmp_path / "out" / "resume" / "progress.json").is_file()
    second = train_grounder(data, tmp_path / "out", cfg, log=None)
    assert second.steps == 6  # 3 steps per epoch, 2 epochs: continued from step 2, not restarted
    assert (tmp_path / "out" / "detector.safetensors").is_file()
    assert (tmp_path / "out" / "loss_curve.png").is_file()


@pytest.mark.render
@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="the shipped compact grounder is not in models/")
def test_shipped_grounder_beats_chance_on_held_out_scenes() -> None:
    torch.set_num_threads(1)
    result = evaluate_grounding(GroundingService(CompactGrounder.load()), scenes=6)
    # chance for a unique object among 3-6 is at most 1/3; ambiguity and absence cannot be guessed right often
    assert result.by_kind["unique"] >= 0.8
    assert result.no_match_rate >= 0.8
    assert result.top1 >= 0.7


def test_the_detector_runs_once_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    grounder = CompactGrounder(CompactDetector(CFG))
    calls: list[int] = []
    real = grounder.detector.detect

    def counted(image: np.ndarray) -> list:  # type: ignore[type-arg]
        calls.append(1)
        return real(image)

    monkeypatch.setattr(grounder.detector, "detect", counted)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    grounder.ground(image, "red cup")
    grounder.ground(image.copy(), "blue box")  # same pixels, another array: still one detector run
    grounder.describe(image)
    assert len(calls) == 1
    other = image.copy()
    other[0, 0, 0] ^= 1
    grounder.ground(other, "red cup")
    assert len(calls) == 2


@pytest.mark.render
@pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="the shipped compact grounder is not in models/")
def test_ground_command_prints_objects_target_and_error(capsys: pytest.CaptureFixture[str]) -> None:
    from grounding.detection import box_iou
    from pipeline.cli import main

    torch.set_num_threads(1)
    assert main(["ground", "pick the purple ball", "--scene-seed", "10000003", "--json"]) in (0, 1)
    first = json.loads(capsys.readouterr().out)
    names = [o["name"] for o in first["objects"]]
    unique = next(o for o in first["objects"] if names.count(o["name"]) == 1 and o["box"] is not None)
    assert main(["ground", f"pick the {unique['name']}", "--scene-seed", "10000003", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"] is None
    assert box_iou(tuple(doc["target"]["box"]), tuple(unique["box"])) >= 0.5
    absent = next(
        f"{c} {s}"
        for c in ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
        for s in ("cube", "can", "cup", "ball", "box")
        if f"{c} {s}" not in names
    )
    assert main(["ground", f"pick the {absent}", "--scene-seed", "10000003", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] is None
    assert doc["error"]["type"] == "no_match"
