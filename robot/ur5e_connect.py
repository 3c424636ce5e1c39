"""Checks before any ur_rtde object is built: the address, the RTDE and dashboard ports, remote control, a program
already running, and the RTDE input registers. Every check has its own socket timeout, because the ur_rtde
constructors wait forever on a controller that accepts a connection and never answers.

Units: seconds.
"""

from __future__ import annotations

import logging
import socket
import struct

from robot.ur5e_config import validate_host
from robot.ur5e_errors import (
    ProgramRunningError,
    RegistersInUseError,
    RemoteControlOffError,
    RobotUnreachableError,
    UR5eError,
)

RTDE_PORT = 30004
DASHBOARD_PORT = 29999
#: An input register the control script of ur_rtde writes; IN_USE means another client owns it.
_PROBE_REGISTER = "input_int_register_0"
_RTDE_VERSION = 2
log = logging.getLogger(__name__)


def _open(host: str, port: int, timeout_s: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        raise RobotUnreachableError(
            f"{host}:{port} refused the connection: the controller is not running its server there "
            "(wrong address, or the controller is still booting)",
            port,
            "refused",
        ) from None
    except TimeoutError:
        raise RobotUnreachableError(
            f"{host}:{port} did not accept a connection within {timeout_s} s: check the address, cable and "
            "that the controller is on",
            port,
            "timeout",
        ) from None
    except OSError as exc:
        raise RobotUnreachableError(f"{host}:{port} is unreachable: {exc}", port, "unreachable") from None


def _silent(host: str, port: int, timeout_s: float, what: str) -> RobotUnreachableError:
    return RobotUnreachableError(
        f"{host}:{port} accepted the connection but sent no {what} within {timeout_s} s (a silent server: "
        "not a UR controller, or one that is hung)",
        port,
        "silent",
    )


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _rtde_request(sock: socket.socket, kind: bytes, payload: bytes) -> bytes:
    """Send one RTDE message and return the payload of the reply of the same type (skipping others)."""
    sock.sendall(struct.pack(">HB", len(payload) + 3, kind[0]) + payload)
    while True:
        size, got = struct.unpack(">HB", _recv_exact(sock, 3))
        body = _recv_exact(sock, size - 3)
        if got == kind[0]:
            return body


def probe_rtde(host: str, timeout_s: float) -> None:
    """Negotiate the RTDE protocol version on port 30004 and ask for ur_rtde's input register, within
    `timeout_s` seconds per step. Raises RobotUnreachableError or RegistersInUseError."""
    with _open(host, RTDE_PORT, timeout_s) as sock:
        sock.settimeout(timeout_s)
        try:
            accepted = _rtde_request(sock, b"V", struct.pack(">H", _RTDE_VERSION))
            if accepted[:1] != b"\x01":
                raise UR5eError(f"{host}: the controller refused RTDE protocol version {_RTDE_VERSION}")
            answer = _rtde_request(sock, b"I", _PROBE_REGISTER.encode())[1:].decode(errors="replace")
        except (TimeoutError, ConnectionError, struct.error):
            raise _silent(host, RTDE_PORT, timeout_s, "RTDE reply") from None
    if "IN_USE" in answer:
        raise RegistersInUseError(
            f"{host}: the RTDE input registers are in use by another RTDE client (another driver or a URCap such "
            "as the ROS driver's External Control); stop it, or configure ur_rtde's upper register range"
        )


def _ask(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionError("dashboard closed the connection")
        data += chunk
    return data.decode(errors="replace").strip()


def probe_dashboard(host: str, timeout_s: float) -> None:
    """Read the dashboard greeting on port 29999, then require remote control and no running program, within
    `timeout_s` seconds per step. Raises RobotUnreachableError, RemoteControlOffError or ProgramRunningError."""
    with _open(host, DASHBOARD_PORT, timeout_s) as sock:
        sock.settimeout(timeout_s)
        try:
            greeting = sock.recv(1024)
            if not greeting:
                raise ConnectionError("closed")
            remote = _ask(sock, "is in remote control").lower()
            running = _ask(sock, "running").lower()
        except (TimeoutError, ConnectionError):
            raise _silent(host, DASHBOARD_PORT, timeout_s, "dashboard reply") from None
    if remote == "false":
        raise RemoteControlOffError(
            f"{host}: the robot is in local control; switch the teach pendant to Remote Control "
            "(Settings > System > Remote Control, then the mode in the header)"
        )
    if remote != "true":
        log.warning("%s: the dashboard did not answer 'is in remote control' (%r); older PolyScope?", host, remote)
    if running.endswith("true"):
        raise ProgramRunningError(
            f"{host}: a program is already running on the controller; stop it on the pendant or with the "
            "dashboard 'stop' command before connecting"
        )


def probe_controller(host: str, timeout_s: float) -> None:
    """All checks before building ur_rtde objects: address, dashboard, RTDE. Raises a `UR5eError` subclass."""
    host = validate_host(host)
    probe_dashboard(host, timeout_s)
    probe_rtde(host, timeout_s)


def classify_constructor_error(host: str, exc: Exception) -> UR5eError:
    """A typed error for an exception a ur_rtde constructor raised."""
    text = str(exc)
    low = text.lower()
    if "in use" in low or "already in use" in low:
        return RegistersInUseError(f"{host}: RTDE registers in use by another client: {text}")
    if "remote" in low:
        return RemoteControlOffError(f"{host}: remote control is off: {text}")
    if "timeout" in low or "connect" in low:
        return RobotUnreachableError(f"{host}: ur_rtde could not connect: {text}", RTDE_PORT, "unreachable")
    return UR5eError(f"{host}: ur_rtde failed: {type(exc).__name__}: {text}")
