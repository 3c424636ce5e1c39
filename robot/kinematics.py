"""UR5e kinematics from its published DH parameters: forward kinematics, Jacobian and damped least-squares IK.

Shared by the simulated cell (which is built from the same parameters) and the real arm. All lengths in metres,
all angles in radians. Poses are 4x4 homogeneous transforms of the tool flange (or a TCP `tcp_offset` metres
along the flange z axis) in the robot's `base` frame, the frame the UR controller reports TCP poses in: the DH
frame 0 turned by 180° about z (so with the arm at home the tool is at +x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: UR5e standard DH parameters (d, a, alpha) for joints 1..6.
UR5E_D: tuple[float, ...] = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
UR5E_A: tuple[float, ...] = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
UR5E_ALPHA: tuple[float, ...] = (np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0)
#: Joint position limits (radians): ±2π for every joint but the elbow, which is ±π.
UR5E_JOINT_LIMITS: FloatArray = np.array(
    [[-2 * np.pi, 2 * np.pi]] * 2 + [[-np.pi, np.pi]] + [[-2 * np.pi, 2 * np.pi]] * 3
)
#: Rotation from the UR `base` frame to DH frame 0 (180° about z).
BASE_TO_DH: FloatArray = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Maximum joint speed, radians per second (180°/s on every joint).
UR5E_MAX_JOINT_SPEED: float = np.pi


class IKError(RuntimeError):
    """Inverse kinematics did not converge to the requested pose within tolerance."""


def dh_transform(theta: float, d: float, a: float, alpha: float) -> FloatArray:
    """Standard DH link transform Rz(theta) Tz(d) Tx(a) Rx(alpha)."""
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(alpha), np.sin(alpha)
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _check_q(q: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(q, dtype=np.float64)
    if arr.shape != (6,):
        raise ValueError(f"joint vector must have shape (6,), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"joint vector must be finite, got {arr.tolist()}")
    return arr


def joint_frames(q: npt.ArrayLike) -> list[FloatArray]:
    """Frames 0..6 (DH frame 0, then after each joint) as 4x4 transforms in the `base` frame."""
    qa = _check_q(q)
    frames = [BASE_TO_DH.copy()]
    for i in range(6):
        frames.append(frames[-1] @ dh_transform(qa[i], UR5E_D[i], UR5E_A[i], UR5E_ALPHA[i]))
    return frames


def forward(q: npt.ArrayLike, tcp_offset: float = 0.0) -> FloatArray:
    """Flange pose (or a TCP `tcp_offset` metres along the flange z axis) as a 4x4 transform in the base frame."""
    pose = joint_frames(q)[-1]
    if tcp_offset:
        pose = pose.copy()
        pose[:3, 3] += pose[:3, 2] * tcp_offset
    return pose


def jacobian(q: npt.ArrayLike, tcp_offset: float = 0.0) -> FloatArray:
    """Geometric Jacobian (6x6: linear rows then angular rows) of the TCP in the base frame."""
    frames = joint_frames(q)
    tip = frames[-1][:3, 3] + frames[-1][:3, 2] * tcp_offset
    jac = np.zeros((6, 6))
    for i in range(6):
        z = frames[i][:3, 2]
        p = frames[i][:3, 3]
        jac[:3, i] = np.cross(z, tip - p)
        jac[3:, i] = z
    return jac


def rotation_error(current: FloatArray, target: FloatArray) -> FloatArray:
    """Axis-angle vector (base frame, radians) that rotates `current` onto `target` (3x3 rotations)."""
    r = target @ current.T
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        return 0.5 * axis
    if np.pi - angle < 1e-6:
        # 180° turn: axis from the symmetric part.
        m = (r + np.eye(3)) / 2.0
        col = int(np.argmax(np.diag(m)))
        ax = m[:, col] / np.sqrt(max(m[col, col], 1e-12))
        return np.asarray(ax * angle, dtype=np.float64)
    return np.asarray(axis / (2.0 * np.sin(angle)) * angle, dtype=np.float64)


@dataclass(frozen=True)
class IKConfig:
    """Damped least-squares IK settings.

    damping: DLS damping (dimensionless, on metre/radian errors); max_iters: iterations;
    pos_tol: metres; rot_tol: radians; step_limit: radians, largest joint change per iteration;
    limit_margin: radians kept away from every joint limit.
    """

    damping: float = 0.02
    max_iters: int = 200
    pos_tol: float = 1e-4
    rot_tol: float = 1e-3
    step_limit: float = 0.2
    limit_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.damping <= 0 or self.max_iters < 1 or self.pos_tol <= 0 or self.rot_tol <= 0:
            raise ValueError(f"IKConfig values must be positive, got {self}")


def solve_ik(
    target: FloatArray,
    q_init: npt.ArrayLike,
    *,
    tcp_offset: float = 0.0,
    config: IKConfig | None = None,
) -> FloatArray:
    """Joint angles that place the TCP at the 4x4 `target` pose, starting from `q_init` (stays near it).

    Raises IKError when the pose cannot be reached within tolerance (out of reach, or limits in the way).
    """
    cfg = config or IKConfig()
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (4, 4) or not np.all(np.isfinite(target)):
        raise ValueError(f"target must be a finite 4x4 transform, got shape {target.shape}")
    q = _check_q(q_init).copy()
    lo = UR5E_JOINT_LIMITS[:, 0] + cfg.limit_margin
    hi = UR5E_JOINT_LIMITS[:, 1] - cfg.limit_margin
    pos_err = rot_err = np.inf
    for _ in range(cfg.max_iters):
        pose = forward(q, tcp_offset)
        dp = target[:3, 3] - pose[:3, 3]
        dr = rotation_error(pose[:3, :3], target[:3, :3])
        pos_err, rot_err = float(np.linalg.norm(dp)), float(np.linalg.norm(dr))
        if pos_err < cfg.pos_tol and rot_err < cfg.rot_tol:
            return q
        jac = jacobian(q, tcp_offset)
        err = np.concatenate([dp, dr])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + cfg.damping**2 * np.eye(6), err)
        scale = np.max(np.abs(dq)) / cfg.step_limit
        if scale > 1.0:
            dq /= scale
        q = np.clip(q + dq, lo, hi)
    raise IKError(
        f"IK did not converge: position error {pos_err * 1000:.2f} mm (tolerance {cfg.pos_tol * 1000:.2f} mm), "
        f"rotation error {np.degrees(rot_err):.3f}° (tolerance {np.degrees(cfg.rot_tol):.3f}°)"
    )


def axis_angle_to_matrix(rotvec: npt.ArrayLike) -> FloatArray:
    """3x3 rotation from an axis-angle vector (radians)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.asarray(np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx), dtype=np.float64)


def matrix_to_axis_angle(rot: FloatArray) -> FloatArray:
    """Axis-angle vector (radians) of a 3x3 rotation."""
    return rotation_error(np.eye(3), rot)


def tool_yaw(rot: npt.ArrayLike) -> float:
    """Yaw (radians about the base z axis) of the finger (y) axis of a tool rotation `rot` (3x3), as the table
    plane sees it."""
    r = np.asarray(rot, dtype=np.float64)
    return float(np.arctan2(r[1, 1], r[0, 1]))


def pose_to_vector(pose: FloatArray) -> FloatArray:
    """4x4 transform to (x, y, z, rx, ry, rz): metres and axis-angle radians."""
    return np.concatenate([pose[:3, 3], matrix_to_axis_angle(pose[:3, :3])])


def vector_to_pose(vec: npt.ArrayLike) -> FloatArray:
    """(x, y, z, rx, ry, rz) in metres and axis-angle radians to a 4x4 transform."""
    v = np.asarray(vec, dtype=np.float64)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise ValueError(f"pose vector must be 6 finite numbers (x, y, z, rx, ry, rz), got {v.tolist()}")
    pose = np.eye(4)
    pose[:3, :3] = axis_angle_to_matrix(v[3:])
    pose[:3, 3] = v[:3]
    return pose
