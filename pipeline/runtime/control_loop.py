"""The control loop: each tick ensembles the queued predictions for that tick, passes the command through the safety
layer and streams it to the arm (100 Hz by default, on its own thread).

It holds the last command while no prediction covers the tick and ends with "policy_stalled" after a timeout; it
reads the controller status every tick and ends on a protective or emergency stop; `stop()` from any thread halts
it within one period; the robot is always told to stop when the loop ends, whatever ended it. The policy thread can
make it hold still (`hold` / `resume`, when perception lost the target). The same tick logic
serves lockstep simulation (`pipeline.runtime.lockstep`) with simulated time. Units: seconds, radians, metres.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.ensemble import ensemble
from robot.protocols import Gripper, ReportsIOFailure, Robot
from robot.safety import SafetyLayer, SafetyViolation

F64 = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


class EndReason(StrEnum):
    """Why a control loop ended."""

    STOP_REQUESTED = "stop_requested"  # stop() was called
    POLICY_STALLED = "policy_stalled"  # no prediction covered the tick for longer than the hold timeout
    POLICY_FAILED = "policy_failed"  # the policy raised or produced a bad chunk
    PROTECTIVE_STOP = "protective_stop"
    EMERGENCY_STOP = "emergency_stop"
    DISCONNECTED = "disconnected"  # the controller reports no connection
    COMMAND_TIMEOUT = "command_timeout"  # the loop itself sent nothing for longer than the safety command timeout
    SAFETY_VIOLATION = "safety_violation"  # a command was refused (NaN/inf, or any limit in "refuse" mode)
    ROBOT_ERROR = "robot_error"  # a driver call raised
    MAX_TICKS = "max_ticks"
    EPISODE_DONE = "episode_done"  # lockstep simulation: the episode terminated or was truncated
    TRACKER_LOST = "tracker_lost"  # the perception watch lost the target (pipeline.runtime.perception_watch)
    CAMERA_LOST = "camera_lost"  # the perception watch saw no fresh camera frame for too long


@dataclass(frozen=True)
class ControlConfig:
    """Settings of the control loop.

    period_s: seconds per tick (0.01 = 100 Hz); hold_timeout_s: seconds without any prediction for the tick
    before the loop ends with "policy_stalled" (it holds the last command until then);
    first_prediction_timeout_s: the same, before the first prediction ever arrives (model warm-up);
    ensemble_m: coefficient m of the weights exp(-m·i), i = 0 the oldest prediction;
    max_age_ticks: predictions older than this many ticks are not executed (None: the whole chunk is);
    max_ticks: end after this many ticks (None: run until stopped);
    gripper_speed_m_s, gripper_force_n: sent with every gripper move (the force is capped by the safety layer);
    gripper_deadband_m: a gripper move is sent only when the target changes by more than this (metres);
    spin_s: seconds before each deadline spent spinning instead of sleeping;
    history: ticks of period error kept (ring buffer);
    realtime_priority: when set (1..99), the threaded loop asks Linux for SCHED_FIFO at this priority for its own
    thread (needs root or CAP_SYS_NICE; on failure it logs a warning and runs at normal priority).
    """

    period_s: float = 0.01
    hold_timeout_s: float = 0.5
    first_prediction_timeout_s: float = 5.0
    ensemble_m: float = 0.01
    max_age_ticks: int | None = None
    max_ticks: int | None = None
    gripper_speed_m_s: float = 0.1
    gripper_force_n: float = 40.0
    gripper_deadband_m: float = 0.002
    spin_s: float = 0.001
    history: int = 60_000
    realtime_priority: int | None = None

    def __post_init__(self) -> None:
        if not 0.0005 <= self.period_s <= 1.0:
            raise ValueError(f"period_s must be within [0.0005, 1] s, got {self.period_s}")
        if self.hold_timeout_s < 0 or self.first_prediction_timeout_s < 0:
            raise ValueError(
                "hold_timeout_s and first_prediction_timeout_s must be >= 0 s, got "
                f"{self.hold_timeout_s}, {self.first_prediction_timeout_s}"
            )
        if self.max_age_ticks is not None and self.max_age_ticks < 0:
            raise ValueError(f"max_age_ticks must be >= 0 ticks or None, got {self.max_age_ticks}")
        if self.max_ticks is not None and self.max_ticks < 1:
            raise ValueError(f"max_ticks must be >= 1 or None, got {self.max_ticks}")
        if self.gripper_speed_m_s <= 0 or self.gripper_force_n <= 0 or self.gripper_deadband_m < 0:
            raise ValueError("gripper_speed_m_s and gripper_force_n must be positive, gripper_deadband_m >= 0")
        if not 0.0 <= self.spin_s < self.period_s:
            raise ValueError(f"spin_s must be within [0, period_s) s, got {self.spin_s}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1 tick, got {self.history}")
        if self.realtime_priority is not None and not 1 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority must be None or within 1..99, got {self.realtime_priority}")


@dataclass(frozen=True)
class LoopResult:
    """How a control loop ended.

    reason, detail: why; ticks: commands sent; predicted_ticks: ticks that had a prediction; held_ticks: ticks
    that held the last command; clamped_ticks: commands the safety layer changed; missed_ticks: deadlines
    skipped after an overrun; period_error_p50_s / p99_s / max_s: lateness of tick starts behind their deadlines,
    seconds (NaN when no tick was timed); ended_s: when the end was decided, seconds on the loop's clock (the first
    `stop()` or end condition; NaN for a loop that ended without either, e.g. a crash outside a tick).
    """

    reason: EndReason
    ticks: int
    detail: str = ""
    predicted_ticks: int = 0
    held_ticks: int = 0
    clamped_ticks: int = 0
    missed_ticks: int = 0
    period_error_p50_s: float = float("nan")
    period_error_p99_s: float = float("nan")
    period_error_max_s: float = float("nan")
    ended_s: float = float("nan")


class ControlLoop:
    """Streams ensembled, safety-checked commands from `queue` to `robot` (and `gripper`) once per period.

    Use `start()` / `stop()` / `join()` for the threaded loop, or `begin()`, `tick()` and `finish()` to drive it
    step by step with simulated time. `clock` returns seconds (monotonic): the threaded loop's deadlines and, in
    both uses, the moment the end was decided (`LoopResult.ended_s`; give a stepped loop the simulated clock).
    """

    def __init__(
        self,
        robot: Robot,
        queue: ChunkQueue,
        safety: SafetyLayer,
        gripper: Gripper | None = None,
        config: ControlConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = cfg = config or ControlConfig()
        if abs(safety.period_s - cfg.period_s) > 1e-12:
            raise ValueError(
                f"the safety layer's period ({safety.period_s} s) must equal the control period ({cfg.period_s} s):"
                " its per-tick step caps are derived from it"
            )
        if cfg.period_s >= safety.limits.command_timeout:
            raise ValueError(
                f"control period {cfg.period_s} s must be shorter than the command timeout "
                f"{safety.limits.command_timeout} s"
            )
        if queue.action_dim != 7:
            raise ValueError(f"the queue must hold 7-number actions (6 joints + gripper), got {queue.action_dim}")
        self.robot, self.queue, self.safety, self.gripper, self.clock = robot, queue, safety, gripper, clock
        # a gripper whose moves go out on their own thread reports a failed send here, read every tick
        self._gripper_io = gripper if isinstance(gripper, ReportsIOFailure) else None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._end: tuple[EndReason, str] | None = None
        self._ended_s = float("nan")
        self._result: LoopResult | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._errors = np.zeros(cfg.history)
        self._n_errors = 0
        self._tick = 0
        self._counts = {"ticks": 0, "predicted": 0, "held": 0, "clamped": 0, "missed": 0}
        self._held_q: F64 | None = None
        self._held_g = safety.limits.gripper_width_range[1]
        self._sent_g: float | None = None
        self._start_s = 0.0
        self._last_pred_s: float | None = None
        self._holding = False
        self._beats = 0  # policy heartbeats (hold / heartbeat calls); a new one counts as a fresh prediction
        self._seen_beats = 0
        self.realtime_active = False

    # ------------------------------------------------------------------ state
    @property
    def current_tick(self) -> int:
        """The tick being (or last) executed; observations are stamped with it."""
        return self._tick

    @property
    def done(self) -> bool:
        """True once the loop has ended and the robot was told to stop."""
        return self._done.is_set()

    @property
    def result(self) -> LoopResult | None:
        """The end state, once ended."""
        return self._result

    def period_errors(self) -> F64:
        """Recorded lateness of tick starts behind their deadlines (seconds), oldest first, at most `history`."""
        with self._state_lock:
            n, buf = self._n_errors, self._errors
            if n <= len(buf):
                return buf[:n].copy()
            i = n % len(buf)
            return np.concatenate([buf[i:], buf[:i]])

    def period_error_percentiles(self) -> tuple[float, float, float]:
        """(p50, p99, max) period error in seconds; NaNs before any timed tick."""
        errs = self.period_errors()
        if errs.size == 0:
            return float("nan"), float("nan"), float("nan")
        p50, p99 = np.percentile(errs, [50, 99])
        return float(p50), float(p99), float(errs.max())

    # ------------------------------------------------------------------ threaded use
    def start(self) -> None:
        """Run the loop on its own (daemon) thread."""
        if self._thread is not None:
            raise RuntimeError("this ControlLoop was already started; build a new one per run")
        self._thread = threading.Thread(target=self.run, name="control-loop", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float | None = None) -> LoopResult | None:
        """Wait up to `timeout_s` seconds for the loop to end; its result, or None if still running."""
        self._done.wait(timeout_s)
        return self._result

    def stop(self, reason: EndReason = EndReason.STOP_REQUESTED, detail: str = "", wait_s: float = 0.5) -> bool:
        """End the loop (from any thread): no command is sent after this returns True. The first reason given
        wins. Waits up to `wait_s` seconds for a command being sent right now; returns False if that timed out."""
        self._set_end(reason, detail)
        self._stop.set()
        if threading.get_ident() == self._thread_id:
            return True  # called from inside a tick (a driver callback): the tick checks the flag before sending
        if not self._send_lock.acquire(timeout=wait_s):
            log.error("stop(): a command send did not finish within %.3f s", wait_s)
            return False
        self._send_lock.release()
        return True

    def hold(self) -> None:
        """From the policy thread while perception has lost the target: drop the queued chunks and hold the last
        command until `resume()`. Call it on every policy iteration of the hold: each call is a heartbeat, and
        without one for `hold_timeout_s` seconds the loop ends with "policy_stalled" as usual."""
        with self._state_lock:
            self._holding = True
            self._beats += 1

    def resume(self) -> None:
        """End a hold: queued predictions are executed again."""
        with self._state_lock:
            self._holding = False

    def heartbeat(self) -> None:
        """From the policy thread when it skipped an observation on purpose (a missing or stale camera frame):
        the loop keeps executing what is queued, then holds, without ending with "policy_stalled"."""
        with self._state_lock:
            self._beats += 1

    @property
    def holding(self) -> bool:
        """True between `hold()` and `resume()`."""
        return self._holding

    def run(self) -> LoopResult:
        """The loop itself (blocking): absolute deadlines start + n·period, sleep until `spin_s` before each,
        then spin. Deadlines missed by a whole period are skipped (counted in `missed_ticks`)."""
        self._thread_id = threading.get_ident()
        cfg = self.config
        try:
            try:
                if cfg.realtime_priority is not None:
                    self.realtime_active = _set_realtime(cfg.realtime_priority)
                start = self.clock()
                self.begin(start)
                n = 0
                while not self._stop.is_set():
                    deadline = start + n * cfg.period_s
                    if self._wait_until(deadline):
                        break
                    now = self.clock()
                    late = now - deadline
                    self._record_error(late)
                    if late >= cfg.period_s:
                        skipped = int(late // cfg.period_s)
                        n += skipped
                        self._counts["missed"] += skipped
                    if self.tick(n, now) is not None:
                        break
                    n += 1
            except Exception as exc:
                log.exception("control loop failed")
                self._set_end(EndReason.ROBOT_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            result = self.finish()
        return result

    def _wait_until(self, deadline: float) -> bool:
        """Sleep, then spin, until `deadline`; True if stop() was called meanwhile."""
        remaining = deadline - self.config.spin_s - self.clock()
        if remaining > 0 and self._stop.wait(remaining):
            return True
        while self.clock() < deadline:
            if self._stop.is_set():
                return True
        return self._stop.is_set()

    def _record_error(self, late: float) -> None:
        with self._state_lock:
            self._errors[self._n_errors % len(self._errors)] = late
            self._n_errors += 1

    # ------------------------------------------------------------------ step-by-step use
    def begin(self, now_s: float) -> None:
        """Seed the safety layer and the held command with the measured state at `now_s` seconds."""
        q = np.asarray(self.robot.joint_positions(), dtype=np.float64)
        self.safety.reset(q, now_s)
        self._held_q = q.copy()
        if self.gripper is not None:
            lo, hi = self.safety.limits.gripper_width_range
            self._held_g = min(max(float(self.gripper.width()), lo), hi)
            self._sent_g = self._held_g
        self._start_s = now_s
        self._last_pred_s = None

    def tick(self, tick: int, now_s: float) -> EndReason | None:
        """Run control tick `tick` at time `now_s` (seconds): returns None to go on, or why the loop must end
        (then call `finish`)."""
        self._tick = tick
        if self._stop.is_set():
            return self._end_reason()
        cfg = self.config
        try:
            status = self.robot.status()
            if status.emergency_stop:
                return self._set_end(EndReason.EMERGENCY_STOP, status.message)
            if status.protective_stop:
                return self._set_end(EndReason.PROTECTIVE_STOP, status.message)
            if not status.connected:
                return self._set_end(EndReason.DISCONNECTED, status.message)
            failure = None if self._gripper_io is None else self._gripper_io.io_failure()
            if failure is not None:
                return self._set_end(EndReason.ROBOT_ERROR, f"gripper: {type(failure).__name__}: {failure}")
            with self._state_lock:
                holding, beats = self._holding, self._beats
            if beats != self._seen_beats:
                self._seen_beats, self._last_pred_s = beats, now_s
            if holding:
                self.queue.clear()
            self.queue.drop_before(tick)
            predictions = [] if holding else self.queue.predictions_for(tick, cfg.max_age_ticks)
            held_q = self._held_q
            if held_q is None:
                raise RuntimeError("ControlLoop.tick before begin()")
            if predictions:
                action = ensemble(predictions, cfg.ensemble_m)
                q_req, g_req = action[:6], float(action[6])
                self._last_pred_s = now_s
            else:
                since = self._start_s if self._last_pred_s is None else self._last_pred_s
                limit = cfg.first_prediction_timeout_s if self._last_pred_s is None else cfg.hold_timeout_s
                if now_s - since > limit:
                    return self._set_end(
                        EndReason.POLICY_STALLED,
                        f"no prediction for tick {tick} for {now_s - since:.3f} s (limit {limit} s)",
                    )
                q_req, g_req = held_q, self._held_g
            if self.safety.heartbeat_expired(now_s):
                return self._set_end(
                    EndReason.COMMAND_TIMEOUT, f"no command sent for more than {self.safety.limits.command_timeout} s"
                )
            cmd = self.safety.check(q_req, g_req, now_s, cfg.gripper_force_n)
            with self._send_lock:
                if self._stop.is_set():
                    return self._end_reason()
                self.robot.servo_joints(cmd.q)
                g_moved = self._sent_g is None or abs(cmd.gripper_width - self._sent_g) > cfg.gripper_deadband_m
                if self.gripper is not None and g_moved:
                    self.gripper.move(cmd.gripper_width, cfg.gripper_speed_m_s, cmd.gripper_force)
                    self._sent_g = cmd.gripper_width
            self._held_q, self._held_g = cmd.q, cmd.gripper_width
            counts = self._counts
            counts["ticks"] += 1
            counts["predicted" if predictions else "held"] += 1
            counts["clamped"] += int(cmd.clamped)
            if cfg.max_ticks is not None and counts["ticks"] >= cfg.max_ticks:
                return self._set_end(EndReason.MAX_TICKS, f"{cfg.max_ticks} ticks done")
        except SafetyViolation as exc:
            return self._set_end(EndReason.SAFETY_VIOLATION, str(exc))
        except Exception as exc:
            log.exception("control tick %d failed", tick)
            return self._set_end(EndReason.ROBOT_ERROR, f"{type(exc).__name__}: {exc}")
        return None

    def finish(self) -> LoopResult:
        """Tell the robot (and gripper) to stop, whatever happened before, and record the result."""
        self._stop.set()
        notes: list[str] = []
        for name, part in (("robot", self.robot), ("gripper", self.gripper)):
            if part is None or (name == "gripper" and part is self.robot):
                continue  # one object serving as both (SimRobot) is stopped once
            try:
                part.stop()
            except Exception as exc:
                log.exception("%s.stop() raised", name)
                notes.append(f"{name}.stop() raised {type(exc).__name__}: {exc}")
        reason, detail = self._end or (EndReason.STOP_REQUESTED, "")
        p50, p99, worst = self.period_error_percentiles()
        c = self._counts
        self._result = LoopResult(
            reason,
            c["ticks"],
            "; ".join([d for d in (detail, *notes) if d]),
            c["predicted"],
            c["held"],
            c["clamped"],
            c["missed"],
            p50,
            p99,
            worst,
            self._ended_s,
        )
        self._done.set()
        log.info("control loop ended: %s after %d ticks %s", reason.value, c["ticks"], detail)
        return self._result

    def _set_end(self, reason: EndReason, detail: str) -> EndReason:
        now = self.clock()
        with self._state_lock:
            if self._end is None:
                self._end, self._ended_s = (reason, detail), now
            return self._end[0]

    def _end_reason(self) -> EndReason:
        with self._state_lock:
            return EndReason.STOP_REQUESTED if self._end is None else self._end[0]


def _set_realtime(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at `priority`; False (with a warning) where not permitted."""
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None or not hasattr(os, "SCHED_FIFO"):
        log.warning("realtime priority requested but this platform has no sched_setscheduler; running normally")
        return False
    try:
        setter(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        log.warning("could not set SCHED_FIFO priority %d (%s); running at normal priority", priority, exc)
        return False
    return True
