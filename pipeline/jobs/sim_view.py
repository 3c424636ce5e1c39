"""What the simulated cell shows: the planned chunk projected into the camera image, the box and mask of the
current controller, and the scene as JSON. Units: pixels, metres."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from grounding.detection import box_iou
from pipeline.jobs.cell import OverlayFrame
from pipeline.jobs.place import in_drop_zone
from pipeline.jobs.state import Controller
from robot.intrinsics import look_at, project
from robot.kinematics import forward
from robot.masks import mask_box
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer
from robot.sim.env import Observation, PickEnv
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.scene import SceneSpec

F64 = npt.NDArray[np.float64]
Box = tuple[float, float, float, float]


def chunk_pixels(env: PickEnv, chunk: npt.ArrayLike) -> F64 | None:
    """(K, 2) pixels of the TCP positions that a chunk of joint targets (K, 7) would reach, seen by the fixed
    camera; None without a scene."""
    scene = env.scene
    if scene is None:
        return None
    q = np.asarray(chunk, dtype=np.float64)[:, :6]
    points = np.array([forward(row, TCP_OFFSET)[:3, 3] for row in q])
    rot = look_at(scene.camera.position, scene.camera.target)
    uv = project(points, scene.camera.position, rot, env.config.intrinsics)
    return uv[np.all(np.isfinite(uv), axis=1)]


def _box(values: npt.ArrayLike | None) -> Box | None:
    if values is None:
        return None
    b = np.asarray(values, dtype=np.float64)
    if b.shape != (4,) or not np.any(b != 0):
        return None
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def overlay_of(
    obs: Observation, predictor: Any, controller: Controller | None
) -> tuple[Box | None, npt.NDArray[np.bool_] | None, str]:
    """Box, mask and caption to draw: the tracker's for the method, the simulator's for the expert."""
    if controller == Controller.METHOD:
        step = getattr(predictor, "last_step", None)
        if step is None:
            return None, None, "method: prompting the tracker"
        seen = "tracked" if step.visible else "target lost"
        return _box(step.box), step.mask, f"method (SAM2Grasp): {seen}, score {step.object_score:.1f}"
    if controller == Controller.EXPERT:
        return _box(obs.target_box), obs.target_mask, "expert (privileged simulator state)"
    return None, None, ""


def scene_json(env: PickEnv) -> dict[str, Any]:
    """The scene's seed, current target and objects (instance, name, position in metres, in the drop bin)."""
    scene = env.scene
    if scene is None or env.model is None:
        return {"seed": None, "target": None, "objects": []}
    objects = []
    for obj in scene.objects:
        p = env.object_position(obj.instance)
        objects.append(
            {
                "instance": obj.instance,
                "name": obj.name,
                "position_m": [round(float(v), 4) for v in p],
                "in_bin": in_drop_zone("bin", p),
            }
        )
    return {"seed": scene.seed, "target": env.target or None, "objects": objects}


def match_instance(instance_map: npt.NDArray[np.int16], scene: SceneSpec, box: Box) -> tuple[str, float]:
    """(instance id, IoU) of the object whose segmentation box best overlaps `box` (pixels); ("", 0) for none."""
    best, best_iou = "", 0.0
    for i, obj in enumerate(scene.objects):
        mask = instance_map == i
        if not mask.any():
            continue
        x0, y0, x1, y1 = (float(v) for v in mask_box(mask))
        iou = box_iou((x0, y0, x1, y1), box)
        if iou > best_iou:
            best, best_iou = obj.instance, iou
    return best, best_iou


def health_json(
    config: Any,
    status: RobotStatus,
    robot: dict[str, Any],
    frame: OverlayFrame | None,
    method: str,
    safety: SafetyLayer,
    scene: dict[str, Any],
) -> dict[str, Any]:
    """GET /health facts of the simulated cell: robot (status flags + `robot` facts), camera, models, safety."""
    return {
        "backend": "sim",
        "robot": {
            "connected": status.connected,
            "protective_stop": status.protective_stop,
            "emergency_stop": status.emergency_stop,
            "message": status.message,
            **robot,
        },
        "camera": {
            "ok": frame is not None,
            "width": config.width,
            "height": config.height,
            "frames": 0 if frame is None else frame.seq,
        },
        "models": {
            "method": method,
            "head": str(config.head),
            "tracker": str(config.tracker),
            "present": config.head.exists() and config.tracker.exists(),
        },
        "safety": {
            "mode": safety.limits.violation_mode,
            "max_tcp_speed_m_s": safety.limits.max_tcp_speed,
            "command_timeout_s": safety.limits.command_timeout,
            "violations": dict(safety.violation_counts),
        },
        "scene": scene,
    }
