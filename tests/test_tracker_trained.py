"""The shipped compact tracker really tracks: it beats an untrained one and the copy-the-first-box baseline on a
held-out simulated episode (seed far from the training seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.collect import CollectConfig, collect
from policy.cache import load_tracker
from policy.eval_tracker import evaluate_tracker
from policy.sam2_build import build_sam2, checkpoint_crop, tracker_spec
from policy.tracker import SAM2Tracker, TrackerConfig
from robot.sim.config import CellConfig
from robot.sim.scene import SceneRequest

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tracker_compact.safetensors"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("held_out") / "ds"
    cell = CellConfig(image_width=320, image_height=240, scene=SceneRequest(n_objects=(4, 4)))
    collect(CollectConfig(out=out, episodes=1, seed=9_000_001, cell=cell), progress=False)
    return out


@pytest.mark.slow
@pytest.mark.render
def test_shipped_tracker_beats_untrained_and_first_box(held_out: Path) -> None:
    torch.set_num_threads(1)
    trained = load_tracker("compact", checkpoint=SHIPPED)  # with the frame region its weights record
    torch.manual_seed(0)
    untrained = SAM2Tracker(build_sam2(tracker_spec("compact")), TrackerConfig(crop=checkpoint_crop(SHIPPED)))
    good = evaluate_tracker(trained, held_out, [0], occlusions=(0.0,)).levels[0]
    bad = evaluate_tracker(untrained, held_out, [0], occlusions=(0.0,)).levels[0]
    print(
        f"trained mIoU {good.miou:.3f} (first 10 frames {good.early_miou:.3f}), untrained {bad.miou:.3f}, "
        f"first box {good.baseline_miou:.3f}"
    )
    assert good.frames > 20
    assert good.miou > bad.miou + 0.2
    assert good.miou > good.baseline_miou
    # tracked from the prompt frame on, while the arm is still away from the target (not found again only once the
    # gripper reaches it)
    assert good.early_miou > good.baseline_miou
    # the breakdown of where IoU is lost covers the same frames as the mean
    assert len(good.phase_miou) == 5
    assert min(good.phase_miou) <= good.miou <= max(good.phase_miou)
    assert 0 <= good.covered_frames < good.frames
