"""Camera-to-base calibration of a fixed camera from a board carried by the arm (robot-world / hand-eye).

For each arm pose i the controller reports the flange pose A_i = T_base_flange and the camera sees the board at
B_i = T_camera_board. With X = T_flange_board and Z = T_base_camera unknown, A_i X = Z B_i for every i. A linear
solution (rotations from the null space of the stacked Kronecker system, then translations by least squares)
starts a Levenberg-Marquardt refinement of both transforms on the board corners' reprojection error.
Units: metres, radians, pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from robot.charuco import BoardPose, pose_matrix, project_points
from robot.intrinsics import CameraIntrinsics

F64 = npt.NDArray[np.float64]
#: Fewest views the solver accepts (the problem needs rotations about two non-parallel axes; more is better).
MIN_VIEWS = 4


class CalibrationSolveError(ValueError):
    """The views cannot determine the camera pose (too few, or too little rotation between them)."""


@dataclass(frozen=True)
class HandEyeSolution:
    """T_base_camera and T_flange_board (4x4, metres) and the corners' reprojection RMS over all views (pixels)."""

    T_base_camera: F64
    T_flange_board: F64
    rms_px: float


def nearest_rotation(m: F64) -> F64:
    """The rotation matrix nearest to a 3x3 matrix (Frobenius norm)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return np.asarray(u @ np.diag([1.0, 1.0, d]) @ vt, dtype=np.float64)


def _linear(a: Sequence[F64], b: Sequence[F64]) -> tuple[F64, F64]:
    eye = np.eye(3)
    rows = [np.hstack([np.kron(eye, ai[:3, :3]), -np.kron(bi[:3, :3].T, eye)]) for ai, bi in zip(a, b, strict=True)]
    _, s, vt = np.linalg.svd(np.vstack(rows))
    if s[-2] < 1e-6 * s[0]:
        raise CalibrationSolveError(
            "the views do not constrain the rotation: vary the board's orientation (tilt it about two different "
            "axes) between arm poses"
        )
    v = vt[-1]
    rx, rz = v[:9].reshape(3, 3, order="F"), v[9:].reshape(3, 3, order="F")
    det = np.linalg.det(rx)
    scale = np.sign(det) * abs(det) ** (1.0 / 3.0)
    rx, rz = nearest_rotation(rx / scale), nearest_rotation(rz / scale)
    lhs = np.vstack([np.hstack([ai[:3, :3], -eye]) for ai in a])
    rhs = np.concatenate([rz @ bi[:3, 3] - ai[:3, 3] for ai, bi in zip(a, b, strict=True)])
    t, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    x, z = np.eye(4), np.eye(4)
    x[:3, :3], x[:3, 3] = rx, t[:3]
    z[:3, :3], z[:3, 3] = rz, t[3:]
    return x, z


def _params(x: F64, z: F64) -> F64:
    rx, _ = cv2.Rodrigues(x[:3, :3])
    rz, _ = cv2.Rodrigues(z[:3, :3])
    return np.concatenate([rx.ravel(), x[:3, 3], rz.ravel(), z[:3, 3]])


def _unpack(p: F64) -> tuple[F64, F64]:
    return pose_matrix(p[0:3], p[3:6]), pose_matrix(p[6:9], p[9:12])


def _residuals(p: F64, a: Sequence[F64], views: Sequence[BoardPose], intrinsics: CameraIntrinsics) -> F64:
    x, z = _unpack(p)
    z_inv = np.linalg.inv(z)
    out = [
        (project_points(v.object_points, z_inv @ ai @ x, intrinsics) - v.image_points).ravel()
        for ai, v in zip(a, views, strict=True)
    ]
    return np.concatenate(out)


def _refine(p: F64, a: Sequence[F64], views: Sequence[BoardPose], intrinsics: CameraIntrinsics) -> F64:
    """Levenberg-Marquardt on the reprojection residuals with a forward-difference Jacobian."""
    lam = 1e-3
    r = _residuals(p, a, views, intrinsics)
    cost = float(r @ r)
    for _ in range(100):
        jac = np.empty((r.size, p.size))
        step = 1e-7  # radians and metres alike
        for k in range(p.size):
            dp = p.copy()
            dp[k] += step
            jac[:, k] = (_residuals(dp, a, views, intrinsics) - r) / step
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = converged = False
        while lam < 1e8:
            delta = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jtr)
            candidate = p + delta
            r_new = _residuals(candidate, a, views, intrinsics)
            cost_new = float(r_new @ r_new)
            if cost_new < cost:
                p, r, lam, improved = candidate, r_new, max(lam / 10, 1e-9), True
                converged = cost - cost_new < 1e-10 * cost
                cost = cost_new
                break
            lam *= 10
        if not improved or converged:
            break
    return p


def solve_camera_to_base(
    flange_poses: Sequence[F64], views: Sequence[BoardPose], intrinsics: CameraIntrinsics
) -> HandEyeSolution:
    """T_base_camera from flange poses (4x4, base frame, metres) and the board seen at each of them."""
    if len(flange_poses) != len(views):
        raise ValueError(f"{len(flange_poses)} flange poses but {len(views)} board views: they must pair up")
    if len(views) < MIN_VIEWS:
        raise CalibrationSolveError(f"need at least {MIN_VIEWS} views with the board detected, got {len(views)}")
    b = [v.T_camera_board for v in views]
    x, z = _linear(flange_poses, b)
    p = _refine(_params(x, z), flange_poses, views, intrinsics)
    x, z = _unpack(p)
    r = _residuals(p, flange_poses, views, intrinsics).reshape(-1, 2)
    rms = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
    return HandEyeSolution(z, x, rms)
