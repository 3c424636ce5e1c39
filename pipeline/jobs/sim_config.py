"""Settings of the simulated cell session and the thresholds it uses to name a pick's motion states."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "models"
#: Target rise (metres) from which a pick counts as lifting.
LIFTING_RISE = 0.02
#: Share of the stroke below which a commanded gripper opening counts as grasping.
GRASP_CLOSE_SHARE = 0.6
#: Least IoU between a grounded box and an object's box for the box to name that object.
MIN_TARGET_IOU = 0.2


@dataclass(frozen=True)
class SimCellConfig:
    """Settings of the simulated cell session.

    seed: scene seed at start; objects: (min, max) objects per random scene; names: exact objects instead;
    width, height: camera pixels; pace: simulated seconds per wall second (1 = real time, 0 = unpaced);
    max_pick_s: simulated seconds a pick may take; head, tracker: the method's checkpoints.
    """

    seed: int = 0
    objects: tuple[int, int] = (3, 5)
    names: tuple[str, ...] = ()
    width: int = 320
    height: int = 240
    pace: float = 1.0
    max_pick_s: float = 20.0
    head: Path = MODELS / "sam2grasp_head"
    tracker: Path = MODELS / "tracker_compact.safetensors"

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.pace) and 0 <= self.pace <= 100):
            raise ValueError(f"pace must be within [0, 100] (0 = unpaced), got {self.pace}")
        if not 1 <= self.max_pick_s <= 120:
            raise ValueError(f"max_pick_s must be within [1, 120] s, got {self.max_pick_s}")
