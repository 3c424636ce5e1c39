"""UR5e kinematics: forward kinematics against an independent DH product, the Jacobian against finite
differences, IK round trips, axis-angle conversions and input validation."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from robot.kinematics import (
    UR5E_JOINT_LIMITS,
    IKConfig,
    IKError,
    axis_angle_to_matrix,
    forward,
    jacobian,
    matrix_to_axis_angle,
    pose_to_vector,
    rotation_error,
    solve_ik,
    vector_to_pose,
)
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET

F64 = npt.NDArray[np.float64]

# The published UR5e DH table, written out here independently of robot.kinematics.
DH_D = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
DH_A = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
DH_ALPHA = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)


def _rot_z(theta: float) -> F64:
    c, s = math.cos(theta), math.sin(theta)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def _rot_x(alpha: float) -> F64:
    c, s = math.cos(alpha), math.sin(alpha)
    m = np.eye(4)
    m[1:3, 1:3] = [[c, -s], [s, c]]
    return m


def _trans(x: float, y: float, z: float) -> F64:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def reference_fk(q: F64, tcp_offset: float = 0.0) -> F64:
    """Base-frame pose from the DH table: Rz(π) · Π Rz(θi) Tz(di) Tx(ai) Rx(αi) · Tz(tcp_offset)."""
    pose = _rot_z(math.pi)
    for i in range(6):
        pose = pose @ _rot_z(float(q[i])) @ _trans(0, 0, DH_D[i]) @ _trans(DH_A[i], 0, 0) @ _rot_x(DH_ALPHA[i])
    return pose @ _trans(0, 0, tcp_offset)


def _log_rotation(rot: F64) -> F64:
    """Axis-angle of a rotation (for small to moderate angles), written independently of the module."""
    angle = math.acos(float(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
    if angle < 1e-12:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return axis * angle / (2 * math.sin(angle))


def _random_q(rng: np.random.Generator) -> F64:
    return rng.uniform(UR5E_JOINT_LIMITS[:, 0], UR5E_JOINT_LIMITS[:, 1])


def test_forward_matches_independent_dh_product() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        q = _random_q(rng)
        np.testing.assert_allclose(forward(q), reference_fk(q), atol=1e-12)
        np.testing.assert_allclose(forward(q, TCP_OFFSET), reference_fk(q, TCP_OFFSET), atol=1e-12)


def test_forward_zero_pose_by_hand() -> None:
    # At q = 0 the UR5e is stretched out along DH -x: flange at (a2 + a3, -(d4 + d6), d1 - d5) in DH frame 0,
    # which the 180° base turn maps to (+0.8172, +0.2329, 0.0628), tool z along base +y.
    pose = forward(np.zeros(6))
    np.testing.assert_allclose(pose[:3, 3], [0.8172, 0.2329, 0.0628], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)


def test_home_pose_points_down_above_table() -> None:
    pose = forward(HOME_Q, TCP_OFFSET)
    assert pose[2, 2] < -0.999  # tool z straight down
    assert 0.35 < pose[0, 3] < 0.55
    assert 0.2 < pose[2, 3] < 0.4


def test_forward_is_a_rigid_transform() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        pose = forward(_random_q(rng), TCP_OFFSET)
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])


@pytest.mark.parametrize("tcp_offset", [0.0, TCP_OFFSET])
def test_jacobian_matches_finite_differences(tcp_offset: float) -> None:
    rng = np.random.default_rng(3)
    h = 1e-6
    for _ in range(30):
        q = _random_q(rng)
        jac = jacobian(q, tcp_offset)
        num = np.zeros((6, 6))
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = h
            plus, minus = reference_fk(q + dq, tcp_offset), reference_fk(q - dq, tcp_offset)
            num[:3, i] = (plus[:3, 3] - minus[:3, 3]) / (2 * h)
            num[3:, i] = _log_rotation(plus[:3, :3] @ minus[:3, :3].T) / (2 * h)
        np.testing.assert_allclose(jac, num, atol=1e-6)


def test_ik_round_trip_from_random_reachable_poses() -> None:
    rng = np.random.default_rng(4)
    home = np.asarray(HOME_Q)
    for _ in range(60):
        q_true = home + rng.uniform(-0.5, 0.5, size=6)
        target = forward(q_true, TCP_OFFSET)
        q_init = q_true + rng.uniform(-0.2, 0.2, size=6)
        q = solve_ik(target, q_init, tcp_offset=TCP_OFFSET)
        reached = forward(q, TCP_OFFSET)
        assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) <= 1e-4
        assert np.linalg.norm(rotation_error(reached[:3, :3], target[:3, :3])) <= 1e-3
        assert np.all(q >= UR5E_JOINT_LIMITS[:, 0])
        assert np.all(q <= UR5E_JOINT_LIMITS[:, 1])


def test_ik_stays_put_at_the_solution() -> None:
    q = np.asarray(HOME_Q)
    np.testing.assert_array_equal(solve_ik(forward(q, TCP_OFFSET), q, tcp_offset=TCP_OFFSET), q)


def test_ik_raises_for_a_pose_out_of_reach() -> None:
    target = forward(HOME_Q, TCP_OFFSET)
    target[:3, 3] = [2.0, 0.0, 0.2]  # 2 m away; the UR5e reaches about 0.85 m
    with pytest.raises(IKError, match="did not converge"):
        solve_ik(target, HOME_Q, tcp_offset=TCP_OFFSET)


def test_axis_angle_matrix_round_trip() -> None:
    rng = np.random.default_rng(5)
    angles = np.concatenate([[1e-10, 1e-6, 1e-3, 0.5, math.pi / 2, 3.0, math.pi - 1e-3], rng.uniform(0, 3.1, 50)])
    for angle in angles:
        axis = rng.normal(size=3)
        vec = axis / np.linalg.norm(axis) * angle
        rot = axis_angle_to_matrix(vec)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_allclose(matrix_to_axis_angle(rot), vec, atol=1e-8)


def test_axis_angle_known_rotation() -> None:
    rot = axis_angle_to_matrix([0.0, 0.0, math.pi / 2])
    np.testing.assert_allclose(rot, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_array_equal(axis_angle_to_matrix(np.zeros(3)), np.eye(3))


@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0), (0.3, -0.5, 0.8)])
def test_half_turn_maps_back_to_the_same_matrix(axis: tuple[float, float, float]) -> None:
    k = np.asarray(axis) / np.linalg.norm(axis)
    rot = axis_angle_to_matrix(k * math.pi)
    vec = matrix_to_axis_angle(rot)
    assert np.linalg.norm(vec) == pytest.approx(math.pi, abs=1e-6)
    np.testing.assert_allclose(axis_angle_to_matrix(vec), rot, atol=1e-6)


def test_rotation_error_rotates_current_onto_target() -> None:
    rng = np.random.default_rng(6)
    for _ in range(30):
        a = axis_angle_to_matrix(rng.uniform(-1.5, 1.5, 3))
        b = axis_angle_to_matrix(rng.uniform(-1.5, 1.5, 3))
        err = rotation_error(a, b)
        np.testing.assert_allclose(axis_angle_to_matrix(err) @ a, b, atol=1e-9)


def test_pose_vector_round_trip() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        pose = forward(_random_q(rng), TCP_OFFSET)
        np.testing.assert_allclose(vector_to_pose(pose_to_vector(pose)), pose, atol=1e-9)


@pytest.mark.parametrize(
    "q",
    [np.zeros(5), np.zeros(7), np.zeros((2, 6)), [0, 0, np.nan, 0, 0, 0], [0, 0, 0, np.inf, 0, 0]],
    ids=["short", "long", "2d", "nan", "inf"],
)
def test_bad_joint_vectors_are_rejected(q: npt.ArrayLike) -> None:
    with pytest.raises(ValueError, match="joint vector"):
        forward(q)
    with pytest.raises(ValueError, match="joint vector"):
        jacobian(q)
    with pytest.raises(ValueError, match="joint vector"):
        solve_ik(forward(HOME_Q), q)


def test_bad_ik_targets_are_rejected() -> None:
    with pytest.raises(ValueError, match="4x4"):
        solve_ik(np.eye(3), HOME_Q)
    target = forward(HOME_Q)
    target[0, 3] = np.nan
    with pytest.raises(ValueError, match="4x4"):
        solve_ik(target, HOME_Q)


def test_bad_pose_vectors_and_ik_config_are_rejected() -> None:
    with pytest.raises(ValueError, match="6 finite"):
        vector_to_pose([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="6 finite"):
        vector_to_pose([0.0, 0.0, np.nan, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        IKConfig(damping=0.0)
    with pytest.raises(ValueError, match="positive"):
        IKConfig(max_iters=0)
