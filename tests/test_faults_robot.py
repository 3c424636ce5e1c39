"""Robot faults: stops mid-grasp and a slipping object in the simulated cell through the real runtime
(stand-in tracker and head, pipeline.faults.sim_cell; simulated time), the RTDE link dropping under the real UR5e
driver over the MOCK ur_rtde boundary (tests/fake_rtde.py, simulated clock), and a gripper socket timeout with the
real Robotiq driver against the URCap server test double (tests/robotiq_server.py). After each, a next run must
start cleanly."""

from __future__ import annotations

import pytest
import torch

from pipeline.faults.core import ScenarioResult
from pipeline.faults.robot_faults import (
    emergency_stop,
    gripper_socket_timeout,
    object_dropped,
    protective_stop,
    rtde_drop_and_return,
)

torch.set_num_threads(1)


def assert_safe(r: ScenarioResult, reason: str) -> None:
    assert (r.end_state, r.reason) == ("recovered", reason), r.detail
    assert r.stop_called
    assert r.moved_after_stop == 0
    assert r.limit_violations == 0
    assert r.extra["next_run_clean"]


@pytest.mark.render
def test_protective_stop_mid_grasp() -> None:
    r = protective_stop()
    assert_safe(r, "protective_stop")
    assert r.safe_stop_ms == 0.0  # stopped on the very tick that read the stop (simulated time)


@pytest.mark.render
def test_emergency_stop_mid_grasp() -> None:
    r = emergency_stop()
    assert_safe(r, "emergency_stop")
    assert r.safe_stop_ms == 0.0


def test_rtde_connection_drop_then_return() -> None:
    r = rtde_drop_and_return()
    assert_safe(r, "disconnected")
    assert r.extra["reconnect_calls"] == 2  # bounded retries, then the loop ended
    assert r.safe_stop_ms <= 20.0  # simulated: the control tick after the servo tick that lost the link
    assert r.detect_ms == pytest.approx(r.safe_stop_ms)  # stopped on the tick that read the drop


def test_gripper_socket_timeout() -> None:
    r = gripper_socket_timeout()
    assert_safe(r, "robot_error")
    assert "GripperTimeoutError" in r.detail
    assert r.safe_stop_ms <= 200.0 + 2000.0  # the 0.2 s reply timeout, plus margin for a loaded machine
    assert r.detect_ms >= 200.0  # a silent socket is known only once the reply timeout ran out
    # the move waits on the gripper's own thread: the control tick kept running at its period meanwhile
    assert r.extra["ticks_while_waiting"] >= 10
    assert r.extra["longest_tick_ms"] < 100.0  # far below the 0.2 s the blocked send took


@pytest.mark.render
def test_object_slipping_out_of_the_gripper_ends_dropped() -> None:
    r = object_dropped()
    assert_safe(r, "dropped")
