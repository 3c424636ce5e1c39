"""Connecting to a controller: the real ur_rtde `RTDEReceiveInterface` against the RTDE/dashboard protocol server of
tests/rtde_server.py (another process), and the typed errors for the usual failures. The control side is the MOCK
of tests/fake_rtde.py (its script/register protocol has no server here)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from fake_rtde import FakeController, FakeRtdeFactory
from rtde_server import RtdeServer, ServerOptions

from robot.ur5e import UR5e
from robot.ur5e_boundary import RECEIVE_VARIABLES, UrRtdeFactory
from robot.ur5e_config import UR5eConfig
from robot.ur5e_connect import probe_controller
from robot.ur5e_errors import (
    InvalidAddressError,
    ProgramRunningError,
    ProtectiveStopError,
    RegistersInUseError,
    RemoteControlOffError,
    RobotUnreachableError,
)
from robot.ur5e_events import EventKind


def loopback() -> str:
    """A fresh loopback address, so each test owns ports 30004 and 29999 on it."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def wait_for(cond: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def real_receive(host: str, frequency_hz: float, variables: Sequence[str]) -> Any:
    return UrRtdeFactory().receive(host, frequency_hz, variables)


def test_real_receive_reads_joints_and_safety_flags_from_the_server() -> None:
    host = loopback()
    with RtdeServer(host) as server:
        ctl = FakeController()
        cfg = UR5eConfig(host=host, handle_signals=False, connect_timeout_s=1.0)
        with UR5e(cfg, factory=FakeRtdeFactory(ctl, receive_factory=real_receive)) as robot:
            assert ("construct_receive", (host, 500.0, RECEIVE_VARIABLES)) in ctl.calls
            assert wait_for(lambda: np.allclose(robot.joint_positions(), server.q[:]))
            server.q[0] = 0.5
            assert wait_for(lambda: abs(robot.joint_positions()[0] - 0.5) < 1e-12)
            assert robot.status().ok
            server.bits[0], server.bits[1] = 1 | (1 << 2), 3  # protective stop bit, PROTECTIVE_STOP mode
            assert wait_for(lambda: robot.status().protective_stop)
            assert EventKind.PROTECTIVE_STOP in robot.events.kinds()
            with pytest.raises(ProtectiveStopError):
                robot.servo_joints(np.array(server.q[:]))
            server.bits[0], server.bits[1] = 1 << 7, 7  # emergency stop bit, ROBOT_EMERGENCY_STOP
            assert wait_for(lambda: robot.status().emergency_stop)
            server.bits[0], server.bits[1] = 1, 1
            assert wait_for(lambda: robot.status().ok)
            assert EventKind.EMERGENCY_STOP_CLEARED in robot.events.kinds()
        assert "stopScript" in ctl.names()


def test_refused_port_is_unreachable_error() -> None:
    host = loopback()
    t0 = time.monotonic()
    with pytest.raises(RobotUnreachableError, match="refused") as info:
        UR5e(UR5eConfig(host=host, handle_signals=False), factory=FakeRtdeFactory(FakeController())).connect()
    assert info.value.cause == "refused"
    assert time.monotonic() - t0 < 1.0


def test_silent_server_times_out_before_ur_rtde_is_built() -> None:
    host = loopback()
    with RtdeServer(host, ServerOptions(mode="silent")):
        ctl = FakeController()
        cfg = UR5eConfig(host=host, handle_signals=False, connect_timeout_s=0.3)
        t0 = time.monotonic()
        with pytest.raises(RobotUnreachableError, match="silent") as info:
            UR5e(cfg, factory=FakeRtdeFactory(ctl)).connect()
        assert time.monotonic() - t0 < 1.5
        assert info.value.cause == "silent"
        assert ctl.calls == []  # no ur_rtde object was built


def test_unroutable_address_times_out() -> None:
    t0 = time.monotonic()
    with pytest.raises(RobotUnreachableError) as info:
        probe_controller("10.255.255.1", 0.3)
    assert info.value.cause in ("timeout", "unreachable", "silent")  # some sandboxes accept every connection
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        (ServerOptions(remote_control=False), RemoteControlOffError, "Remote Control"),
        (ServerOptions(program_running=True), ProgramRunningError, "already running"),
        (ServerOptions(registers_in_use=True), RegistersInUseError, "another RTDE client"),
    ],
)
def test_controller_refusals_are_typed(options: ServerOptions, error: type[Exception], words: str) -> None:
    host = loopback()
    with RtdeServer(host, options):
        ctl = FakeController()
        with pytest.raises(error, match=words):
            UR5e(UR5eConfig(host=host, handle_signals=False), factory=FakeRtdeFactory(ctl)).connect()
        assert ctl.calls == []


def test_malformed_address_is_refused_before_any_socket() -> None:
    with pytest.raises(InvalidAddressError, match="not a valid IPv4 or IPv6"):
        probe_controller("192.168.0.256", 0.1)
    with pytest.raises(InvalidAddressError):
        UR5eConfig(host="ur5e; rm -rf /")
