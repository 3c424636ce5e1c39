"""A tiny simulated world for end-to-end tests: a 2-episode 64 x 48 dataset (3 objects) and a seeded random
compact tracker at 64 px saved as a project checkpoint."""

from __future__ import annotations

from pathlib import Path

from pipeline.collect import CollectConfig, collect
from policy.cache import load_tracker
from policy.sam2_build import save_safetensors, tracker_metadata, tracker_spec
from policy.tracker import SAM2Tracker
from robot.sim.config import CellConfig
from robot.sim.scene import SceneRequest


def tiny_world(root: Path) -> tuple[Path, Path, SAM2Tracker]:
    """(dataset directory, tracker checkpoint, the tracker) under `root`."""
    data = root / "ds"
    cell = CellConfig(image_width=64, image_height=48, scene=SceneRequest(n_objects=(3, 3)))
    collect(CollectConfig(out=data, episodes=2, seed=0, cell=cell), progress=False)
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    ckpt = root / "tracker.safetensors"
    save_safetensors(tracker.model, ckpt, tracker_metadata(tracker_spec("compact", 64)))
    return data, ckpt, tracker
