"""The Robotiq 2F-85 driver against a gripper server speaking the URCap protocol over a real TCP socket
(`tests/robotiq_server.py`, a test double that models finger travel and contact over time)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from live_server import free_port
from robotiq_server import GripperModel, RobotiqTestServer

from robot.protocols import Gripper
from robot.robotiq import ObjectStatus, RobotiqGripper
from robot.robotiq_errors import (
    GripperConnectionRefusedError,
    GripperFaultError,
    GripperNotActivatedError,
    GripperNotConnectedError,
    GripperProtocolError,
    GripperTimeoutError,
    GripperUnreachableError,
)
from robot.robotiq_mapping import (
    PositionMap,
    for_to_force,
    force_to_for,
    spe_to_speed,
    speed_to_spe,
)

FAST, GENTLE = 0.15, 20.0


@pytest.fixture
def server() -> Iterator[RobotiqTestServer]:
    with RobotiqTestServer(GripperModel(time_scale=4.0)) as srv:
        yield srv


@pytest.fixture
def gripper(server: RobotiqTestServer) -> Iterator[RobotiqGripper]:
    g = RobotiqGripper("127.0.0.1", server.port, timeout_s=0.5, poll_s=0.005)
    g.connect()
    g.activate(timeout_s=2.0)
    yield g
    g.close()


# ------------------------------------------------------------------ mapping
def test_position_map_round_trips_and_orients_open_at_zero() -> None:
    m = PositionMap(pos_open=3, pos_closed=228)
    assert m.width_to_pos(0.085) == 3
    assert m.width_to_pos(0.0) == 228
    for pos in range(3, 229, 15):
        assert m.width_to_pos(m.pos_to_width(pos)) == pos
    assert m.pos_to_width(250) == 0.0  # beyond the calibrated closed end reads as closed
    assert m.pos_to_width(0) == pytest.approx(0.085)


@pytest.mark.parametrize("width", [-0.001, 0.0851, float("nan"), float("inf")])
def test_position_map_refuses_widths_outside_the_stroke(width: float) -> None:
    with pytest.raises(ValueError, match="gripper width must be"):
        PositionMap().width_to_pos(width)


def test_position_map_refuses_inconsistent_ends() -> None:
    with pytest.raises(ValueError, match="pos_open < pos_closed"):
        PositionMap(pos_open=200, pos_closed=100)
    with pytest.raises(ValueError, match="under 100 counts"):
        PositionMap(pos_open=0, pos_closed=60)


def test_speed_and_force_map_linearly_onto_registers() -> None:
    assert speed_to_spe(0.020) == 0
    assert speed_to_spe(0.150) == 255
    assert speed_to_spe(0.085) == 128
    assert force_to_for(20.0) == 0
    assert force_to_for(235.0) == 255
    for reg in (0, 17, 128, 255):
        assert speed_to_spe(spe_to_speed(reg)) == reg
        assert force_to_for(for_to_force(reg)) == reg


@pytest.mark.parametrize(
    ("speed", "force", "match"),
    [
        (0.01, 50.0, r"speed must be within \[0.02, 0.15\] m/s"),
        (0.2, 50.0, r"speed must be within"),
        (0.1, 10.0, r"force must be within \[20, 235\] N"),
        (0.1, 300.0, r"force must be within"),
        (float("nan"), 50.0, "finite"),
    ],
)
def test_out_of_range_speed_or_force_is_refused_before_anything_is_sent(
    gripper: RobotiqGripper, server: RobotiqTestServer, speed: float, force: float, match: str
) -> None:
    sent = len(server.log)
    with pytest.raises(ValueError, match=match):
        gripper.move(0.04, speed, force)
    assert len(server.log) == sent


# ------------------------------------------------------------------ activation and motion
def test_driver_satisfies_the_gripper_protocol(gripper: RobotiqGripper) -> None:
    assert isinstance(gripper, Gripper)


def test_activation_waits_for_sta_3(server: RobotiqTestServer) -> None:
    server.model.time_scale = 1.0
    server.model.activation_s = 0.3
    with RobotiqGripper("127.0.0.1", server.port, poll_s=0.005) as g:
        t0 = time.monotonic()
        g.activate(timeout_s=2.0)
        elapsed = time.monotonic() - t0
        assert g.activated
        assert 0.25 <= elapsed < 1.0
        assert server.model.sta == 3
        assert "SET ACT 1" in server.log
        # an active gripper is not re-activated
        server.log.clear()
        g.activate(timeout_s=1.0)
        assert "SET ACT 1" not in server.log


def test_activation_timeout(server: RobotiqTestServer) -> None:
    server.model.time_scale = 1.0
    server.model.activation_s = 30.0
    with RobotiqGripper("127.0.0.1", server.port, poll_s=0.005) as g:
        t0 = time.monotonic()
        with pytest.raises(GripperTimeoutError, match=r"activation did not finish within 0.3 s"):
            g.activate(timeout_s=0.3)
        assert time.monotonic() - t0 < 1.0
        assert not g.activated


def test_activation_fault_raises_with_its_code(server: RobotiqTestServer) -> None:
    server.model.activation_fault = 13
    with RobotiqGripper("127.0.0.1", server.port, poll_s=0.005) as g:
        with pytest.raises(GripperFaultError, match="FLT 13") as info:
            g.activate(timeout_s=2.0)
        assert info.value.code == 13


def test_move_before_activation_is_refused(server: RobotiqTestServer) -> None:
    with RobotiqGripper("127.0.0.1", server.port) as g, pytest.raises(GripperNotActivatedError, match="activate"):
        g.move(0.04, FAST, GENTLE)


def test_move_reaches_the_requested_width(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    gripper.position_map = gripper.calibrate_stroke(timeout_s=3.0)
    assert gripper.position_map == PositionMap(0, 228)  # the modelled gripper's mechanical ends
    for width in (0.060, 0.0325, 0.010, 0.080):
        gripper.move(width, FAST, GENTLE)
        assert gripper.wait(3.0) == ObjectStatus.AT_TARGET
        assert server.width_mm() == pytest.approx(width * 1000, abs=0.4)  # one POS count is 0.37 mm
        assert gripper.width() == pytest.approx(width, abs=0.0004)
        assert not gripper.object_detected()


def test_move_returns_at_once_and_travels_at_the_commanded_speed(server: RobotiqTestServer) -> None:
    server.model.time_scale = 1.0
    with RobotiqGripper("127.0.0.1", server.port, poll_s=0.002) as g:
        g.activate(timeout_s=2.0)
        g.position_map = PositionMap(0, 228)
        for speed in (0.15, 0.06):
            g.move(0.085, FAST, GENTLE)
            g.wait(3.0)
            t0 = time.monotonic()
            g.move(0.055, speed, GENTLE)  # 30 mm of travel
            assert time.monotonic() - t0 < 0.05
            assert g.wait(3.0) == ObjectStatus.AT_TARGET
            elapsed = time.monotonic() - t0
            assert elapsed == pytest.approx(0.030 / speed, rel=0.25)
            assert server.model.spe == speed_to_spe(speed)


def test_closing_on_an_object_reports_contact(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    server.model.object_pos = 150  # an object about 29 mm wide
    gripper.position_map = PositionMap(0, 228)
    gripper.move(0.0, FAST, 100.0)
    assert gripper.wait(3.0) == ObjectStatus.CONTACT_CLOSING
    assert gripper.object_detected()
    assert gripper.width() == pytest.approx(0.085 * 78 / 228, abs=0.0004)
    assert server.model.force == force_to_for(100.0)


def test_opening_against_an_obstacle_reports_contact_while_opening(
    gripper: RobotiqGripper, server: RobotiqTestServer
) -> None:
    gripper.move(0.0, FAST, GENTLE)
    gripper.wait(3.0)
    server.model.obstacle_pos = 100
    gripper.move(0.085, FAST, GENTLE)
    status = gripper.wait(3.0)
    assert status == ObjectStatus.CONTACT_OPENING
    assert status.object_detected
    assert gripper.object_detected()
    assert gripper.position() == 100


def test_wait_times_out_while_the_fingers_still_move(server: RobotiqTestServer) -> None:
    server.model.time_scale = 1.0
    with RobotiqGripper("127.0.0.1", server.port, poll_s=0.005) as g:
        g.activate(timeout_s=2.0)
        g.move(0.0, 0.02, GENTLE)  # 85 mm at 20 mm/s: over 4 s
        with pytest.raises(GripperTimeoutError, match="waiting for the fingers"):
            g.wait(0.2)


def test_fault_during_motion_raises(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    gripper.move(0.0, 0.02, GENTLE)
    with server.lock:
        server.model.flt = 14
    with pytest.raises(GripperFaultError, match="over-current") as info:
        gripper.wait(2.0)
    assert info.value.code == 14


def test_stop_halts_without_ever_opening(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    server.model.time_scale = 1.0
    gripper.move(0.0, 0.05, GENTLE)
    time.sleep(0.25)
    gripper.stop()
    halted = server.width_mm()
    assert 20.0 < halted < 80.0  # stopped mid-stroke
    time.sleep(0.2)
    assert server.width_mm() == pytest.approx(halted, abs=1e-9)
    gripper.stop()  # idempotent
    assert gripper.wait(1.0) == ObjectStatus.MOVING  # no motion in progress: returns at once
    assert server.width_mm() == pytest.approx(halted, abs=1e-9)
    stops = [line for line in server.log if line.startswith("SET") and "GTO 0" in line]
    assert stops == ["SET GTO 0", "SET GTO 0"]  # a stop writes no position


def test_stop_keeps_a_gripped_object(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    server.model.object_pos = 180
    gripper.move(0.0, FAST, GENTLE)
    assert gripper.wait(3.0) == ObjectStatus.CONTACT_CLOSING
    held = server.width_mm()
    gripper.stop()
    time.sleep(0.1)
    assert server.width_mm() == pytest.approx(held)
    assert server.model.pos == 180


# ------------------------------------------------------------------ link errors
def test_connection_refused_names_the_port_and_the_urcap() -> None:
    port = free_port()
    g = RobotiqGripper("127.0.0.1", port, connect_timeout_s=1.0)
    with pytest.raises(GripperConnectionRefusedError, match=rf"nothing listens on port {port}.*URCap"):
        g.connect()


def test_unreachable_host_times_out_the_connection_attempt() -> None:
    # a listener whose one-slot accept queue is full drops further SYNs, as an unreachable host never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            g = RobotiqGripper("127.0.0.1", port, connect_timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(GripperUnreachableError, match=r"no answer from 127.0.0.1:\d+ within 0.3 s"):
                g.connect()
            assert time.monotonic() - t0 < 1.5


def test_unknown_host_is_unreachable() -> None:
    with pytest.raises(GripperUnreachableError, match="cannot resolve"):
        RobotiqGripper("no-such-gripper.invalid", connect_timeout_s=0.5).connect()


def test_reply_timeout_closes_the_connection(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    server.silent = True
    t0 = time.monotonic()
    with pytest.raises(GripperTimeoutError, match=r"no reply to 'GET POS' within 0.5 s"):
        gripper.width()
    assert 0.45 <= time.monotonic() - t0 < 1.5
    assert not gripper.link.connected
    with pytest.raises(GripperNotConnectedError, match="call connect"):
        gripper.width()
    server.silent = False
    gripper.connect()
    gripper.activate(timeout_s=1.0)
    assert 0.0 <= gripper.width() <= 0.085


@pytest.mark.parametrize(
    ("reply", "call"),
    [("bogus", "set"), ("OBJ 3", "get"), ("POS three", "get"), ("ack", "get"), ("POS 1", "set")],
)
def test_unexpected_reply_is_a_protocol_error(
    gripper: RobotiqGripper, server: RobotiqTestServer, reply: str, call: str
) -> None:
    server.reply_override = reply
    action = gripper.position if call == "get" else lambda: gripper.move(0.04, FAST, GENTLE)
    with pytest.raises(GripperProtocolError, match="expected"):
        action()
    assert not gripper.link.connected


def test_server_dropping_the_connection(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    server.close_on_request = True
    with pytest.raises(GripperNotConnectedError, match="closed the connection"):
        gripper.position()


def test_round_trip_time_over_the_socket(gripper: RobotiqGripper, server: RobotiqTestServer) -> None:
    n = 200
    logged = len(server.log)
    t0 = time.perf_counter()
    for _ in range(n):
        gripper.position()
    per_request_ms = (time.perf_counter() - t0) / n * 1000
    assert len(server.log) == logged + n  # every request went over the socket
    print(f"GET POS round trip over TCP: {per_request_ms:.3f} ms")
    assert per_request_ms < 20.0
