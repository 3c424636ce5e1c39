"""Robot fault scenarios: protective and emergency stops mid-grasp and an object slipping out of the fingers (the
simulated cell through the real runtime, `pipeline.faults.sim_cell`), an RTDE connection drop (the real UR5e driver
over the MOCK ur_rtde boundary of tests/fake_rtde.py, simulated clock), and a gripper socket timeout (the real
Robotiq driver against the URCap server test double of tests/robotiq_server.py). After each, a next run must start
cleanly. Units: seconds, radians, metres.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.faults.core import RecordingRobot, ScenarioResult
from pipeline.faults.doubles import test_double
from pipeline.faults.perception import _summary
from pipeline.faults.sim_cell import TARGET, SimRun, build_run, drive
from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason
from pipeline.runtime.perception_watch import PerceptionWatch, WatchConfig
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import HOME_Q
from robot.sim.mjcf import TCP_OFFSET
from robot.ur5e_config import UR5eConfig

#: Simulated second at which the grasp is under way (the fingers are closing around then, scene seed 0).
GRASP_T = 3.0


def _clean_rerun(run: SimRun, ticks: int = 10) -> bool:
    """A next run on the same cell after recovery: a fresh control loop streams `ticks` held commands with no
    limit violation and ends as asked."""
    arm = RecordingRobot(run.sim, lambda: run.sim.time, gripper=run.sim, period_s=run.sim.control_dt)
    safety = SafetyLayer(SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=run.sim.control_dt)
    loop = ControlLoop(arm, ChunkQueue(), safety, arm, ControlConfig(period_s=run.sim.control_dt, max_ticks=ticks))
    loop.begin(run.sim.time)
    for n in range(ticks):
        if loop.tick(n, run.sim.time) is not None:
            break
        run.sim.advance(run.sim.control_dt)
    result = loop.finish()
    return result.reason == EndReason.MAX_TICKS and len(arm.commands) == ticks and arm.violations == 0


def _stop_mid_grasp(kind: str) -> ScenarioResult:
    status = RobotStatus(protective_stop=True, message="protective stop (injected)")
    if kind == "emergency":
        status = RobotStatus(emergency_stop=True, message="emergency stop pressed (injected)")
    run = build_run(PerceptionWatch(WatchConfig()), TARGET)

    def inject(r: SimRun) -> None:
        if r.sim.time >= GRASP_T - 1e-9:
            r.arm.status_override = status

    result, presult = drive(run, 200, inject, close=False)
    try:
        out = _summary(f"robot_{kind}_stop", "recovered", run, result, presult, GRASP_T)
        run.arm.status_override = None  # the stop is cleared on the teach pendant
        clean = out.end_state == "stopped" and _clean_rerun(run)
    finally:
        run.env.close()
    return _recovered(out, clean)


def _recovered(out: ScenarioResult, clean: bool) -> ScenarioResult:
    state = "recovered" if clean else out.end_state
    return ScenarioResult(**{**out.__dict__, "end_state": state, "extra": {**out.extra, "next_run_clean": clean}})


def protective_stop() -> ScenarioResult:
    """The controller reports a protective stop while the fingers close on the target."""
    return _stop_mid_grasp("protective")


def emergency_stop() -> ScenarioResult:
    """The e-stop is pressed while the fingers close on the target."""
    return _stop_mid_grasp("emergency")


def object_dropped() -> ScenarioResult:
    """The target slips out of the fingers once lifted (injected: the fingers open 2 cm above the table): the
    cell's outcome is `dropped`, the episode ends and the arm is stopped; a next run starts cleanly."""
    run = build_run(PerceptionWatch(WatchConfig()), TARGET)
    start_z = run.env.object_position(TARGET)[2]
    slipped: list[float] = []

    def inject(r: SimRun) -> None:
        if slipped or r.env.object_position(TARGET)[2] - start_z < 0.05:
            return
        slipped.append(r.sim.time)
        real_move = r.sim.move

        def open_fingers(width_m: float, speed_m_s: float, force_n: float) -> None:
            real_move(0.085, speed_m_s, force_n)  # the grip gives way, whatever is commanded

        r.sim.move = open_fingers  # type: ignore[method-assign]
        open_fingers(0.085, 0.1, 10.0)

    result, presult = drive(run, 400, inject, close=False)
    try:
        fault_t = slipped[0] if slipped else float("nan")
        out = _summary("robot_object_dropped", "recovered", run, result, presult, fault_t)
        clean = out.reason == "dropped" and _clean_rerun(run)
    finally:
        run.env.close()
    return _recovered(out, clean)


def rtde_drop_and_return() -> ScenarioResult:
    """The RTDE link drops while the control loop streams targets to the real UR5e driver over the MOCK ur_rtde
    boundary; every bounded reconnect attempt fails, so the loop ends with `disconnected` and the arm is stopped.
    The link returns; a new connection streams again cleanly. Simulated clock: 5 servo ticks of 2 ms per
    10 ms control tick."""
    fake = test_double("fake_rtde")
    config = UR5eConfig(host="192.168.1.10", handle_signals=False, speed_slider=0.3, reconnect_tries=2)
    driver, ctl = fake.manual_driver(config)
    period = 0.01
    arm = RecordingRobot(driver, ctl.clock, period_s=period, limits=config.safety, tcp_offset=config.tcp_offset)
    safety = SafetyLayer(config.safety, tcp_offset=config.tcp_offset, period_s=period)
    queue = ChunkQueue()
    loop = ControlLoop(arm, queue, safety, config=ControlConfig(period_s=period), clock=ctl.clock)
    goal = np.append(np.asarray(HOME_Q) + 0.05, 0.05)
    queue.put(np.tile(goal, (400, 1)), 0)
    drop_t = float("nan")
    try:
        loop.begin(ctl.clock())
        for n in range(200):
            if n == 20:
                drop_t = ctl.clock()
                ctl.reconnect_results = [False] * config.reconnect_tries
                ctl.connected = False
            if loop.tick(n, ctl.clock()) is not None:
                break
            for _ in range(5):
                if driver.servo.stopping.is_set():  # the servo thread ends after its last failed reconnect
                    break
                ctl.run_ticks(1)
        result = loop.finish()
        servo_after = [t for t, _ in ctl.servoj if t > drop_t]
    finally:
        driver.close()
    ctl.connected = True  # the link is back: connect again and stream
    clean = _rtde_clean_rerun(fake, config)
    safe = (arm.stops[0] - drop_t) * 1000.0 if arm.stops else float("nan")
    stopped = result.reason == EndReason.DISCONNECTED and bool(arm.stops)
    return ScenarioResult(
        scenario="robot_rtde_drop_and_return",
        expected_end_state="recovered",
        end_state="recovered" if stopped and clean else ("stopped" if stopped else "running"),
        reason=result.reason.value,
        safe_stop_ms=safe,
        detect_ms=(result.ended_s - drop_t) * 1000.0,
        limit_violations=arm.violations,
        stop_called=bool(arm.stops),
        moved_after_stop=arm.moved_after_stop() + len(servo_after),
        detail=result.detail,
        extra={"next_run_clean": clean, "reconnect_calls": ctl.names().count("control.reconnect")},
    )


def _rtde_clean_rerun(fake: Any, config: UR5eConfig) -> bool:
    """A new connection over the returned link streams 5 control ticks and ends as asked."""
    driver, ctl = fake.manual_driver(config)
    try:
        safety = SafetyLayer(config.safety, tcp_offset=config.tcp_offset, period_s=0.01)
        loop = ControlLoop(driver, ChunkQueue(), safety, config=ControlConfig(period_s=0.01, max_ticks=5))
        loop.begin(ctl.clock())
        for n in range(5):
            if loop.tick(n, ctl.clock()) is not None:
                break
            ctl.run_ticks(5)
        result = loop.finish()
        return result.reason == EndReason.MAX_TICKS and len(ctl.servoj) > 0
    finally:
        driver.close()


def gripper_socket_timeout() -> ScenarioResult:
    """The URCap server stops answering while the control loop moves the gripper (the real Robotiq driver, a 0.2 s
    reply timeout, against the server test double), sent as in the real cell through a `GripperWorker`: the move
    fails on the worker thread after the reply timeout while the control tick keeps its period (servo targets go on
    to the arm), the loop ends with `robot_error` and the arm is stopped. The server answers again; a reconnected
    gripper moves cleanly. extra: the longest control tick (ms) and the ticks run while the move waited."""
    server_mod = test_double("robotiq_server")
    from robot.gripper_worker import GripperWorker
    from robot.robotiq import RobotiqGripper
    from robot.robotiq_errors import RobotiqError

    period = 0.01
    with server_mod.RobotiqTestServer(server_mod.GripperModel(activation_s=0.0)) as server:
        gripper = RobotiqGripper("127.0.0.1", server.port, timeout_s=0.2, connect_timeout_s=1.0)
        gripper.connect()
        gripper.activate(timeout_s=2.0)
        from pipeline.faults.policy_faults import MockArm

        clock = time.perf_counter
        worker = GripperWorker(gripper)
        arm = RecordingRobot(MockArm(), clock, gripper=worker, period_s=period)
        safety = SafetyLayer(SafetyLimits(command_timeout=5.0), tcp_offset=TCP_OFFSET, period_s=period)
        queue = ChunkQueue()
        loop = ControlLoop(arm, queue, safety, gripper=arm, config=ControlConfig(period_s=period))
        chunk = np.tile(np.append(np.asarray(HOME_Q), 0.085), (100, 1))
        chunk[1:, 6] = 0.03  # close from tick 1: the first request the silent server gets
        queue.put(chunk, 0)
        loop.begin(clock())
        server.silent = True
        fault_t = clock()
        longest, moved_at, ticks_waiting = 0.0, None, 0
        try:
            for n in range(100):  # at the control period, as the threaded loop runs
                start = clock()
                ended = loop.tick(n, start)
                longest = max(longest, clock() - start)
                if moved_at is None and arm.moves:
                    moved_at = n
                elif moved_at is not None and ended is None:
                    ticks_waiting += 1
                if ended is not None:
                    break
                time.sleep(max(0.0, start + period - clock()))
            result = loop.finish()
        finally:
            worker.close()
        server.silent = False
        clean = False
        try:
            gripper.close()
            gripper.connect()
            gripper.activate(timeout_s=2.0)
            gripper.move(0.04, 0.1, 20.0)
            clean = gripper.wait(2.0) is not None
        except RobotiqError:
            clean = False
        finally:
            gripper.close()
    stopped = result.reason == EndReason.ROBOT_ERROR and bool(arm.stops)
    return ScenarioResult(
        scenario="robot_gripper_socket_timeout",
        expected_end_state="recovered",
        end_state="recovered" if stopped and clean else ("stopped" if stopped else "running"),
        reason=result.reason.value,
        safe_stop_ms=(arm.stops[0] - fault_t) * 1000.0 if arm.stops else float("nan"),
        detect_ms=(result.ended_s - fault_t) * 1000.0,
        limit_violations=arm.violations,
        stop_called=bool(arm.stops),
        moved_after_stop=arm.moved_after_stop(),
        detail=result.detail,
        extra={"next_run_clean": clean, "longest_tick_ms": longest * 1000.0, "ticks_while_waiting": ticks_waiting},
    )


ROBOT: dict[str, Callable[[], ScenarioResult]] = {
    "robot_protective_stop": protective_stop,
    "robot_emergency_stop": emergency_stop,
    "robot_rtde_drop_and_return": rtde_drop_and_return,
    "robot_gripper_socket_timeout": gripper_socket_timeout,
    "robot_object_dropped": object_dropped,
}
