"""What the job runner needs from a robot cell (the simulated one, or the real UR5e + gripper + camera), and the
facts a cell reports back. The runner never touches a robot except through a `Cell`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection
from pipeline.jobs.state import Controller, JobState, Placement, Target
from robot.protocols import RobotStatus


class TargetError(ValueError):
    """A grounded box cannot be turned into a pick target (it covers no object, or lies outside the image)."""


class CellUnavailable(RuntimeError):  # noqa: N818
    """The cell cannot run this request (a controller it does not offer, or hardware that is not connected)."""


@dataclass(frozen=True)
class PickOutcome:
    """How a pick's motion ended: `success` (the target held lifted), else `reason` (a short machine word such as
    "timeout", "collision", "wrong_object", "stopped", "policy_failed") and `detail` (a sentence)."""

    success: bool
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class OverlayFrame:
    """The latest camera image and what to draw on it.

    rgb: (H, W, 3) uint8; box: x0, y0, x1, y1 pixels of the tracked (or grounded) target, or None;
    mask: (H, W) bool or None; chunk_px: (K, 2) pixels of the planned TCP path, or None; caption: a line of text;
    candidates: boxes (pixels) a person may choose from; seq: increases with every new image.
    """

    rgb: npt.NDArray[np.uint8]
    box: tuple[float, float, float, float] | None = None
    mask: npt.NDArray[np.bool_] | None = None
    chunk_px: npt.NDArray[np.float64] | None = None
    caption: str = ""
    candidates: tuple[tuple[float, float, float, float], ...] = field(default=())
    seq: int = 0


#: Called by a cell when a pick moves from one motion state to the next.
StateCallback = Callable[[JobState], None]


@runtime_checkable
class Cell(Protocol):
    """One robot, its gripper and its camera, driven one pick at a time."""

    controllers: frozenset[Controller]

    def camera_image(self) -> npt.NDArray[np.uint8]:
        """The current camera image, (H, W, 3) uint8 RGB."""
        ...

    def robot_status(self) -> RobotStatus:
        """Connection and stop flags of the arm (a protective stop stays set until the cell is reset or cleared)."""
        ...

    def prepare(self, detection: Detection) -> Target:
        """The pick target for a grounded detection; TargetError when it cannot be picked."""
        ...

    def pick(
        self, target: Target, controller: Controller, on_state: StateCallback, halt: threading.Event
    ) -> PickOutcome:
        """Grasp and lift `target`, every command through the safety layer; returns when the lift held, failed,
        or `halt` was set (then with reason "stopped"). Calls `on_state` with tracking, grasping and lifting."""
        ...

    def place(self, placement: Placement, halt: threading.Event) -> PickOutcome:
        """Carry the held object to `placement`, release it and go back to the start pose."""
        ...

    def halt(self) -> float:
        """Stop all motion now (the control loop ended, the robot told to stop), from any thread; returns the
        seconds it took."""
        ...

    def show_candidates(self, boxes: tuple[tuple[float, float, float, float], ...]) -> None:
        """Draw these boxes on the stream (empty: none) while a person chooses."""
        ...

    def overlay_frame(self) -> OverlayFrame | None:
        """The latest image with its overlays, or None before the first image."""
        ...

    def health(self) -> dict[str, Any]:
        """Robot, camera, model and safety facts for GET /health."""
        ...

    def close(self) -> None:
        """Release the cell's resources."""
        ...


def empty_image(width: int = 320, height: int = 240) -> npt.NDArray[np.uint8]:
    """A black (height, width, 3) uint8 image, for a cell that has no frame yet."""
    return np.zeros((height, width, 3), dtype=np.uint8)
