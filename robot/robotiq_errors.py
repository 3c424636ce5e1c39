"""Errors of the Robotiq 2F-85 driver (`robot.robotiq`), one class per way the gripper or its link can fail.

Every error derives from `RobotiqError`; the connection errors also derive from the matching built-in (so a caller
catching `ConnectionError` or `TimeoutError` catches them too).
"""

from __future__ import annotations

#: Meaning of each non-zero FLT (fault) code reported by the gripper, in this project's words.
FAULT_MEANINGS: dict[int, str] = {
    5: "a command was sent before activation finished: wait for STA 3",
    6: "the gripper is not activated and cannot run the requested action",
    7: "the activation bit must be set (SET ACT 1) before moving",
    8: "the gripper is over its maximum operating temperature: let it cool down",
    9: "no communication with the gripper for at least one second",
    10: "supply voltage below the minimum: check the 24 V supply",
    11: "automatic release is running",
    12: "internal fault: contact the manufacturer's support",
    13: "activation failed: check that nothing blocks the fingers, then reactivate",
    14: "over-current: the fingers were overloaded",
    15: "automatic release finished: reactivate before the next move",
}


class RobotiqError(RuntimeError):
    """Any failure of the Robotiq gripper or of the socket link to it."""


class GripperUnreachableError(RobotiqError, ConnectionError):
    """The robot controller's address could not be reached (no route, unknown host, or the connection attempt
    timed out)."""


class GripperConnectionRefusedError(RobotiqError, ConnectionError):
    """The controller answered but nothing listens on the gripper port: wrong port, or the Robotiq URCap is not
    installed or not running."""


class GripperTimeoutError(RobotiqError, TimeoutError):
    """A reply, an activation or a motion did not arrive or end within its time limit."""


class GripperProtocolError(RobotiqError):
    """The gripper server answered something the URCap protocol does not allow for the request sent."""


class GripperNotConnectedError(RobotiqError):
    """A command was issued with no open connection (never connected, closed, or dropped after an error)."""


class GripperNotActivatedError(RobotiqError):
    """A motion was requested before `activate()` succeeded."""


class GripperFaultError(RobotiqError):
    """The gripper reports a fault (FLT register non-zero).

    code: the FLT value; meaning: what it means and what to do.
    """

    def __init__(self, code: int) -> None:
        self.code = code
        self.meaning = FAULT_MEANINGS.get(code, "unknown fault code")
        super().__init__(f"gripper fault FLT {code}: {self.meaning}")
