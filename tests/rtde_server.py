"""A stand-in UR controller for tests: the RTDE protocol (port 30004) and the dashboard (port 29999).

ur_rtde takes no port argument, so each server binds the fixed ports on its own loopback address (127.x.y.z).
It runs in another process: the ur_rtde constructors hold the GIL while they wait for replies.
RTDE messages served: V (protocol version), v (controller version), O (output recipe), I (input recipe, which
can answer IN_USE), S (start), P (pause), then U data packets of shared values the test can change.
Modes: "normal"; "silent" (accept connections, never answer); "refuse" (no listener at all).
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RTDE_PORT = 30004
DASHBOARD_PORT = 29999
#: RTDE output variables this server knows, with their RTDE types.
TYPES: dict[str, str] = {
    "timestamp": "DOUBLE",
    "actual_q": "VECTOR6D",
    "actual_qd": "VECTOR6D",
    "target_q": "VECTOR6D",
    "actual_TCP_pose": "VECTOR6D",
    "safety_status_bits": "UINT32",
    "safety_mode": "INT32",
    "robot_mode": "INT32",
    "runtime_state": "UINT32",
    "speed_scaling": "DOUBLE",
}
_PACK = {"DOUBLE": ">d", "VECTOR6D": ">6d", "UINT32": ">I", "INT32": ">i"}


@dataclass
class ServerOptions:
    """What the stand-in controller answers: remote control on/off, a program running, RTDE input registers
    already owned by another client, and the controller's major version."""

    mode: str = "normal"
    remote_control: bool = True
    program_running: bool = False
    registers_in_use: bool = False
    major: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _send(conn: socket.socket, kind: bytes, payload: bytes) -> None:
    conn.sendall(struct.pack(">HB", len(payload) + 3, kind[0]) + payload)


def _rtde_client(conn: socket.socket, q: Any, bits: Any, opts: ServerOptions) -> None:
    names: list[str] = []
    streaming = threading.Event()
    lock = threading.Lock()

    def stream() -> None:
        while True:
            if streaming.is_set():
                values: dict[str, Any] = {
                    "timestamp": time.monotonic(),
                    "actual_q": list(q[:]),
                    "actual_qd": [0.0] * 6,
                    "target_q": list(q[:]),
                    "actual_TCP_pose": [0.4, 0.1, 0.3, 0.0, 3.14, 0.0],
                    "safety_status_bits": int(bits[0]),
                    "safety_mode": int(bits[1]),
                    "robot_mode": 7,
                    "runtime_state": 1,
                    "speed_scaling": 1.0,
                }
                payload = b"\x01" + b"".join(struct.pack(_PACK[TYPES[n]], *_flat(values[n])) for n in names)
                with lock:
                    _send(conn, b"U", payload)
            time.sleep(0.004)

    streamer: threading.Thread | None = None
    while True:
        size, kind = struct.unpack(">HB", _recv_exact(conn, 3))
        body = _recv_exact(conn, size - 3)
        reply: tuple[bytes, bytes] | None = None
        if kind == ord("V"):
            reply = (b"V", b"\x01")
        elif kind == ord("v"):
            reply = (b"v", struct.pack(">IIII", opts.major, 11, 0, 0))
        elif kind == ord("O"):
            # protocol 2: a double frequency, then comma-separated names; the client ends with a comma
            names = [n for n in body[8:].decode().split(",") if n]
            reply = (b"O", b"\x01" + ",".join(TYPES.get(n, "NOT_FOUND") for n in names).encode())
        elif kind == ord("I"):
            asked = [n for n in body.decode().split(",") if n]
            answer = ["IN_USE" if opts.registers_in_use else "INT32" for _ in asked]
            reply = (b"I", b"\x02" + ",".join(answer).encode())
        elif kind == ord("S"):
            streaming.set()
            if streamer is None:
                streamer = threading.Thread(target=stream, daemon=True)
                streamer.start()
            reply = (b"S", b"\x01")
        elif kind == ord("P"):
            streaming.clear()
            reply = (b"P", b"\x01")
        if reply is not None:
            with lock:
                _send(conn, *reply)


def _flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _dashboard_client(conn: socket.socket, opts: ServerOptions) -> None:
    conn.sendall(b"Connected: Universal Robots Dashboard Server\n")
    buf = b""
    while True:
        chunk = conn.recv(1024)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd == "is in remote control":
                answer = "true" if opts.remote_control else "false"
            elif cmd == "running":
                answer = f"Program running: {'true' if opts.program_running else 'false'}"
            elif cmd == "safetystatus":
                answer = "Safetystatus: NORMAL"
            else:
                answer = f"could not understand: '{cmd}'"
            conn.sendall(answer.encode() + b"\n")


def _listen(host: str, port: int, handler: Callable[[socket.socket], None], silent: bool) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if silent:
                held.append(conn)  # keep it open and never answer
                continue
            threading.Thread(target=_guarded, args=(handler, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def _guarded(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        handler(conn)
    except (ConnectionError, OSError, struct.error):
        pass
    finally:
        conn.close()


def serve(host: str, q: Any, bits: Any, opts: ServerOptions, ready: Any) -> None:
    """Process entry: listen on `host` until killed; `q` (6 doubles) and `bits` (safety_status_bits, safety_mode)
    are shared arrays the test may change while the server runs."""
    silent = opts.mode == "silent"
    _listen(host, RTDE_PORT, lambda c: _rtde_client(c, q, bits, opts), silent)
    _listen(host, DASHBOARD_PORT, lambda c: _dashboard_client(c, opts), silent)
    ready.set()
    while True:
        time.sleep(1.0)


class RtdeServer:
    """Runs `serve` in a spawned process on `host` (a loopback address); use as a context manager.

    q: the joint angles served, radians; bits: (safety_status_bits, safety_mode) served."""

    def __init__(self, host: str, options: ServerOptions | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.host = host
        self.options = options or ServerOptions()
        self.q = ctx.Array("d", [0.1, -1.5, 1.4, -1.2, -1.57, 0.2])
        self.bits = ctx.Array("i", [1, 1])
        self._ready = ctx.Event()
        self._proc = ctx.Process(target=serve, args=(host, self.q, self.bits, self.options, self._ready), daemon=True)

    def __enter__(self) -> RtdeServer:
        if self.options.mode != "refuse":
            self._proc.start()
            if not self._ready.wait(20.0):
                self.close()
                raise RuntimeError(f"the RTDE test server on {self.host} did not start within 20 s")
        return self

    def close(self) -> None:
        """Stop the server process (by its own handle)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5.0)

    def __exit__(self, *exc: object) -> None:
        self.close()
