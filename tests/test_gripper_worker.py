"""Gripper moves sent from their own thread (robot.gripper_worker): the newest request wins, a failed send is
reported and refuses later moves, stop drops what was not sent, and a control loop driving a gripper that blocks
keeps ticking and ends with robot_error when the send fails. No timing assertions: the order of events is
controlled with events."""

from __future__ import annotations

import threading
import time

import pytest
from test_runtime import PERIOD, FakeRobot, hold_chunk

from pipeline.runtime import ChunkQueue, ControlConfig, ControlLoop, EndReason
from robot.gripper_worker import GripperIOError, GripperWorker
from robot.protocols import Gripper, ReportsIOFailure
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.mjcf import TCP_OFFSET


class BlockingGripper:
    """A `Gripper` whose move waits until `release` is set (the gripper not answering) and then either returns or
    raises `fail_with`; records what reached it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.moves: list[float] = []
        self.stops = 0
        self.fail_with: Exception | None = None

    def width(self) -> float:
        return 0.085

    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        self.entered.set()
        if not self.release.wait(10.0):
            raise TimeoutError("the test never released the gripper")
        if self.fail_with is not None:
            raise self.fail_with
        self.moves.append(width_m)

    def stop(self) -> None:
        self.stops += 1


def wait_until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_moves_return_at_once_and_the_newest_request_wins() -> None:
    inner = BlockingGripper()
    with GripperWorker(inner) as worker:
        assert isinstance(worker, Gripper)
        assert isinstance(worker, ReportsIOFailure)
        worker.move(0.05, 0.1, 20.0)  # taken by the worker, which then waits on the gripper
        assert inner.entered.wait(10.0)
        worker.move(0.04, 0.1, 20.0)  # waiting: replaced by the next one
        worker.move(0.03, 0.1, 20.0)
        assert worker.superseded == 1
        inner.release.set()
        wait_until(lambda: worker.sent == 2)
        assert inner.moves == [0.05, 0.03]
        assert worker.io_failure() is None
        assert worker.width() == 0.085


def test_a_failed_send_is_reported_and_refuses_later_moves() -> None:
    inner = BlockingGripper()
    inner.fail_with = ConnectionError("no reply within 0.2 s")
    with GripperWorker(inner) as worker:
        worker.move(0.03, 0.1, 20.0)
        inner.release.set()
        wait_until(lambda: worker.io_failure() is not None)
        assert isinstance(worker.io_failure(), ConnectionError)
        with pytest.raises(GripperIOError, match=r"no reply within 0\.2 s; reconnect the gripper") as info:
            worker.move(0.02, 0.1, 20.0)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert inner.moves == []


def test_stop_drops_the_unsent_move_and_close_refuses_more() -> None:
    inner = BlockingGripper()
    worker = GripperWorker(inner)
    worker.move(0.05, 0.1, 20.0)
    assert inner.entered.wait(10.0)
    worker.move(0.01, 0.1, 20.0)  # not yet sent
    inner.release.set()
    worker.stop()  # waits for the send in progress, drops the pending one, halts the fingers
    assert inner.stops == 1
    worker.close()
    worker.close()
    assert inner.moves == [0.05]  # the dropped request never reached the gripper
    with pytest.raises(GripperIOError, match="closed"):
        worker.move(0.03, 0.1, 20.0)
    with pytest.raises(ValueError, match="join_timeout_s"):
        GripperWorker(inner, join_timeout_s=0.0)


def test_the_control_loop_keeps_ticking_while_the_gripper_waits_then_ends_robot_error() -> None:
    inner = BlockingGripper()
    inner.fail_with = TimeoutError("no reply to 'SET POS' within 0.2 s")
    robot = FakeRobot()
    with GripperWorker(inner) as worker:
        queue = ChunkQueue()
        safety = SafetyLayer(SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=PERIOD)
        loop = ControlLoop(robot, queue, safety, worker, ControlConfig(period_s=PERIOD, gripper_force_n=40.0))
        loop.begin(0.0)
        chunk = hold_chunk(50, grip=0.085)
        chunk[2:, 6] = 0.0  # close from tick 2
        queue.put(chunk, 0)
        ended = None
        for n in range(20):  # the gripper is still silent: every tick runs and sends its servo target
            ended = loop.tick(n, n * PERIOD)
            assert ended is None
        assert inner.entered.wait(10.0)  # the close went to the worker, which waits on the silent gripper
        assert len(robot.commands) == 20
        inner.release.set()  # the send now fails on the worker thread
        wait_until(lambda: worker.io_failure() is not None)
        ended = loop.tick(20, 20 * PERIOD)
        result = loop.finish()
    assert ended == EndReason.ROBOT_ERROR
    assert result.reason == EndReason.ROBOT_ERROR
    assert "gripper: TimeoutError: no reply to 'SET POS'" in result.detail
    assert robot.stops == 1
    assert inner.stops == 1
    assert len(robot.commands) == 20  # nothing sent on the tick that found the failure
