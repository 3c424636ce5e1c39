"""The UR5e servo thread: servoJ at 500 Hz (initPeriod/waitPeriod), each target through the safety layer, the
controller's stop flags read every tick, and a halt (servoStop) when no fresh target came within the safety
layer's command timeout.

Units: radians, seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyViolation
from robot.stop_signal import StopSignal
from robot.ur5e_boundary import RtdeControl, RtdeReceive
from robot.ur5e_config import ServoConfig
from robot.ur5e_errors import NotConnectedError, ProtectiveStopError, UR5eError
from robot.ur5e_events import EMERGENCY_MODES, STOPPED_MODES, EventHub, EventKind, safety_mode_name

F64 = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


class ServoLoop:
    """Streams the latest target to `control.servoJ` once per servo period on its own thread.

    io_lock serialises every ur_rtde call with the driver's other calls; on_disconnect is called (on this
    thread) when the controller stops answering and returns True once reconnected; clock returns seconds.
    """

    def __init__(
        self,
        control: RtdeControl,
        receive: RtdeReceive,
        safety: SafetyLayer,
        config: ServoConfig,
        events: EventHub,
        io_lock: threading.RLock,
        on_disconnect: Callable[[], bool],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if abs(safety.period_s - config.period_s) > 1e-12:
            raise ValueError(
                f"the safety layer's period {safety.period_s} s must equal the servo period {config.period_s} s"
            )
        self.control, self.receive, self.safety, self.config = control, receive, safety, config
        self.events, self.io_lock, self.on_disconnect, self.clock = events, io_lock, on_disconnect, clock
        self._lock = threading.Lock()
        self._target: F64 | None = None
        self._target_time = 0.0
        self._servoing = False
        self.paused = False
        self._status = RobotStatus()
        self._mode = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kick_failed = False
        self._last_start: float | None = None
        self.periods: list[float] = []
        self.sent = 0
        #: a stop raised by another process (the stop guard): while pending, every tick drops the target and
        #: halts (servoStop), before the server's own stop reaches the driver
        self.stop_signal: StopSignal | None = None

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> RobotStatus:
        """The controller state read at the last tick."""
        with self._lock:
            return self._status

    @property
    def servoing(self) -> bool:
        """True while servoJ commands are being streamed."""
        return self._servoing

    @property
    def stopping(self) -> threading.Event:
        """Set once the loop was asked to end."""
        return self._stop

    @property
    def running(self) -> bool:
        """True while the servo thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def period_errors_s(self) -> F64:
        """|measured tick period - nominal period| of every tick so far, seconds."""
        return np.abs(np.asarray(self.periods, dtype=np.float64) - self.config.period_s)

    # ------------------------------------------------------------------ commands (any thread)
    def submit(self, q: npt.ArrayLike) -> None:
        """Set the target to servo towards, (6,) radians. Refused (ProtectiveStopError) while the arm is stopped,
        NotConnectedError when not connected, SafetyViolation for NaN/inf or a wrong shape."""
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != (6,):
            raise ValueError(f"joint target must have shape (6,) (radians), got {arr.shape}")
        bad = [f"non_finite: q_target[{i}] = {v} is not a finite number" for i, v in enumerate(arr)]
        bad = [b for b, v in zip(bad, arr, strict=True) if not math.isfinite(v)]
        if bad:
            self.events.publish(EventKind.COMMAND_REFUSED, "; ".join(bad))
            raise SafetyViolation(tuple(bad))
        status = self.status
        if not status.connected or not self.running:
            raise NotConnectedError("servo_joints while not connected: connect() first (or reconnect)")
        if not status.ok:
            msg = f"servo target refused: the arm is stopped ({status.message}); nothing was sent"
            self.events.publish(EventKind.COMMAND_REFUSED, msg)
            raise ProtectiveStopError(msg)
        if self.paused:
            raise UR5eError("servo target refused: the arm is in teach mode or a moveJ; end it first")
        with self._lock:
            self._target = arr.copy()
            self._target_time = self.clock()

    def clear(self) -> None:
        """Drop the current target (the next tick halts a running servo)."""
        with self._lock:
            self._target = None

    def halt(self, reason: str) -> None:
        """servoStop now if streaming; the target is dropped."""
        self.clear()
        with self.io_lock:
            self._halt_locked(reason)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Read the controller state once, then run the loop on its own (daemon) thread."""
        if self._thread is not None:
            raise RuntimeError("this ServoLoop was already started")
        with self.io_lock:
            self._read_status()
        self._thread = threading.Thread(target=self.run, name="ur5e-servo", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """End the loop and wait up to `timeout_s` seconds for the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def run(self) -> None:
        """The loop (blocking): initPeriod, one tick, waitPeriod."""
        try:
            while not self._stop.is_set():
                t0 = self.control.initPeriod()
                if self._stop.is_set():
                    break
                started = self.clock()
                if self._last_start is not None:
                    self.periods.append(started - self._last_start)
                    del self.periods[:-100_000]
                self._last_start = started
                with self.io_lock:
                    self.tick(started)
                self.control.waitPeriod(t0)
        except Exception as exc:
            log.exception("ur5e servo loop failed")
            self.events.publish(EventKind.COMMAND_FAILED, f"servo loop raised {type(exc).__name__}: {exc}")
        finally:
            try:
                with self.io_lock:
                    self._halt_locked("servo loop ended")
            except Exception:
                log.exception("servoStop at the end of the servo loop raised")

    def tick(self, now: float) -> None:
        """One servo tick at `now` seconds (call with io_lock held)."""
        status = self._read_status()
        if not status.connected:
            return
        guard_stop = self.stop_signal is not None and self.stop_signal.pending
        if guard_stop or not status.ok or self.paused:
            if guard_stop or not status.ok:
                self.clear()
                self._halt_locked("a stop raised by the stop guard" if guard_stop else status.message)
            self._kick()
            return
        with self._lock:
            target, t_cmd = self._target, self._target_time
        if target is not None and now - t_cmd > self.safety.limits.command_timeout:
            self.clear()
            if self._servoing:
                self.events.publish(
                    EventKind.COMMAND_TIMEOUT,
                    f"no fresh servo target for {now - t_cmd:.3f} s (limit {self.safety.limits.command_timeout} s)",
                )
                self._halt_locked("command timeout")
            target = None
        if target is None:
            self._kick()
            return
        if not self._servoing:
            self.safety.reset(np.asarray(self.receive.getActualQ(), dtype=np.float64), now)
        try:
            cmd = self.safety.check(target, self.safety.limits.gripper_width_range[1], now)
        except SafetyViolation as exc:
            self.clear()
            self.events.publish(EventKind.COMMAND_REFUSED, str(exc))
            self._halt_locked("safety layer refused the target")
            return
        cfg = self.config
        if not self.control.servoJ(cmd.q.tolist(), 0.0, 0.0, cfg.period_s, cfg.lookahead_time_s, cfg.gain):
            self.clear()
            self.events.publish(EventKind.COMMAND_FAILED, "servoJ returned False: the controller rejected the target")
            self._halt_locked("servoJ failed")
            return
        self._servoing = True
        self.sent += 1

    # ------------------------------------------------------------------ internals
    def _halt_locked(self, reason: str) -> None:
        if not self._servoing:
            return
        self._servoing = False
        if not self.control.servoStop(self.config.stop_deceleration):
            self.events.publish(EventKind.COMMAND_FAILED, f"servoStop returned False (halting because: {reason})")

    def _kick(self) -> None:
        ok = self.control.kickWatchdog()
        if not ok and not self._kick_failed:
            self.events.publish(EventKind.COMMAND_FAILED, "kickWatchdog returned False")
        self._kick_failed = not ok

    def _read_status(self) -> RobotStatus:
        try:
            connected = bool(self.receive.isConnected()) and bool(self.control.isConnected())
            if connected:
                mode = int(self.receive.getSafetyMode())
                protective = bool(self.receive.isProtectiveStopped()) or mode in STOPPED_MODES
                emergency = bool(self.receive.isEmergencyStopped()) or mode in EMERGENCY_MODES
        except Exception as exc:
            log.warning("reading the controller state raised %s: %s", type(exc).__name__, exc)
            connected = False
        if not connected:
            return self._lost()
        old = self.status
        message = "" if mode == 1 else f"safety mode {safety_mode_name(mode)}"
        new = RobotStatus(True, protective, emergency, message)
        with self._lock:
            self._status, old_mode, self._mode = new, self._mode, mode
        if protective != old.protective_stop:
            kind = EventKind.PROTECTIVE_STOP if protective else EventKind.PROTECTIVE_STOP_CLEARED
            self.events.publish(kind, message or "safety mode NORMAL")
        if emergency != old.emergency_stop:
            kind = EventKind.EMERGENCY_STOP if emergency else EventKind.EMERGENCY_STOP_CLEARED
            self.events.publish(kind, message or "safety mode NORMAL")
        if mode != old_mode:
            self.events.publish(EventKind.SAFETY_MODE, f"{safety_mode_name(old_mode)} -> {safety_mode_name(mode)}")
        return new

    def _lost(self) -> RobotStatus:
        self.clear()
        self._servoing = False
        lost = RobotStatus(connected=False, message="connection to the controller lost")
        with self._lock:
            self._status = lost
        self.events.publish(EventKind.DISCONNECTED, "the controller stopped answering")
        if self.on_disconnect():
            return self._read_status()
        self._stop.set()
        return lost
