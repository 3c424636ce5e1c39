"""The UR5e driver's logic against the MOCK ur_rtde boundary (tests/fake_rtde.py): no controller runs here."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fake_rtde import FakeController, FakeRtdeFactory, manual_driver, stopped_cleanly

from robot.protocols import Robot
from robot.safety import SafetyViolation
from robot.sim.config import HOME_Q
from robot.ur5e import UR5e
from robot.ur5e_config import ServoConfig, UR5eConfig, clamp_speed_slider
from robot.ur5e_errors import (
    CommandFailedError,
    InvalidAddressError,
    NotConnectedError,
    ProtectiveStopError,
    RegistersInUseError,
)
from robot.ur5e_events import EventKind

HOME = np.array(HOME_Q)
PERIOD = 0.002


def config(**kw: Any) -> UR5eConfig:
    base: dict[str, Any] = {"host": "192.168.1.10", "handle_signals": False, "speed_slider": 0.3}
    base.update(kw)
    return UR5eConfig(**base)


@pytest.fixture
def manual() -> Iterator[tuple[UR5e, FakeController]]:
    robot, ctl = manual_driver(config())
    yield robot, ctl
    robot.close()


def servoj_after(ctl: FakeController, start: int) -> list[tuple[str, tuple[Any, ...]]]:
    return [c for c in ctl.calls[start:] if c[0] in ("servoJ", "servoStop")]


def test_watchdog_is_set_right_after_connect_and_speed_slider_clamped(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    names = ctl.names()
    i = names.index("construct_control")
    assert names[i + 1] == "setWatchdog"
    assert ctl.calls[i + 1][1] == (10.0,)
    assert names.index("construct_receive") < i  # the receive side is up before the script is uploaded
    assert ("setSpeedSlider", (0.3,)) in ctl.calls
    assert isinstance(robot, Robot)
    assert robot.status().ok
    assert robot.set_speed_slider(7.0) == 1.0
    assert robot.set_speed_slider(0.0) == 0.01
    assert ctl.calls[-1] == ("setSpeedSlider", (0.01,))


def test_config_validation_names_the_valid_range() -> None:
    with pytest.raises(ValueError, match=r"lookahead_time_s must be within \[0.03, 0.2\] s, got 0.01"):
        ServoConfig(lookahead_time_s=0.01)
    with pytest.raises(ValueError, match=r"gain must be within \[100, 2000\], got 2500"):
        ServoConfig(gain=2500)
    with pytest.raises(InvalidAddressError, match=r"192\.168\.1\.300"):
        UR5eConfig(host="192.168.1.300")
    with pytest.raises(InvalidAddressError, match="not a valid"):
        UR5eConfig(host="robot.local")
    assert UR5eConfig(host=" 10.0.0.2 ").host == "10.0.0.2"
    assert clamp_speed_slider(-3) == 0.01
    assert UR5eConfig(host="10.0.0.2", speed_slider=4.0).speed_slider == 1.0
    with pytest.raises(ValueError, match="finite"):
        clamp_speed_slider(math.nan)


def test_servo_targets_pass_the_safety_layer_with_configured_servoj_arguments(
    manual: tuple[UR5e, FakeController],
) -> None:
    robot, ctl = manual
    far = HOME + np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for _ in range(20):
        robot.servo_joints(far)
        ctl.run_ticks(1)
    sent = [c[1] for c in ctl.calls if c[0] == "servoJ"]
    assert len(sent) == 20
    prev = HOME
    for q, speed, acc, t, lookahead, gain in sent:
        assert (speed, acc, t, lookahead, gain) == (0.0, 0.0, PERIOD, 0.1, 300.0)
        assert np.max(np.abs(np.array(q) - prev)) <= math.pi * PERIOD + 1e-12
        prev = np.array(q)
    assert prev[0] > HOME[0]


def test_nan_target_is_refused_at_once(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    with pytest.raises(SafetyViolation, match="non_finite"):
        robot.servo_joints(HOME + np.array([math.nan, 0, 0, 0, 0, 0]))
    ctl.run_ticks(3)
    assert "servoJ" not in ctl.names()
    assert EventKind.COMMAND_REFUSED in robot.events.kinds()


def test_command_timeout_halts_the_servo_after_100_ms(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    robot.servo_joints(HOME + 0.01)
    ctl.run_ticks(70)  # 140 ms without a fresh command
    sent = [t for t, _ in ctl.servoj]
    assert len(sent) == 50  # the target is fresh for 100 ms = 50 ticks
    names = ctl.names()
    last_servoj = max(i for i, n in enumerate(names) if n == "servoJ")
    assert "servoStop" in names[last_servoj:]
    assert EventKind.COMMAND_TIMEOUT in robot.events.kinds()
    robot.servo_joints(HOME)  # a fresh command resumes streaming
    ctl.run_ticks(2)
    assert len(ctl.servoj) == 52


def test_protective_stop_is_an_event_and_refuses_commands(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    seen: list[EventKind] = []
    robot.events.subscribe(lambda e: seen.append(e.kind))
    robot.servo_joints(HOME + 0.01)
    ctl.run_ticks(2)
    ctl.protective, ctl.safety_mode = True, 3
    ctl.run_ticks(1)
    assert EventKind.PROTECTIVE_STOP in seen
    status = robot.status()
    assert status.protective_stop
    assert not status.ok
    assert "PROTECTIVE_STOP" in status.message
    assert ctl.names()[-1] == "kickWatchdog"
    assert "servoStop" in ctl.names()
    n_servoj = len(ctl.servoj)
    with pytest.raises(ProtectiveStopError, match="nothing was sent"):
        robot.servo_joints(HOME)
    with pytest.raises(ProtectiveStopError):
        robot.move_home()
    with pytest.raises(ProtectiveStopError):
        robot.teach_mode()
    ctl.run_ticks(5)
    assert len(ctl.servoj) == n_servoj
    assert "moveJ" not in ctl.names()
    assert "teachMode" not in ctl.names()
    ctl.protective, ctl.safety_mode = False, 1
    ctl.run_ticks(1)
    assert EventKind.PROTECTIVE_STOP_CLEARED in seen
    robot.servo_joints(HOME)
    ctl.run_ticks(1)
    assert len(ctl.servoj) == n_servoj + 1


def test_emergency_stop_is_read_every_tick(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    ctl.emergency, ctl.safety_mode = True, 7
    ctl.run_ticks(1)
    assert robot.status().emergency_stop
    assert robot.events.queue.get_nowait().kind == EventKind.EMERGENCY_STOP
    with pytest.raises(ProtectiveStopError):
        robot.servo_joints(HOME)


def test_false_returns_become_errors_or_events(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    ctl.results["servoJ"] = False
    robot.servo_joints(HOME + 0.001)
    ctl.run_ticks(2)
    assert EventKind.COMMAND_FAILED in robot.events.kinds()
    assert ctl.names().count("servoJ") == 1  # the target is dropped after a rejected servoJ
    ctl.results["moveJ"] = False
    with pytest.raises(CommandFailedError, match="moveJ returned False"):
        robot.move_home()
    ctl.results["teachMode"] = False
    with pytest.raises(CommandFailedError, match="teachMode"):
        robot.teach_mode()
    ctl.results["setSpeedSlider"] = False
    with pytest.raises(CommandFailedError, match="setSpeedSlider"):
        robot.set_speed_slider(0.5)


def test_watchdog_refused_at_connect_is_an_error_and_stops_the_script() -> None:
    ctl = FakeController(manual=True)
    ctl.results["setWatchdog"] = False
    robot = UR5e(config(), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None, clock=ctl.clock)
    with pytest.raises(CommandFailedError, match="setWatchdog"):
        robot.connect()
    assert stopped_cleanly(ctl)
    with pytest.raises(NotConnectedError):
        robot.servo_joints(HOME)


def test_constructor_errors_are_typed() -> None:
    ctl = FakeController(manual=True)
    ctl.raises["construct_control"] = RuntimeError("RTDE control input registers are already in use")
    robot = UR5e(config(), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None)
    with pytest.raises(RegistersInUseError, match="in use"):
        robot.connect()


def test_move_home_and_teach_mode(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    robot.servo_joints(HOME + 0.01)
    ctl.run_ticks(1)
    robot.move_home()
    move = next(c for c in ctl.calls if c[0] == "moveJ")
    assert move[1] == (list(HOME_Q), 0.5, 0.8, False)
    assert ctl.names().index("servoStop") < ctl.names().index("moveJ")
    robot.teach_mode()
    with pytest.raises(Exception, match="teach mode"):
        robot.servo_joints(HOME)
    robot.end_teach_mode()
    robot.servo_joints(HOME)
    ctl.run_ticks(1)
    assert ctl.names()[-1] == "servoJ"


def test_reconnect_is_bounded_with_backoff() -> None:
    ctl = FakeController(manual=True)
    sleeps: list[float] = []
    robot = UR5e(
        config(reconnect_tries=3, reconnect_backoff_s=0.1, reconnect_backoff_max_s=0.3),
        factory=FakeRtdeFactory(ctl),
        probe=lambda h, t: None,
        sleep=sleeps.append,
        clock=ctl.clock,
    )
    robot.connect()
    ctl.stop_flag = robot.servo.stopping
    try:
        ctl.reconnect_results = [False, False, False]
        ctl.connected = False
        ctl.run_ticks(1)
        assert ctl.names().count("control.reconnect") == 3
        assert sleeps == [0.1, 0.2, 0.3]
        assert EventKind.RECONNECT_FAILED in robot.events.kinds()
        assert not robot.status().connected
        deadline = time.monotonic() + 2
        while robot.servo.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not robot.servo.running
    finally:
        robot.close()
    assert stopped_cleanly(ctl)


def test_reconnect_succeeds_and_sets_the_watchdog_again(manual: tuple[UR5e, FakeController]) -> None:
    robot, ctl = manual
    ctl.reconnect_results = [False, True]
    ctl.connected = False
    ctl.run_ticks(1)
    assert ctl.names().count("control.reconnect") == 2
    assert ctl.names().count("setWatchdog") == 2
    assert robot.status().connected
    assert robot.events.kinds()[-1] == EventKind.RECONNECTED


def test_stop_script_on_normal_exit_and_on_exception() -> None:
    for fail in (False, True):
        ctl = FakeController()
        try:
            with UR5e(config(), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None) as robot:
                robot.servo_joints(HOME)
                time.sleep(0.02)
                if fail:
                    raise KeyError("boom")
        except KeyError:
            assert fail
        names = ctl.names()
        assert stopped_cleanly(ctl), names[-6:]
        assert EventKind.STOPPED in robot.events.kinds()
        robot.close()  # idempotent
        assert ctl.names().count("stopScript") == 1


def test_stop_script_on_sigterm_then_the_previous_handler_runs() -> None:
    chained: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: chained.append(signum))
    try:
        ctl = FakeController()
        robot = UR5e(config(handle_signals=True), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None)
        robot.connect()
        robot.servo_joints(HOME)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert chained == [signal.SIGTERM]
        assert stopped_cleanly(ctl)
        assert signal.getsignal(signal.SIGTERM) is not robot._on_signal  # handlers restored
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigint_stops_the_arm_and_raises_keyboard_interrupt() -> None:
    # Python's own SIGINT handler is what the driver must chain to; another test or library in this process may
    # have left a different one installed, so set it here and put back whatever was there.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctl = FakeController()
        robot = UR5e(config(handle_signals=True), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None)
        robot.connect()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert ctl.names().count("stopScript") == 1
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_servo_loop_paces_every_tick_with_init_and_wait_period() -> None:
    # The achieved rate and period error are measured by bench/drivers.py, not asserted here (timing on a
    # shared 2-core machine is not a test). Here: every tick is paced by ur_rtde's own initPeriod/waitPeriod
    # (the mock counts a tick in waitPeriod) and streams the latest safe target.
    ctl = FakeController()
    with UR5e(config(), factory=FakeRtdeFactory(ctl), probe=lambda h, t: None) as robot:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            robot.servo_joints(HOME)
            time.sleep(0.01)
    assert ctl.ticks > 10  # counted by the mock's waitPeriod, which ends every tick
    assert 10 < len(ctl.servoj) <= ctl.ticks + 1  # at most one servoJ per tick
    assert all(np.allclose(q, HOME) for _, q in ctl.servoj)


def test_signal_chain_survives_drivers_closed_out_of_order() -> None:
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        first = UR5e(config(handle_signals=True), factory=FakeRtdeFactory(FakeController()), probe=lambda h, t: None)
        first.connect()
        second = UR5e(config(handle_signals=True), factory=FakeRtdeFactory(FakeController()), probe=lambda h, t: None)
        second.connect()
        first.close()  # not the installed handler: the second chains to it
        second.close()  # puts back the first's handler, which must still chain to Python's own
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_stop_raised_by_the_guard_halts_the_servo_at_the_next_tick(manual: tuple[UR5e, FakeController]) -> None:
    from robot.stop_signal import StopSignal

    robot, ctl = manual
    signal = StopSignal.create()
    try:
        robot.stop_signal = signal
        robot.servo_joints(HOME + 0.01)
        ctl.run_ticks(3)
        assert len(ctl.servoj) == 3
        start = len(ctl.calls)
        StopSignal.attach(signal.path).raise_stop()  # as the guard raises it, from its own process
        ctl.run_ticks(1)
        assert [n for n, _ in servoj_after(ctl, start)] == ["servoStop"]
        robot.servo_joints(HOME + 0.02)  # the server's control loop, not yet told, goes on commanding
        ctl.run_ticks(5)
        assert [n for n, _ in servoj_after(ctl, start)] == ["servoStop"]  # nothing reaches the arm meanwhile
        signal.acknowledge(1)  # the server carried the stop out: the next job may move
        robot.servo_joints(HOME + 0.02)
        ctl.run_ticks(2)
        assert [n for n, _ in servoj_after(ctl, start)] == ["servoStop", "servoJ", "servoJ"]
    finally:
        signal.close()
