"""The simulated cell with a ChArUco board bolted to the flange: the arm and camera stand-ins of the calibration
routine, and the ground truth (the fixed camera's true pose) to measure it against.

The board is a textured plate in front of the gripper (flange z axis), added to the cell's MJCF by this module
only: the cell's own scenes and renders are untouched. Arm poses are set kinematically (no physics), as a
settled real arm would hold them. Units: metres, radians, seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import mujoco
import numpy as np
import numpy.typing as npt

from robot.camera_view import GL_TO_CV
from robot.charuco import BoardSpec
from robot.intrinsics import CameraIntrinsics
from robot.kinematics import IKError, forward, solve_ik
from robot.protocols import CameraFrame
from robot.sim.config import HOME_Q, CellConfig
from robot.sim.mjcf import ARM_JOINTS, ModelOptions, build_mjcf
from robot.sim.render import CameraRenderer
from robot.sim.scene import SceneRequest, sample_scene

F64 = npt.NDArray[np.float64]
#: Distance from the flange to the board's printed face along the flange z axis, metres (clear of the fingers).
BOARD_OFFSET_M = 0.18
#: White margin around the squares, in squares.
MARGIN_SQUARES = 0.5
#: Serial number the simulated camera reports.
SIM_SERIAL = "SIM-FRONT-0"
_FLANGE_SITE = '<site name="flange" size="0.005"/>'


def _board_xml(png: Path, board: BoardSpec) -> tuple[str, str]:
    w, h = board.size_m
    hx, hy = w / 2 + MARGIN_SQUARES * board.square_m, h / 2 + MARGIN_SQUARES * board.square_m
    asset = f'<texture name="charuco" type="2d" file="{png}"/><material name="charuco" texture="charuco"/>'
    geom = (
        f'<geom name="charuco_board" type="box" pos="0 0 {BOARD_OFFSET_M - 0.002:.4f}" size="{hx:.5f} {hy:.5f} 0.002" '
        'material="charuco" contype="0" conaffinity="0" mass="0.05"/>'
    )
    return asset, geom


class SimBoardCell:
    """The cell's arm, flange board and fixed camera (`ArmPoseSource` and `Camera`).

    seed: scene seed (camera jitter, lighting); board: the board on the flange; config: cell settings (image
    size, camera field of view).
    """

    def __init__(self, seed: int = 0, board: BoardSpec | None = None, config: CellConfig | None = None) -> None:
        self.board = board or BoardSpec()
        self.config = config or CellConfig()
        self.scene = sample_scene(seed, SceneRequest(n_objects=(1, 1)))
        self._tmp = tempfile.TemporaryDirectory(prefix="sam2grasp-charuco-")
        png = Path(self._tmp.name) / "charuco.png"
        px = 100
        cv2.imwrite(str(png), self.board.image(px_per_square=px, margin_squares=MARGIN_SQUARES))
        asset, geom = _board_xml(png, self.board)
        cfg = self.config
        xml = build_mjcf(
            self.scene,
            ModelOptions(image_width=cfg.image_width, image_height=cfg.image_height, fovy_deg=cfg.fovy_deg),
        )
        if _FLANGE_SITE not in xml or "</asset>" not in xml:
            raise RuntimeError("the cell's MJCF has no flange site or asset block to attach the board to")
        xml = xml.replace("</asset>", asset + "</asset>", 1).replace(_FLANGE_SITE, _FLANGE_SITE + geom, 1)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._qadr = np.array([self.model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._renderer = CameraRenderer(
            self.model, "front", cfg.image_width, cfg.image_height, depth=False, segmentation=False
        )
        self.intrinsics: CameraIntrinsics = cfg.intrinsics
        self.time_s = 0.0
        self.move_to(np.asarray(HOME_Q))

    # ---------------------------------------------------------------- ArmPoseSource
    def move_to(self, q: F64) -> None:
        """Put the arm at joint angles `q` ((6,) radians)."""
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != (6,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"q must be 6 finite joint angles (radians), got {arr.tolist()}")
        self.data.qpos[self._qadr] = arr
        mujoco.mj_forward(self.model, self.data)
        self.time_s += 1.0

    def flange_pose(self) -> F64:
        """Flange pose (4x4, base frame) by the UR5e kinematics, as the controller reports it."""
        return forward(self.data.qpos[self._qadr])

    # ---------------------------------------------------------------- Camera
    def read(self, timeout_s: float) -> CameraFrame:
        """Render the fixed camera now (`timeout_s` unused: a render is always ready)."""
        rgb = self._renderer.render(self.data).rgb
        return CameraFrame(rgb, None, self.time_s, self.intrinsics)

    # ---------------------------------------------------------------- truth and poses
    def true_camera_pose(self) -> F64:
        """The fixed camera's true pose in the base frame (OpenCV camera axes), metres."""
        cam = self.model.camera("front").id
        out = np.eye(4)
        out[:3, :3] = self.data.cam_xmat[cam].reshape(3, 3) @ GL_TO_CV
        out[:3, 3] = self.data.cam_xpos[cam]
        return out

    def board_facing_poses(self, n: int, seed: int = 0, max_tilt_deg: float = 25.0) -> list[F64]:
        """`n` reachable joint poses that hold the board 0.45-0.65 m in front of the camera, tilted up to
        `max_tilt_deg` degrees about random axes and rolled about its normal."""
        rng = np.random.default_rng(seed)
        cam = self.true_camera_pose()[:3, 3]  # a real cell would use the camera's rough, measured position
        poses: list[F64] = []
        q_seed = np.asarray(HOME_Q, dtype=np.float64)
        for _ in range(n * 20):
            if len(poses) == n:
                break
            centre = np.array([rng.uniform(0.60, 0.75), rng.uniform(-0.15, 0.15), rng.uniform(0.25, 0.42)])
            normal = cam - centre
            normal /= np.linalg.norm(normal)
            tilt_axis = np.cross(normal, rng.normal(size=3))
            tilt_axis /= np.linalg.norm(tilt_axis)
            tilt, _ = cv2.Rodrigues(tilt_axis * np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg)))
            z = tilt @ normal
            x = np.cross([0.0, 0.0, 1.0], z)
            x /= np.linalg.norm(x)
            rot = np.stack([x, np.cross(z, x), z], axis=1)
            roll, _ = cv2.Rodrigues(z * np.radians(rng.uniform(-30.0, 30.0)))
            target = np.eye(4)
            target[:3, :3] = roll @ rot
            target[:3, 3] = centre - BOARD_OFFSET_M * z
            try:
                q = solve_ik(target, q_seed)
            except IKError:
                continue
            poses.append(q)
        if len(poses) < n:
            raise RuntimeError(f"found only {len(poses)} of {n} reachable board poses")
        return poses

    def close(self) -> None:
        """Free the renderer and the board texture's temporary directory."""
        self._renderer.close()
        self._tmp.cleanup()

    def __enter__(self) -> SimBoardCell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
