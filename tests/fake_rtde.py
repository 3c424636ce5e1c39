"""MOCK of the ur_rtde boundary (robot.ur5e_boundary) for tests and benchmarks: no UR controller can run here.

`FakeController` holds the simulated controller state (joints, stop flags, connection) and records every call.
`FakeRtdeFactory` hands out control/receive/io views of it. Timing: in "manual" mode each servo tick waits until
the test releases it (`run_ticks`) and the clock is simulated (period per tick); otherwise initPeriod/waitPeriod
keep real time like ur_rtde does (sleep, then spin). Optionally backed by a `SimRobot` (servoJ targets go to the
simulated arm, which advances one physics step per tick).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from robot.sim.config import HOME_Q
from robot.sim.sim_robot import SimRobot
from robot.ur5e import UR5e
from robot.ur5e_config import UR5eConfig


class FakeController:
    """State and call log of the mock controller.

    results: return value per method name (default True); raises: exception to raise per method name;
    reconnect_results: successive return values of `reconnect` (then True).
    """

    def __init__(self, period_s: float = 0.002, manual: bool = False, sim: SimRobot | None = None) -> None:
        self.period_s, self.manual, self.sim = period_s, manual, sim
        self.lock = threading.Lock()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.servoj: list[tuple[float, list[float]]] = []  # (clock time, q) of every servoJ
        self.q = list(HOME_Q)
        self.protective = False
        self.emergency = False
        self.safety_mode = 1
        self.connected = True
        self.program_running = True
        self.results: dict[str, bool] = {}
        self.raises: dict[str, Exception] = {}
        self.reconnect_results: list[bool] = []
        self.now = 0.0
        self.ticks = 0
        self.started = 0
        self.stop_flag: threading.Event | None = None  # manual mode: the servo loop's stop event
        self._gate = threading.Semaphore(0)
        self._done = threading.Condition()

    def record(self, name: str, *args: Any) -> bool:
        with self.lock:
            self.calls.append((name, args))
        if name in self.raises:
            raise self.raises[name]
        return self.results.get(name, True)

    def names(self) -> list[str]:
        """Names of the calls so far, in order."""
        with self.lock:
            return [c[0] for c in self.calls]

    def clock(self) -> float:
        """Seconds: simulated in manual mode, else perf_counter."""
        return self.now if self.manual else time.perf_counter()

    def run_ticks(self, n: int, timeout_s: float = 10.0) -> None:
        """Manual mode: let the servo thread run `n` ticks and wait until they are done."""
        with self._done:
            target = self.ticks + n
        for _ in range(n):
            self._gate.release()
        with self._done:
            if not self._done.wait_for(lambda: self.ticks >= target, timeout_s):
                raise TimeoutError(f"the servo thread ran {self.ticks} of {target} ticks within {timeout_s} s")

    def joints(self) -> list[float]:
        return [float(v) for v in self.sim.joint_positions()] if self.sim is not None else list(self.q)


class FakeRtdeControl:
    """MOCK `RtdeControl` over a `FakeController`."""

    def __init__(self, ctl: FakeController) -> None:
        self.ctl = ctl

    def servoJ(  # noqa: N802
        self, q: list[float], speed: float, acceleration: float, time: float, lookahead_time: float, gain: float
    ) -> bool:
        ok = self.ctl.record("servoJ", list(q), speed, acceleration, time, lookahead_time, gain)
        if ok:
            with self.ctl.lock:
                self.ctl.servoj.append((self.ctl.clock(), list(q)))
            if self.ctl.sim is not None:
                self.ctl.sim.servo_joints(np.asarray(q, dtype=np.float64))
            else:
                self.ctl.q = list(q)
        return ok

    def servoStop(self, a: float = 10.0) -> bool:  # noqa: N802
        return self.ctl.record("servoStop", a)

    def stopScript(self) -> None:  # noqa: N802
        self.ctl.record("stopScript")

    def setWatchdog(self, min_frequency: float = 10.0) -> bool:  # noqa: N802
        return self.ctl.record("setWatchdog", min_frequency)

    def kickWatchdog(self) -> bool:  # noqa: N802
        with self.ctl.lock:
            self.ctl.calls.append(("kickWatchdog", ()))
        return self.ctl.results.get("kickWatchdog", True)

    def initPeriod(self) -> Any:  # noqa: N802
        ctl = self.ctl
        if ctl.manual:
            while not ctl._gate.acquire(timeout=0.005):
                if ctl.stop_flag is not None and ctl.stop_flag.is_set():
                    return ctl.now  # the driver is closing: the loop checks its stop flag next
            ctl.started += 1
            ctl.now = ctl.started * ctl.period_s
            return ctl.now
        return time.perf_counter()

    def waitPeriod(self, t_cycle_start: Any) -> None:  # noqa: N802
        ctl = self.ctl
        if ctl.sim is not None:
            ctl.sim.advance(ctl.sim.control_dt)
        if ctl.manual:
            with ctl._done:
                ctl.ticks += 1
                ctl._done.notify_all()
            return
        deadline = float(t_cycle_start) + ctl.period_s
        remaining = deadline - time.perf_counter() - 0.0003
        if remaining > 0:
            time.sleep(remaining)
        while time.perf_counter() < deadline:
            pass
        with ctl._done:
            ctl.ticks += 1

    def moveJ(  # noqa: N802
        self, q: list[float], speed: float = 1.05, acceleration: float = 1.4, asynchronous: bool = False
    ) -> bool:
        ok = self.ctl.record("moveJ", list(q), speed, acceleration, asynchronous)
        if ok:
            self.ctl.q = list(q)
        return ok

    def isProgramRunning(self) -> bool:  # noqa: N802
        self.ctl.record("isProgramRunning")
        return self.ctl.program_running

    def teachMode(self) -> bool:  # noqa: N802
        return self.ctl.record("teachMode")

    def endTeachMode(self) -> bool:  # noqa: N802
        return self.ctl.record("endTeachMode")

    def isConnected(self) -> bool:  # noqa: N802
        return self.ctl.connected

    def reconnect(self) -> bool:
        self.ctl.record("control.reconnect")
        ok = self.ctl.reconnect_results.pop(0) if self.ctl.reconnect_results else True
        self.ctl.connected = ok
        return ok

    def disconnect(self) -> None:
        self.ctl.record("control.disconnect")


class FakeRtdeReceive:
    """MOCK `RtdeReceive` over a `FakeController`."""

    def __init__(self, ctl: FakeController) -> None:
        self.ctl = ctl

    def getActualQ(self) -> list[float]:  # noqa: N802
        return self.ctl.joints()

    def isProtectiveStopped(self) -> bool:  # noqa: N802
        return self.ctl.protective

    def isEmergencyStopped(self) -> bool:  # noqa: N802
        return self.ctl.emergency

    def getSafetyMode(self) -> int:  # noqa: N802
        return self.ctl.safety_mode

    def isConnected(self) -> bool:  # noqa: N802
        return self.ctl.connected

    def reconnect(self) -> bool:
        self.ctl.record("receive.reconnect")
        return True

    def disconnect(self) -> None:
        self.ctl.record("receive.disconnect")


class FakeRtdeIO:
    """MOCK `RtdeIO` over a `FakeController`."""

    def __init__(self, ctl: FakeController) -> None:
        self.ctl = ctl

    def setSpeedSlider(self, speed: float) -> bool:  # noqa: N802
        return self.ctl.record("setSpeedSlider", speed)

    def disconnect(self) -> None:
        self.ctl.record("io.disconnect")


class FakeRtdeFactory:
    """MOCK `RtdeFactory`: views of one `FakeController`; `receive_factory` may hand out a real receive
    interface instead (e.g. ur_rtde's against tests/rtde_server.py)."""

    def __init__(self, ctl: FakeController, receive_factory: Any = None) -> None:
        self.ctl = ctl
        self.receive_factory = receive_factory

    def control(self, host: str, frequency_hz: float) -> FakeRtdeControl:
        self.ctl.record("construct_control", host, frequency_hz)
        return FakeRtdeControl(self.ctl)

    def receive(self, host: str, frequency_hz: float, variables: Sequence[str]) -> Any:
        self.ctl.record("construct_receive", host, frequency_hz, tuple(variables))
        if self.receive_factory is not None:
            return self.receive_factory(host, frequency_hz, variables)
        return FakeRtdeReceive(self.ctl)

    def io(self, host: str) -> FakeRtdeIO:
        self.ctl.record("construct_io", host)
        return FakeRtdeIO(self.ctl)


def manual_driver(config: UR5eConfig, ctl: FakeController | None = None) -> tuple[UR5e, FakeController]:
    """A connected `UR5e` over the mock in manual mode (simulated clock, ticks run by `ctl.run_ticks`)."""
    ctl = ctl or FakeController(period_s=config.servo.period_s, manual=True)
    robot = UR5e(
        config, factory=FakeRtdeFactory(ctl), probe=lambda host, timeout: None, sleep=lambda s: None, clock=ctl.clock
    )
    robot.connect()
    ctl.stop_flag = robot.servo.stopping
    return robot, ctl


def stopped_cleanly(ctl: FakeController) -> bool:
    """True when servoStop then stopScript were the last commands sent (only disconnects after them)."""
    names = [n for n in ctl.names() if not n.endswith("disconnect") and n != "kickWatchdog"]
    return names[-2:] == ["servoStop", "stopScript"]
