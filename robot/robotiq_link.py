"""The TCP line protocol of the Robotiq URCap gripper server (port 63352 on the UR controller).

Requests and replies are ASCII lines: `SET <VAR> <n> [<VAR> <n> ...]` is answered `ack`, `GET <VAR>` is answered
`<VAR> <n>`. Every socket operation runs under a time limit; after a reply timeout or a reply that breaks the
protocol the connection is closed, because a late reply would otherwise be read as the answer to the next request.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import threading
import time

from robot.robotiq_errors import (
    GripperConnectionRefusedError,
    GripperNotConnectedError,
    GripperProtocolError,
    GripperTimeoutError,
    GripperUnreachableError,
)

#: TCP port of the Robotiq URCap's gripper server.
URCAP_PORT = 63352
#: Longest reply line accepted, bytes (real replies are under 16).
MAX_LINE = 256
_VAR = re.compile(r"^[A-Z]{3}$")
_UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}


class URCapLink:
    """One TCP connection to a URCap gripper server; thread-safe (one request at a time).

    host: controller address; port: server port; timeout_s: seconds allowed for each reply (and each send);
    connect_timeout_s: seconds allowed to open the connection.
    """

    def __init__(
        self, host: str, port: int = URCAP_PORT, *, timeout_s: float = 1.0, connect_timeout_s: float = 2.0
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {port}")
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not 0 < value <= 60:
                raise ValueError(f"{name} must be within (0, 60] seconds, got {value}")
        self.host, self.port = host, port
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._sock is not None

    def connect(self) -> None:
        """Open the connection (closing any previous one); raises GripperUnreachableError or
        GripperConnectionRefusedError with what to check."""
        self.close()
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except ConnectionRefusedError as exc:
            raise GripperConnectionRefusedError(
                f"{where} refused the connection: nothing listens on port {self.port}; check the port (the Robotiq "
                "URCap serves 63352) and that the Robotiq Grippers URCap is installed and running on the controller"
            ) from exc
        except socket.gaierror as exc:
            raise GripperUnreachableError(f"cannot resolve host {self.host!r}: {exc}") from exc
        except TimeoutError as exc:
            raise GripperUnreachableError(
                f"no answer from {where} within {self.connect_timeout_s} s: check the controller's address, "
                "cabling and that it is powered on"
            ) from exc
        except OSError as exc:
            if exc.errno in _UNREACHABLE_ERRNOS:
                raise GripperUnreachableError(f"{where} is unreachable ({exc.strerror}): check the address") from exc
            raise GripperUnreachableError(f"cannot connect to {where}: {exc}") from exc
        sock.settimeout(self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buffer = sock, b""

    def close(self) -> None:
        """Close the connection; idempotent."""
        sock, self._sock, self._buffer = self._sock, None, b""
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def set(self, values: list[tuple[str, int]]) -> None:
        """Write registers in one request, in the given order (e.g. [("POS", 120), ("GTO", 1)])."""
        if not values:
            raise ValueError("SET needs at least one (variable, value) pair")
        parts = []
        for var, value in values:
            _check_var(var)
            if not 0 <= int(value) <= 255:
                raise ValueError(f"{var} must be within 0..255, got {value}")
            parts.append(f"{var} {int(value)}")
        request = "SET " + " ".join(parts)
        reply = self.request(request)
        if reply != "ack":
            self.close()
            raise GripperProtocolError(f"expected 'ack' to {request!r}, got {reply!r}")

    def get(self, var: str) -> int:
        """Read one register (e.g. "POS")."""
        _check_var(var)
        reply = self.request(f"GET {var}")
        fields = reply.split()
        if len(fields) != 2 or fields[0] != var or not fields[1].isdigit():
            self.close()
            raise GripperProtocolError(f"expected '{var} <integer>' to 'GET {var}', got {reply!r}")
        return int(fields[1])

    def request(self, line: str) -> str:
        """Send one request line and return the reply line (without its line ending)."""
        with self._lock:
            sock = self._sock
            if sock is None:
                raise GripperNotConnectedError(
                    f"not connected to the gripper at {self.host}:{self.port}: call connect() (a timeout or a "
                    "protocol error closes the connection)"
                )
            try:
                sock.sendall(line.encode("ascii") + b"\n")
            except TimeoutError as exc:
                self.close()
                raise GripperTimeoutError(f"sending {line!r} took over {self.timeout_s} s") from exc
            except OSError as exc:
                self.close()
                raise GripperNotConnectedError(f"connection to the gripper lost while sending {line!r}: {exc}") from exc
            return self._read_line(sock, line)

    def _read_line(self, sock: socket.socket, request: str) -> str:
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                self.close()
                raise GripperProtocolError(f"reply to {request!r} exceeds {MAX_LINE} bytes without a line end")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise GripperTimeoutError(f"no reply to {request!r} within {self.timeout_s} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(1024)
            except TimeoutError as exc:
                self.close()
                raise GripperTimeoutError(f"no reply to {request!r} within {self.timeout_s} s") from exc
            except OSError as exc:
                self.close()
                raise GripperNotConnectedError(f"connection lost waiting for the reply to {request!r}: {exc}") from exc
            if not chunk:
                self.close()
                raise GripperNotConnectedError(f"the gripper server closed the connection before answering {request!r}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            self.close()
            raise GripperProtocolError(f"reply to {request!r} is not ASCII: {raw!r}") from exc


def _check_var(var: str) -> None:
    if not _VAR.match(var):
        raise ValueError(f"register names are three capital letters (ACT, GTO, POS, ...), got {var!r}")
