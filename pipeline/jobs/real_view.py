"""What the real cell shows and reports: the stream's overlays (the tracker's box and mask, the planned TCP path
projected through the camera calibration, candidate boxes), the GET /health facts read from the drivers, and the
place motion as a joint-space plan. Units: pixels, metres, radians, seconds.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.jobs.cell import OverlayFrame
from pipeline.jobs.place import PlacePredictor
from pipeline.jobs.real_camera import LiveFrame
from robot.calibration import CameraCalibration
from robot.intrinsics import CameraIntrinsics
from robot.kinematics import forward

if TYPE_CHECKING:
    from pipeline.jobs.chunk_predictors import PacedPredictor
    from pipeline.jobs.real_cell import RealCell
    from pipeline.jobs.real_drive import RealDrive

F64 = npt.NDArray[np.float64]
Box = tuple[float, float, float, float]


def project_tcp_path(
    chunk: npt.ArrayLike, calibration: CameraCalibration, intrinsics: CameraIntrinsics, tcp_offset: float
) -> F64:
    """(N, 2) pixels of the TCP positions a chunk of joint targets (K, 7) leads to, seen through the calibrated
    camera (OpenCV axes); points behind the camera are left out."""
    q = np.asarray(chunk, dtype=np.float64)[:, :6]
    points = np.array([forward(row, tcp_offset)[:3, 3] for row in q])
    t = calibration.T_base_camera
    cam = (points - t[:3, 3]) @ t[:3, :3]  # base -> camera: R^T (p - t), row-wise
    ahead = cam[:, 2] > 1e-6
    cam = cam[ahead]
    u = intrinsics.fx * cam[:, 0] / cam[:, 2] + intrinsics.cx
    v = intrinsics.fy * cam[:, 1] / cam[:, 2] + intrinsics.cy
    return np.stack([u, v], axis=1)


class MethodView:
    """The stream's state: the newest camera frame with what the running pick shows. `publish` is called by the
    camera feed with each frame; `frame()` by the stream."""

    def __init__(self, calibration: CameraCalibration, intrinsics: CameraIntrinsics, tcp_offset: float) -> None:
        self.calibration, self.intrinsics, self.tcp_offset = calibration, intrinsics, tcp_offset
        self.candidates: tuple[Box, ...] = ()
        self.drive: RealDrive | None = None
        self._predictor: PacedPredictor | None = None
        self._lock = threading.Lock()
        self._frame: OverlayFrame | None = None

    def watching(self, predictor: PacedPredictor) -> PacedPredictor:
        """Show `predictor`'s track and plan from now on; returns it."""
        self._predictor = predictor
        return predictor

    def publish(self, live: LiveFrame) -> None:
        """Compose the overlay frame of a new camera image."""
        box: Box | None = None
        mask: npt.NDArray[np.bool_] | None = None
        chunk_px: F64 | None = None
        caption = "ur5e: idle"
        drive, predictor = self.drive, self._predictor
        if drive is not None and not drive.done and predictor is not None:
            step = predictor.last_step
            if step is None:
                caption = "method (SAM2Grasp): prompting the tracker"
            else:
                seen = "tracked" if step.visible else "target lost"
                caption = f"method (SAM2Grasp): {seen}, score {step.object_score:.1f}"
                b = np.asarray(step.box, dtype=np.float64)
                if b.shape == (4,) and np.any(b != 0):
                    box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
                if step.mask is not None and step.mask.shape == live.rgb.shape[:2]:
                    mask = step.mask
            if predictor.last_chunk is not None:
                chunk_px = project_tcp_path(predictor.last_chunk, self.calibration, self.intrinsics, self.tcp_offset)
        elif self.candidates:
            caption = "several objects match: click one"
        with self._lock:
            self._frame = OverlayFrame(live.rgb, box, mask, chunk_px, caption, self.candidates, live.seq)

    def frame(self) -> OverlayFrame | None:
        """The newest overlay frame, or None before the first camera image."""
        with self._lock:
            return self._frame


def plan_of_place(q0: F64, width: float, release: tuple[float, float, float], period_s: float, settle_s: float) -> F64:
    """The place motion (carry up and over, lower, open, rise, return to the start pose) as joint targets + gripper
    opening, one row per control period from the measured joints `q0`, then `settle_s` seconds holding the end."""
    planner = PlacePredictor(q0, width, release, period_s)
    rows: list[F64] = []
    limit = math.ceil(120.0 / period_s)
    while not planner.finished and len(rows) < limit:
        rows.append(planner.predict(None, np.zeros(7))[0])
    if not planner.finished:
        raise RuntimeError(f"the place motion to {release} m does not finish within 120 s")
    plan = np.asarray(rows, dtype=np.float64)
    settle = np.repeat(plan[-1:], max(1, math.ceil(settle_s / period_s)), axis=0)
    return np.concatenate([plan, settle])


def motion_json(drive: RealDrive) -> dict[str, Any] | None:
    """How a finished motion's control loop ran: end reason, ticks, lateness of tick starts (milliseconds), and
    the policy's inference time (milliseconds); None while it runs."""
    result = drive.control.result
    if result is None:
        return None

    def ms(seconds: float) -> float | None:
        return None if not math.isfinite(seconds) else round(seconds * 1000.0, 2)

    policy = None if drive.policy is None else drive.policy.result
    return {
        "end": result.reason.value,
        "detail": result.detail,
        "ticks": result.ticks,
        "clamped_ticks": result.clamped_ticks,
        "missed_ticks": result.missed_ticks,
        "period_error_p50_ms": ms(result.period_error_p50_s),
        "period_error_p99_ms": ms(result.period_error_p99_s),
        "period_error_max_ms": ms(result.period_error_max_s),
        "chunks": None if policy is None else policy.chunks,
        "inference_p50_ms": None if policy is None else ms(policy.inference_p50_s),
    }


def health_json(cell: RealCell, method: str) -> dict[str, Any]:
    """GET /health facts of the real cell, read from its drivers."""
    arm, gripper, feed, cfg = cell.arm, cell.gripper, cell.feed, cell.config
    status = cell.robot_status()
    try:
        joints: list[float] | None = [round(float(v), 4) for v in arm.joint_positions()]
    except Exception:
        joints = None
    try:
        servo: Any = arm.servo
    except Exception:  # not connected (closed, or the connection was lost beyond reconnecting)
        servo = None
    events = [{"kind": e.kind.value, "message": e.message} for e in list(arm.events.history)[-5:]]
    try:
        grip: dict[str, Any] = {
            "connected": True,
            "activated": bool(gripper.activated),
            "width_m": round(float(gripper.width()), 4),
            "fault": int(gripper.fault_code()),
        }
    except Exception as exc:
        grip = {"connected": False, "error": f"{type(exc).__name__}: {exc}"}
    age = feed.age_s()
    return {
        "backend": "ur5e",
        "robot": {
            "connected": status.connected,
            "protective_stop": status.protective_stop,
            "emergency_stop": status.emergency_stop,
            "message": status.message,
            "address": cfg.robot_ip,
            "moving": cell.moving,
            "joints_rad": joints,
            "servo_commands": None if servo is None else servo.sent,
            "reconnects": arm.reconnects,
            "recent_events": events,
            "last_halt_s": cell.last_halt_s,
            "first_command_at": cell.last_first_command_at,
            "last_motion": cell.last_motion,
            "gripper": grip,
        },
        "camera": {
            "ok": age is not None and age < max(1.0, 3 * cfg.frame_timeout_s),
            "serial": cell.camera.serial,
            "width": cfg.width,
            "height": cfg.height,
            "frames": feed.frames,
            "last_frame_age_s": None if age is None else round(age, 3),
            "error": feed.error or None,
        },
        "models": {
            "method": method,
            "head": str(cfg.head),
            "tracker": str(cfg.tracker),
            "present": cfg.head.exists() and cfg.tracker.exists(),
        },
        "safety": {
            "mode": cell.safety.limits.violation_mode,
            "max_tcp_speed_m_s": cell.safety.limits.max_tcp_speed,
            "command_timeout_s": cell.safety.limits.command_timeout,
            "violations": dict(cell.safety.violation_counts),
            "servo_violations": {} if servo is None else dict(servo.safety.violation_counts),
            "commands_forwarded": cell.gate.sent,
            "commands_dropped_after_halt": cell.gate.dropped,
        },
        "calibration": {
            "file": str(cfg.calibration),
            "camera_serial": cell.calibration.camera_serial,
            "date": cell.calibration.date,
            "reprojection_rms_px": cell.calibration.reprojection_rms_px,
        },
    }
