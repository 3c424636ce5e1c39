"""The driver's whole use of ur_rtde, as typed protocols: exactly the methods the UR5e driver calls.

Production builds the real `rtde_control` / `rtde_receive` / `rtde_io` classes (`UrRtdeFactory`); tests pass a
recording mock of these protocols (tests/fake_rtde.py). Units: radians, seconds, rad/s, rad/s².
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

#: RTDE output variables the receive interface subscribes to (and nothing else).
RECEIVE_VARIABLES: tuple[str, ...] = (
    "timestamp",
    "actual_q",
    "safety_status_bits",
    "safety_mode",
    "robot_mode",
    "runtime_state",
)


class RtdeControl(Protocol):
    """The `rtde_control.RTDEControlInterface` methods the driver uses."""

    def servoJ(  # noqa: N802 (ur_rtde's name)
        self, q: list[float], speed: float, acceleration: float, time: float, lookahead_time: float, gain: float
    ) -> bool: ...
    def servoStop(self, a: float = 10.0) -> bool: ...  # noqa: N802
    def stopScript(self) -> None: ...  # noqa: N802
    def setWatchdog(self, min_frequency: float = 10.0) -> bool: ...  # noqa: N802
    def kickWatchdog(self) -> bool: ...  # noqa: N802
    def initPeriod(self) -> Any: ...  # noqa: N802
    def waitPeriod(self, t_cycle_start: Any) -> None: ...  # noqa: N802
    def moveJ(  # noqa: N802
        self, q: list[float], speed: float = 1.05, acceleration: float = 1.4, asynchronous: bool = False
    ) -> bool: ...
    def isProgramRunning(self) -> bool: ...  # noqa: N802
    def teachMode(self) -> bool: ...  # noqa: N802
    def endTeachMode(self) -> bool: ...  # noqa: N802
    def isConnected(self) -> bool: ...  # noqa: N802
    def reconnect(self) -> bool: ...
    def disconnect(self) -> None: ...


class RtdeReceive(Protocol):
    """The `rtde_receive.RTDEReceiveInterface` methods the driver uses."""

    def getActualQ(self) -> list[float]: ...  # noqa: N802
    def isProtectiveStopped(self) -> bool: ...  # noqa: N802
    def isEmergencyStopped(self) -> bool: ...  # noqa: N802
    def getSafetyMode(self) -> int: ...  # noqa: N802
    def isConnected(self) -> bool: ...  # noqa: N802
    def reconnect(self) -> bool: ...
    def disconnect(self) -> None: ...


class RtdeIO(Protocol):
    """The `rtde_io.RTDEIOInterface` methods the driver uses."""

    def setSpeedSlider(self, speed: float) -> bool: ...  # noqa: N802
    def disconnect(self) -> None: ...


class RtdeFactory(Protocol):
    """Builds the three interfaces for a controller at `host` (an IP address)."""

    def control(self, host: str, frequency_hz: float) -> RtdeControl: ...
    def receive(self, host: str, frequency_hz: float, variables: Sequence[str]) -> RtdeReceive: ...
    def io(self, host: str) -> RtdeIO: ...


class UrRtdeFactory:
    """The real ur_rtde classes. Their constructors block without a timeout of their own: call them only after
    `robot.ur5e_connect.probe_controller` saw the controller answer."""

    def control(self, host: str, frequency_hz: float) -> RtdeControl:
        """`RTDEControlInterface` at `frequency_hz` hertz (uploads the control script)."""
        import rtde_control

        iface: RtdeControl = rtde_control.RTDEControlInterface(host, frequency_hz)
        return iface

    def receive(self, host: str, frequency_hz: float, variables: Sequence[str]) -> RtdeReceive:
        """`RTDEReceiveInterface` at `frequency_hz` hertz subscribed to `variables`."""
        import rtde_receive

        iface: RtdeReceive = rtde_receive.RTDEReceiveInterface(host, frequency_hz, list(variables))
        return iface

    def io(self, host: str) -> RtdeIO:
        """`RTDEIOInterface` (speed slider)."""
        import rtde_io

        iface: RtdeIO = rtde_io.RTDEIOInterface(host)
        return iface
