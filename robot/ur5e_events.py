"""Events of the UR5e driver (stops, refused commands, timeouts, connection changes), delivered to listeners and
to a bounded queue, and the controller's safety modes.

Units: seconds (monotonic clock).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

log = logging.getLogger(__name__)


class SafetyMode(IntEnum):
    """The controller's safety mode (RTDE `safety_mode`)."""

    NORMAL = 1
    REDUCED = 2
    PROTECTIVE_STOP = 3
    RECOVERY = 4
    SAFEGUARD_STOP = 5
    SYSTEM_EMERGENCY_STOP = 6
    ROBOT_EMERGENCY_STOP = 7
    VIOLATION = 8
    FAULT = 9
    VALIDATE_JOINT_ID = 10
    UNDEFINED_SAFETY_MODE = 11
    AUTOMATIC_MODE_SAFEGUARD_STOP = 12
    SYSTEM_THREE_POSITION_ENABLING_STOP = 13


#: Safety modes in which the arm cannot move (besides the emergency stops).
STOPPED_MODES = frozenset(
    {
        SafetyMode.PROTECTIVE_STOP,
        SafetyMode.SAFEGUARD_STOP,
        SafetyMode.VIOLATION,
        SafetyMode.FAULT,
        SafetyMode.AUTOMATIC_MODE_SAFEGUARD_STOP,
        SafetyMode.SYSTEM_THREE_POSITION_ENABLING_STOP,
    }
)
EMERGENCY_MODES = frozenset({SafetyMode.SYSTEM_EMERGENCY_STOP, SafetyMode.ROBOT_EMERGENCY_STOP})


def safety_mode_name(mode: int) -> str:
    """The name of safety mode `mode`, or "UNKNOWN(n)"."""
    try:
        return SafetyMode(mode).name
    except ValueError:
        return f"UNKNOWN({mode})"


class EventKind(StrEnum):
    """What happened."""

    PROTECTIVE_STOP = "protective_stop"
    PROTECTIVE_STOP_CLEARED = "protective_stop_cleared"
    EMERGENCY_STOP = "emergency_stop"
    EMERGENCY_STOP_CLEARED = "emergency_stop_cleared"
    SAFETY_MODE = "safety_mode"  # the safety mode changed
    COMMAND_FAILED = "command_failed"  # a ur_rtde call returned False or raised
    COMMAND_REFUSED = "command_refused"  # the driver refused a command (stopped arm, safety layer)
    COMMAND_TIMEOUT = "command_timeout"  # no fresh target for the command timeout: servo halted
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    RECONNECT_FAILED = "reconnect_failed"
    STOPPED = "stopped"  # servoStop + stopScript sent (close, signal, exception)


@dataclass(frozen=True)
class RobotEvent:
    """One event: its kind, the monotonic time in seconds, and a message saying what and why."""

    kind: EventKind
    time_s: float
    message: str = ""


Listener = Callable[[RobotEvent], None]


class EventHub:
    """Fans events out to listeners (called on the publishing thread, which is the servo thread for stops: keep
    them short) and into a bounded queue (`queue`; the oldest event is dropped when full)."""

    def __init__(self, maxsize: int = 1000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1 event, got {maxsize}")
        self.queue: queue.Queue[RobotEvent] = queue.Queue(maxsize)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.history: list[RobotEvent] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every future event; returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, kind: EventKind, message: str = "") -> RobotEvent:
        """Record and deliver one event; a listener that raises is logged and skipped."""
        event = RobotEvent(kind, time.monotonic(), message)
        level = logging.INFO if kind in (EventKind.RECONNECTED, EventKind.STOPPED) else logging.WARNING
        log.log(level, "ur5e %s: %s", kind.value, message)
        with self._lock:
            listeners = list(self._listeners)
            self.history.append(event)
            del self.history[:-1000]
        while True:
            try:
                self.queue.put_nowait(event)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("ur5e event listener %r raised", listener)
        return event

    def kinds(self) -> list[EventKind]:
        """Kinds of the recorded events, oldest first."""
        with self._lock:
            return [e.kind for e in self.history]
