"""The safety layer: every limit clamps or refuses as configured, names itself, and is on by default."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest

from robot.kinematics import UR5E_JOINT_LIMITS
from robot.safety import SafetyLayer, SafetyLimits, SafetyViolation
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET

HOME = np.array(HOME_Q)
HUGE_BOX: dict[str, Any] = {"workspace_min": (-2.0, -2.0, -2.0), "workspace_max": (2.0, 2.0, 2.0)}


def layer(period_s: float = 0.01, **limits: object) -> SafetyLayer:
    s = SafetyLayer(SafetyLimits(**limits), tcp_offset=TCP_OFFSET, period_s=period_s)  # type: ignore[arg-type]
    s.reset(HOME, 0.0)
    return s


def test_defaults_are_on_and_clamp_a_one_radian_jump() -> None:
    s = SafetyLayer(tcp_offset=TCP_OFFSET)
    s.reset(HOME, 0.0)
    cmd = s.check(HOME + np.array([1.0, 0, 0, 0, 0, 0]), 0.05, 0.01)
    assert cmd.clamped
    assert any(v.startswith("joint_step: shoulder_pan") for v in cmd.violations)
    assert np.max(np.abs(cmd.q - HOME)) <= math.pi * 0.01
    lim = SafetyLimits()
    assert (lim.joint_margin, lim.max_tcp_speed, lim.max_gripper_force, lim.command_timeout) == (0.05, 0.25, 60, 0.1)
    assert lim.max_joint_speed == pytest.approx(math.pi)
    assert lim.violation_mode == "clamp"


def test_within_limits_passes_unchanged() -> None:
    s = layer()
    target = HOME + 0.001
    cmd = s.check(target, 0.04, 0.01, gripper_force=30.0)
    assert not cmd.clamped
    assert cmd.violations == ()
    np.testing.assert_array_equal(cmd.q, target)
    assert (cmd.gripper_width, cmd.gripper_force) == (0.04, 30.0)


def test_joint_limit_clamps_and_names_the_joint() -> None:
    s = SafetyLayer(SafetyLimits(**HUGE_BOX), tcp_offset=TCP_OFFSET)
    start = HOME.copy()
    start[2] = math.pi - 0.052
    s.reset(start, 0.0)
    req = start.copy()
    req[2] = 3.2
    cmd = s.check(req, 0.05, 0.01)
    assert cmd.q[2] == pytest.approx(math.pi - 0.05)
    assert [v.split(":")[0] for v in cmd.violations] == ["joint_limit"]
    (msg,) = cmd.violations
    assert "elbow" in msg
    assert "3.2000" in msg
    assert "3.0916" in msg


def test_each_limit_refuses_in_refuse_mode_and_keeps_state() -> None:
    near_limit = HOME.copy()
    near_limit[2] = math.pi - 0.06
    cases: list[tuple[str, dict[str, Any], Any, Any]] = [
        ("joint_limit", HUGE_BOX, near_limit, near_limit + np.array([0, 0, 0.02, 0, 0, 0])),
        ("joint_step", {}, HOME, HOME + np.array([0.1, 0, 0, 0, 0, 0])),
        ("tcp_speed", {"max_tcp_speed": 0.05}, HOME, HOME + np.array([0, 0.02, 0, 0, 0, 0])),
        ("workspace", {"workspace_max": (0.85, 0.55, 0.3005)}, HOME, HOME + np.array([0, -0.01, 0, 0, 0, 0])),
    ]
    for name, extra, start, req in cases:
        s = SafetyLayer(SafetyLimits(violation_mode="refuse", **extra), tcp_offset=TCP_OFFSET)
        s.reset(np.asarray(start), 0.0)
        with pytest.raises(SafetyViolation, match=name) as info:
            s.check(np.asarray(req), 0.05, 0.01)
        assert any(v.startswith(name) for v in info.value.violations)
        np.testing.assert_array_equal(s.last_q, start)
        assert s.violation_counts[name] == 1


def test_gripper_width_and_force_clamp_or_refuse() -> None:
    s = layer()
    cmd = s.check(HOME, 0.1, 0.01, gripper_force=100.0)
    assert (cmd.gripper_width, cmd.gripper_force) == (0.085, 60.0)
    assert {v.split(":")[0] for v in cmd.violations} == {"gripper_width", "gripper_force"}
    assert "0.1000 m outside [0.0, 0.085] m" in cmd.violations[0]
    assert s.check(HOME, -0.01, 0.02).gripper_width == 0.0
    r = layer(violation_mode="refuse")
    with pytest.raises(SafetyViolation, match=r"gripper_force: 100\.0 N outside"):
        r.check(HOME, 0.05, 0.01, gripper_force=100.0)


def test_tcp_speed_clamp_scales_the_joint_step_onto_the_cap() -> None:
    s = layer(max_tcp_speed=0.05)
    before = s.tcp_position(HOME)
    cmd = s.check(HOME + np.array([0, 0.02, 0, 0, 0, 0]), 0.05, 0.01)
    moved = float(np.linalg.norm(s.tcp_position(cmd.q) - before))
    assert any(v.startswith("tcp_speed") for v in cmd.violations)
    assert 0.0004 < moved <= 0.05 * 0.01
    assert cmd.q[1] > HOME[1]  # moved part of the way, in the requested direction


def test_workspace_clamp_cuts_the_motion_at_the_box() -> None:
    z_max = 0.3005  # home TCP is at z = 0.29998 m
    s = layer(workspace_max=(0.85, 0.55, z_max))
    cmd = s.check(HOME + np.array([0, -0.01, 0, 0, 0, 0]), 0.05, 0.01)  # shoulder lift up: the TCP rises
    assert any(v.startswith("workspace") and "outside the box" in v for v in cmd.violations)
    z = s.tcp_position(cmd.q)[2]
    assert 0.29998 < z <= z_max


def test_workspace_started_outside_allows_only_motion_back_in() -> None:
    s = SafetyLayer(SafetyLimits(workspace_max=(0.85, 0.55, 0.25)), tcp_offset=TCP_OFFSET)
    s.reset(HOME, 0.0)  # TCP at z = 0.30, above the box
    up = s.check(HOME + np.array([0, -0.01, 0, 0, 0, 0]), 0.05, 0.01)
    np.testing.assert_array_equal(up.q, HOME)
    assert any(v.startswith("workspace") for v in up.violations)
    down = s.check(HOME + np.array([0, 0.01, 0, 0, 0, 0]), 0.05, 0.02)
    assert not any(v.startswith("workspace") for v in down.violations)
    assert s.tcp_position(down.q)[2] < s.tcp_position(HOME)[2]


@pytest.mark.parametrize("mode", ["clamp", "refuse"])
def test_non_finite_is_always_refused(mode: str) -> None:
    s = layer(violation_mode=mode)
    for q, g, f in (
        (HOME + np.array([np.nan, 0, 0, 0, 0, 0]), 0.05, None),
        (HOME, math.inf, None),
        (HOME, 0.05, math.nan),
    ):
        with pytest.raises(SafetyViolation, match="non_finite"):
            s.check(q, g, 0.01, gripper_force=f)
    np.testing.assert_array_equal(s.last_q, HOME)
    assert s.violation_counts["non_finite"] == 3


def test_command_timeout_heartbeat() -> None:
    s = layer()
    assert not s.heartbeat_expired(0.05)
    assert s.heartbeat_expired(0.11)
    s.check(HOME, 0.05, 0.1)
    assert not s.heartbeat_expired(0.15)
    assert s.heartbeat_expired(0.21)
    fresh = SafetyLayer()
    fresh.reset(HOME)
    assert not fresh.heartbeat_expired(100.0)  # no time reference yet


def test_check_before_reset_and_bad_limits_say_what_is_valid() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        SafetyLayer().check(HOME, 0.05, 0.0)
    with pytest.raises(ValueError, match="max_joint_speed must be within"):
        SafetyLimits(max_joint_speed=4.0)
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=(0.9, -0.5, 0.0))
    with pytest.raises(ValueError, match="'clamp' or 'refuse'"):
        SafetyLimits(violation_mode="warn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        layer().check(np.zeros(5), 0.05, 0.0)


def test_violations_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    s = layer()
    with caplog.at_level(logging.WARNING, logger="robot.safety"):
        s.check(HOME + 1.0, 0.05, 0.01)
    assert any("joint_step" in r.getMessage() for r in caplog.records)
    assert s.violation_total >= 1


def test_random_commands_never_leave_the_limits() -> None:
    """Property-style: a seeded stream of wild requests; every output obeys every limit."""
    rng = np.random.default_rng(0)
    lim = SafetyLimits(workspace_min=(0.3, -0.2, 0.2), workspace_max=(0.6, 0.2, 0.4), max_tcp_speed=0.2)
    s = SafetyLayer(lim, tcp_offset=TCP_OFFSET, period_s=0.01)
    s.reset(HOME, 0.0)
    lo, hi = UR5E_JOINT_LIMITS[:, 0] + lim.joint_margin, UR5E_JOINT_LIMITS[:, 1] - lim.joint_margin
    box_lo, box_hi = np.array(lim.workspace_min), np.array(lim.workspace_max)
    q_prev, clamped = HOME.copy(), 0
    direction = np.zeros(6)
    for k in range(600):
        if k % 40 == 0:
            direction = rng.normal(0.0, 1.0, 6)  # a persistent drift (rad/s) that runs into the box walls
        kind = k % 7
        if kind == 0:
            req = rng.uniform(-7, 7, 6)
        elif kind == 1:
            req = q_prev + rng.normal(0.0, 0.5, 6)
        else:
            req = q_prev + direction * 0.01 * rng.choice([0.5, 2.0, 10.0])
        cmd = s.check(req, float(rng.uniform(-0.05, 0.15)), 0.01 * (k + 1), gripper_force=float(rng.uniform(0, 200)))
        tcp_prev, tcp = s.tcp_position(q_prev), s.tcp_position(cmd.q)
        assert np.all(cmd.q >= lo)
        assert np.all(cmd.q <= hi)
        assert np.max(np.abs(cmd.q - q_prev)) <= s.max_step + 1e-12
        assert np.linalg.norm(tcp - tcp_prev) <= s.max_tcp_step + 1e-12
        assert np.all(tcp >= box_lo)
        assert np.all(tcp <= box_hi)
        assert 0.0 <= cmd.gripper_width <= 0.085
        assert 0.0 <= cmd.gripper_force <= 60.0
        clamped += cmd.clamped
        q_prev = cmd.q
    assert clamped > 100  # the stream really pushed against every limit
    assert set(s.violation_counts) == {
        "joint_limit",
        "joint_step",
        "tcp_speed",
        "workspace",
        "gripper_width",
        "gripper_force",
    }
    assert float(np.linalg.norm(s.tcp_position(q_prev) - s.tcp_position(HOME))) > 0.005  # and the arm still moved


def test_per_limit_policy_overrides_the_global_mode() -> None:
    s = layer(limit_modes={"joint_step": "refuse"})
    assert s.limits.mode_for("joint_step") == "refuse"
    assert s.limits.mode_for("gripper_width") == "clamp"
    cmd = s.check(HOME, 0.2, 0.01)  # gripper width still clamps
    assert cmd.gripper_width == 0.085
    with pytest.raises(SafetyViolation, match="joint_step"):
        s.check(HOME + np.array([0.5, 0, 0, 0, 0, 0]), 0.05, 0.02)
    r = layer(violation_mode="refuse", limit_modes={"gripper_force": "clamp"})
    assert r.check(HOME, 0.05, 0.01, gripper_force=500.0).gripper_force == 60.0
    with pytest.raises(ValueError, match="unknown limit 'speed'; valid limits: joint_limit"):
        SafetyLimits(limit_modes={"speed": "clamp"})
    with pytest.raises(ValueError, match="'clamp' or 'refuse'"):
        SafetyLimits(limit_modes={"workspace": "ignore"})  # type: ignore[dict-item]
    assert hash(SafetyLimits(limit_modes={"workspace": "refuse"})) == hash(
        SafetyLimits(limit_modes={"workspace": "refuse"})
    )
