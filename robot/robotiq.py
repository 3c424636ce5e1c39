"""Robotiq 2F-85 driver over the URCap socket (`robot.robotiq_link`), implementing `robot.protocols.Gripper`.

Registers used: ACT (activate), GTO (go to the requested position; 0 halts), POS (requested position when set,
measured position when read), PRE (echo of the requested position), SPE (speed), FOR (force), STA (activation
status: 3 = ready), OBJ (object detection), FLT (fault code). Units: metres, metres per second, newtons, seconds.
"""

from __future__ import annotations

import time
from enum import IntEnum

from robot.robotiq_errors import (
    GripperFaultError,
    GripperNotActivatedError,
    GripperTimeoutError,
    RobotiqError,
)
from robot.robotiq_link import URCAP_PORT, URCapLink
from robot.robotiq_mapping import (
    FORCE_RANGE_N,
    REGISTER_MAX,
    SPEED_RANGE_M_S,
    PositionMap,
    force_to_for,
    speed_to_spe,
)

#: STA value once activation has completed.
STA_READY = 3


class ObjectStatus(IntEnum):
    """The OBJ register: where the last motion stands."""

    MOVING = 0  # fingers travelling towards the requested position, nothing touched
    CONTACT_OPENING = 1  # stopped early by a contact while opening
    CONTACT_CLOSING = 2  # stopped early by a contact while closing: an object is held
    AT_TARGET = 3  # reached the requested position without contact

    @property
    def object_detected(self) -> bool:
        """True when the fingers stopped on something."""
        return self in (ObjectStatus.CONTACT_OPENING, ObjectStatus.CONTACT_CLOSING)


class RobotiqGripper:
    """A Robotiq 2F-85 on a UR controller, reached over the URCap gripper server.

    host: controller address; port: URCap server port (63352); timeout_s: seconds allowed per reply;
    connect_timeout_s: seconds allowed to connect; position_map: metres <-> POS (measure one with
    `calibrate_stroke`); poll_s: seconds between status reads while waiting.
    Call `connect()` then `activate()` (or use it as a context manager, which connects and closes).
    """

    def __init__(
        self,
        host: str,
        port: int = URCAP_PORT,
        *,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        position_map: PositionMap | None = None,
        poll_s: float = 0.01,
    ) -> None:
        if not 0 < poll_s <= 1:
            raise ValueError(f"poll_s must be within (0, 1] seconds, got {poll_s}")
        self.link = URCapLink(host, port, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self.position_map = position_map or PositionMap()
        self.poll_s = poll_s
        self._activated = False
        self._requested_pos: int | None = None  # POS of the motion in progress; None when halted or idle

    # ---------------------------------------------------------------- connection
    def connect(self) -> None:
        """Open the socket; see `URCapLink.connect` for the errors."""
        self.link.connect()
        self._activated = False

    def close(self) -> None:
        """Close the socket (the gripper keeps its state and grip); idempotent."""
        self.link.close()

    def __enter__(self) -> RobotiqGripper:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- status
    @property
    def activated(self) -> bool:
        """True once `activate()` has succeeded on this connection."""
        return self._activated

    def fault_code(self) -> int:
        """The FLT register (0 = no fault)."""
        return self.link.get("FLT")

    def check_fault(self) -> None:
        """Raise GripperFaultError when the gripper reports a fault."""
        code = self.fault_code()
        if code:
            raise GripperFaultError(code)

    def position(self) -> int:
        """Measured finger position, POS register 0..255 (0 = open)."""
        return self.link.get("POS")

    def width(self) -> float:
        """Measured opening between the pads, metres."""
        return self.position_map.pos_to_width(self.position())

    def object_status(self) -> ObjectStatus:
        """The OBJ register as an `ObjectStatus`."""
        value = self.link.get("OBJ")
        try:
            return ObjectStatus(value)
        except ValueError:
            raise RobotiqError(f"OBJ must be 0..3, the gripper reported {value}") from None

    def object_detected(self) -> bool:
        """True when the fingers stopped on an object (OBJ 1: contact while opening, OBJ 2: while closing)."""
        return self.object_status().object_detected

    # ---------------------------------------------------------------- activation
    def activate(self, timeout_s: float = 5.0, *, reset: bool = False) -> None:
        """Activate the gripper and wait (at most `timeout_s` seconds) until STA reads 3. An already active
        gripper is left as it is unless `reset`; a gripper in fault is reset first (ACT 0) to clear the fault.
        Activation moves the fingers through their stroke: keep the gripper empty."""
        _check_timeout(timeout_s)
        self._activated = False
        deadline = time.monotonic() + timeout_s
        if not reset and self.link.get("STA") == STA_READY and self.fault_code() == 0:
            self._activated = True
            return
        self.link.set([("ACT", 0)])
        self.link.set([("ACT", 1)])
        while True:
            sta = self.link.get("STA")
            code = self.fault_code()
            if code not in (0, 5, 7):  # 5 and 7 can show while the activation request is being taken up
                raise GripperFaultError(code)
            if sta == STA_READY:
                self._activated = True
                return
            if time.monotonic() >= deadline:
                raise GripperTimeoutError(f"activation did not finish within {timeout_s} s (STA {sta}, expected 3)")
            time.sleep(self.poll_s)

    # ---------------------------------------------------------------- motion
    def move(self, width_m: float, speed_m_s: float, force_n: float) -> None:
        """Start moving to an opening of `width_m` metres at `speed_m_s` m/s with at most `force_n` N; returns at
        once (see `wait`). Values outside the 2F-85's ranges are refused with ValueError."""
        self.move_pos(self.position_map.width_to_pos(width_m), speed_m_s, force_n)

    def move_pos(self, pos: int, speed_m_s: float, force_n: float) -> None:
        """Start moving to the raw position `pos` (0..255, 0 = open); see `move`."""
        if not 0 <= pos <= REGISTER_MAX:
            raise ValueError(f"POS must be within 0..255, got {pos}")
        spe, force = speed_to_spe(speed_m_s), force_to_for(force_n)
        if not self._activated:
            raise GripperNotActivatedError("the gripper is not activated: call activate() before moving it")
        self.link.set([("POS", pos), ("SPE", spe), ("FOR", force), ("GTO", 1)])
        self._requested_pos = pos

    def stop(self) -> None:
        """Halt the fingers where they are (GTO 0). Sends no position, so it never opens the gripper; an object
        already gripped stays gripped. Idempotent."""
        self.link.set([("GTO", 0)])
        self._requested_pos = None

    def wait(self, timeout_s: float) -> ObjectStatus:
        """Wait until the motion started by `move` ends (at most `timeout_s` seconds) and return how it ended.
        Raises GripperFaultError on a fault and GripperTimeoutError when the fingers are still moving; returns the
        current status at once when no motion is in progress (never moved, or halted by `stop`)."""
        _check_timeout(timeout_s)
        deadline = time.monotonic() + timeout_s
        requested = self._requested_pos
        if requested is None:
            return self.object_status()
        # the server takes up a request asynchronously: OBJ refers to the new motion only once PRE echoes it
        while self.link.get("PRE") != requested:
            self._wait_step(deadline, timeout_s, "the gripper to take up the position request")
        while True:
            status = self.object_status()
            self.check_fault()
            if status != ObjectStatus.MOVING:
                self._requested_pos = None
                return status
            self._wait_step(deadline, timeout_s, f"the fingers to reach POS {requested}")

    def _wait_step(self, deadline: float, timeout_s: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise GripperTimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(self.poll_s)

    def calibrate_stroke(self, timeout_s: float = 5.0) -> PositionMap:
        """Measure the POS readings of the fully open and fully closed fingers (the gripper must be empty), adopt
        the resulting `PositionMap`, reopen, and return it."""
        fast, gentle = SPEED_RANGE_M_S[1], FORCE_RANGE_N[0]
        self.move_pos(0, fast, gentle)
        self.wait(timeout_s)
        pos_open = self.position()
        self.move_pos(REGISTER_MAX, fast, gentle)
        if self.wait(timeout_s).object_detected:
            raise RobotiqError("the fingers closed on something during stroke calibration: empty the gripper")
        pos_closed = self.position()
        self.position_map = PositionMap(pos_open, pos_closed, self.position_map.stroke_m)
        self.move_pos(pos_open, fast, gentle)
        self.wait(timeout_s)
        return self.position_map


def _check_timeout(timeout_s: float) -> None:
    if not 0 < timeout_s <= 600:
        raise ValueError(f"timeout_s must be within (0, 600] seconds, got {timeout_s}")
