"""Typed errors of the UR5e driver: each names the cause and what to do about it."""

from __future__ import annotations


class UR5eError(RuntimeError):
    """Base of every error the UR5e driver raises."""


class InvalidAddressError(UR5eError, ValueError):
    """The robot address is not an IPv4/IPv6 address."""


class RobotUnreachableError(UR5eError):
    """Nothing answers on the robot's RTDE (30004) or dashboard (29999) port: wrong address, cable, or the
    controller is off. `port` names the port that failed; `cause` is "refused", "timeout" or "silent"."""

    def __init__(self, message: str, port: int, cause: str) -> None:
        super().__init__(message)
        self.port = port
        self.cause = cause


class RemoteControlOffError(UR5eError):
    """The teach pendant is in local mode; RTDE control needs remote control."""


class ProgramRunningError(UR5eError):
    """A program is already running on the controller; stop it on the pendant (or dashboard) first."""


class RegistersInUseError(UR5eError):
    """Another RTDE client owns the input registers ur_rtde needs (another driver, or a URCap)."""


class CommandFailedError(UR5eError):
    """A ur_rtde call returned False (the controller did not accept it). `call` names the call."""

    def __init__(self, call: str, detail: str = "") -> None:
        super().__init__(f"ur_rtde {call} returned False" + (f": {detail}" if detail else ""))
        self.call = call


class ProtectiveStopError(UR5eError):
    """A motion command arrived while the arm is protective- or emergency-stopped; nothing was sent."""


class NotConnectedError(UR5eError):
    """The driver is not connected (never connected, closed, or the connection was lost beyond reconnecting)."""
