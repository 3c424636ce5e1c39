"""The real UR5e over ur_rtde, behind the `Robot` protocol.

`connect()` probes the controller with timeouts of ours (robot.ur5e_connect), builds the ur_rtde interfaces, sets
the RTDE watchdog at once, sets the speed slider and starts the 500 Hz servo thread (robot.ur5e_servo). Every exit
(`close()`, the context manager, an exception, SIGINT/SIGTERM, interpreter exit) sends servoStop and stopScript.
Stops and failures arrive as events (`events`, robot.ur5e_events) and through `status()`.

Units: radians, seconds, rad/s, rad/s².
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from robot.protocols import RobotStatus
from robot.safety import SafetyLayer
from robot.stop_signal import StopSignal
from robot.ur5e_boundary import RECEIVE_VARIABLES, RtdeControl, RtdeFactory, RtdeIO, RtdeReceive, UrRtdeFactory
from robot.ur5e_config import UR5eConfig, clamp_speed_slider
from robot.ur5e_connect import classify_constructor_error, probe_controller, probe_rtde
from robot.ur5e_errors import CommandFailedError, NotConnectedError, ProtectiveStopError, UR5eError
from robot.ur5e_events import EventHub, EventKind
from robot.ur5e_servo import ServoLoop

F64 = npt.NDArray[np.float64]
log = logging.getLogger(__name__)
Probe = Callable[[str, float], None]


def _home_q() -> tuple[float, ...]:
    from robot.sim.config import HOME_Q

    return HOME_Q


class UR5e:
    """A UR5e streamed joint targets by servoJ. Use as a context manager (connects, and stops on exit).

    factory builds the ur_rtde interfaces (the real ones by default); probe checks the controller before they are
    built (default: address, dashboard and RTDE checks with `config.connect_timeout_s`); sleep is used between
    reconnect attempts.
    """

    def __init__(
        self,
        config: UR5eConfig,
        factory: RtdeFactory | None = None,
        probe: Probe = probe_controller,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.factory: RtdeFactory = factory or UrRtdeFactory()
        self.probe, self.sleep, self.clock = probe, sleep, clock
        self.events = EventHub()
        self._io_lock = threading.RLock()
        self._control: RtdeControl | None = None
        self._receive: RtdeReceive | None = None
        self._io: RtdeIO | None = None
        self._servo: ServoLoop | None = None
        self._stop_signal: StopSignal | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._closed = False
        self.reconnects = 0

    @property
    def stop_signal(self) -> StopSignal | None:
        """A stop raised by another process (`api.stop_guard`): the servo thread drops its target and sends
        servoStop at every tick while it is pending, whatever the server's other threads are doing."""
        return self._stop_signal

    @stop_signal.setter
    def stop_signal(self, signal: StopSignal | None) -> None:
        self._stop_signal = signal
        if self._servo is not None:
            self._servo.stop_signal = signal

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Probe, build the interfaces, set the watchdog, the speed slider, and start the servo thread.
        Raises a `robot.ur5e_errors.UR5eError` subclass naming the cause."""
        if self._servo is not None:
            raise UR5eError("already connected; close() first")
        cfg = self.config
        self.probe(cfg.host, cfg.connect_timeout_s)
        try:
            self._receive = self.factory.receive(cfg.host, cfg.servo.frequency_hz, RECEIVE_VARIABLES)
            self._control = control = self.factory.control(cfg.host, cfg.servo.frequency_hz)
            self._check(control.setWatchdog(cfg.servo.watchdog_min_hz), "setWatchdog")
            if not control.isProgramRunning():
                raise UR5eError(f"{cfg.host}: the ur_rtde control script is not running after upload")
            self._io = self.factory.io(cfg.host)
            self._check(self._io.setSpeedSlider(cfg.speed_slider), "setSpeedSlider")
        except UR5eError:
            self._shutdown("connect failed")
            raise
        except RuntimeError as exc:
            self._shutdown("connect failed")
            raise classify_constructor_error(cfg.host, exc) from exc
        safety = SafetyLayer(cfg.safety, tcp_offset=cfg.tcp_offset, period_s=cfg.servo.period_s)
        self._servo = ServoLoop(
            control, self._receive, safety, cfg.servo, self.events, self._io_lock, self._reconnect, self.clock
        )
        self._servo.stop_signal = self._stop_signal
        self._servo.start()
        self._closed = False
        self._install_exit_hooks()
        log.info("connected to the UR5e at %s", cfg.host)

    def _reconnect(self) -> bool:
        """Bounded reconnect: `reconnect_tries` attempts, backoff doubling up to its maximum. True on success."""
        cfg, control, receive = self.config, self._control, self._receive
        if control is None or receive is None or self._closed:
            return False
        delay = cfg.reconnect_backoff_s
        for attempt in range(1, cfg.reconnect_tries + 1):
            self.sleep(delay)
            delay = min(delay * 2.0, cfg.reconnect_backoff_max_s)
            try:
                probe_ok = self._probe_quiet()
                if probe_ok and receive.reconnect() and control.reconnect():
                    self._check(control.setWatchdog(cfg.servo.watchdog_min_hz), "setWatchdog")
                    self.reconnects += 1
                    self.events.publish(EventKind.RECONNECTED, f"attempt {attempt} of {cfg.reconnect_tries}")
                    return True
            except Exception as exc:
                log.warning("reconnect attempt %d raised %s: %s", attempt, type(exc).__name__, exc)
        self.events.publish(EventKind.RECONNECT_FAILED, f"gave up after {cfg.reconnect_tries} attempts")
        return False

    def _probe_quiet(self) -> bool:
        if self.probe is not probe_controller:
            self.probe(self.config.host, self.config.connect_timeout_s)
            return True
        try:
            probe_rtde(self.config.host, self.config.connect_timeout_s)
        except UR5eError as exc:
            log.warning("reconnect probe failed: %s", exc)
            return False
        return True

    def close(self) -> None:
        """servoStop and stopScript, end the servo thread, disconnect, restore signal handlers. Idempotent."""
        self._shutdown("close")

    def __enter__(self) -> UR5e:
        if self._servo is None:
            self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shutdown("exception" if exc is not None else "context exit")

    # ------------------------------------------------------------------ Robot protocol
    def joint_positions(self) -> F64:
        """Measured joint angles, (6,) radians."""
        receive = self._receive
        if receive is None or self._closed:
            raise NotConnectedError("joint_positions while not connected: connect() first")
        with self._io_lock:
            return np.asarray(receive.getActualQ(), dtype=np.float64)

    def servo_joints(self, q: F64) -> None:
        """Stream one joint target (6, radians); the servo thread moves towards it through the safety layer.
        Refused with ProtectiveStopError while the arm is stopped (nothing moves)."""
        self._require_servo().submit(q)

    def stop(self) -> None:
        """Halt now (servoStop, target dropped). Idempotent; does nothing when not connected."""
        servo = self._servo
        if servo is not None and not self._closed:
            try:
                servo.halt("stop() requested")
            except Exception:
                log.exception("servoStop on stop() raised")

    def status(self) -> RobotStatus:
        """Connection and protective/emergency stop flags read by the servo thread at its last tick."""
        servo = self._servo
        if servo is None or self._closed:
            return RobotStatus(connected=False, message="not connected")
        return servo.status

    # ------------------------------------------------------------------ other motion
    def move_home(self, q: tuple[float, ...] | None = None) -> None:
        """moveJ (blocking) to the home pose `q` (default robot.sim.config.HOME_Q), radians."""
        self.move_joints(q if q is not None else _home_q())

    def move_joints(self, q: tuple[float, ...]) -> None:
        """moveJ (blocking) to joint angles `q`, radians, within the safety layer's joint limits."""
        target = [float(v) for v in q]
        if len(target) != 6 or not all(np.isfinite(target)):
            raise ValueError(f"a joint pose must be 6 finite joint angles (radians), got {target}")
        lo, hi = self.config.safety.joint_bounds
        if np.any(np.asarray(target) < lo) or np.any(np.asarray(target) > hi):
            raise ValueError(
                f"joint pose {np.round(target, 3).tolist()} is outside the joint limits with margin "
                f"[{np.round(lo, 3).tolist()}, {np.round(hi, 3).tolist()}] rad"
            )
        servo, control = self._require_servo(), self._control
        self._refuse_when_stopped("moveJ")
        servo.halt("moveJ")
        servo.paused = True
        try:
            with self._io_lock:
                if control is None:
                    raise NotConnectedError("not connected")
                ok = control.moveJ(target, self.config.home_speed, self.config.home_acceleration, False)
            self._check(ok, "moveJ", "the controller did not reach the requested joint pose")
        finally:
            servo.paused = False

    def teach_mode(self) -> None:
        """Freedrive: the arm can be moved by hand; servo targets are refused until `end_teach_mode`."""
        servo, control = self._require_servo(), self._control
        self._refuse_when_stopped("teach mode")
        servo.halt("teach mode")
        servo.paused = True
        with self._io_lock:
            ok = control is not None and control.teachMode()
        if not ok:
            servo.paused = False
            self._check(False, "teachMode")

    def end_teach_mode(self) -> None:
        """Leave freedrive; servo targets are accepted again."""
        servo, control = self._require_servo(), self._control
        with self._io_lock:
            ok = control is not None and control.endTeachMode()
        self._check(ok, "endTeachMode")
        servo.paused = False

    def set_speed_slider(self, fraction: float) -> float:
        """Set the controller's speed slider to `fraction` clamped to [0.01, 1]; returns the value sent."""
        value = clamp_speed_slider(fraction)
        if self._io is None or self._closed:
            raise NotConnectedError("set_speed_slider while not connected")
        with self._io_lock:
            self._check(self._io.setSpeedSlider(value), "setSpeedSlider")
        return value

    @property
    def servo(self) -> ServoLoop:
        """The servo loop (period statistics, commands sent)."""
        return self._require_servo()

    # ------------------------------------------------------------------ internals
    def _require_servo(self) -> ServoLoop:
        if self._servo is None or self._closed:
            raise NotConnectedError("the UR5e driver is not connected: connect() first")
        return self._servo

    def _refuse_when_stopped(self, what: str) -> None:
        status = self.status()
        if not status.ok:
            msg = f"{what} refused: {status.message or 'the arm is stopped or disconnected'}; nothing was sent"
            self.events.publish(EventKind.COMMAND_REFUSED, msg)
            raise ProtectiveStopError(msg)

    def _check(self, ok: bool, call: str, detail: str = "") -> None:
        if not ok:
            self.events.publish(EventKind.COMMAND_FAILED, f"{call} returned False {detail}".strip())
            raise CommandFailedError(call, detail)

    def _shutdown(self, why: str) -> None:
        """servoStop + stopScript + disconnect, each attempted whatever the others did."""
        if self._closed:
            return
        self._closed = True
        servo, control = self._servo, self._control
        if servo is not None:
            servo.stop()
        acquired = self._io_lock.acquire(timeout=0.5)  # a hung ur_rtde call must not block the stop
        try:
            if control is not None:
                for name, call in (
                    ("servoStop", lambda: control.servoStop(self.config.servo.stop_deceleration)),
                    ("stopScript", control.stopScript),
                ):
                    try:
                        if call() is False:
                            self.events.publish(EventKind.COMMAND_FAILED, f"{name} returned False on {why}")
                    except Exception:
                        log.exception("%s on %s raised", name, why)
            for part in (self._io, control, self._receive):
                if part is not None:
                    try:
                        part.disconnect()
                    except Exception:
                        log.exception("disconnect on %s raised", why)
        finally:
            if acquired:
                self._io_lock.release()
        self._remove_exit_hooks()
        if control is not None:
            self.events.publish(EventKind.STOPPED, f"servoStop + stopScript sent ({why})")

    def _install_exit_hooks(self) -> None:
        atexit.register(self.close)
        if not self.config.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _remove_exit_hooks(self) -> None:
        atexit.unregister(self.close)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in list(self._previous_handlers.items()):
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
                del self._previous_handlers[sig]
        # A handler that another one chained to stays reachable through it: it keeps its own previous handler so
        # that the chain still ends where it began (its shutdown is a no-op once closed).

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        log.warning("signal %d: stopping the UR5e (servoStop, stopScript)", signum)
        self._shutdown(f"signal {signum}")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
