"""A stand-in for the Robotiq URCap gripper server, for tests: it speaks the URCap line protocol over a real TCP
socket (one thread per client) and models a 2F-85 over time (activation delay, finger travel at the commanded
speed, contact with an object). This is a test double, not a real gripper: timings and register semantics follow
the protocol as the driver relies on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

#: Finger speed range of the modelled gripper, millimetres per second (SPE 0 .. 255).
SPEED_MM_S: tuple[float, float] = (20.0, 150.0)


@dataclass
class GripperModel:
    """State of the modelled gripper.

    pos_open / pos_closed: POS at the mechanical ends (an empty grip stops at pos_closed); stroke_mm: opening at
    pos_open; activation_s: seconds activation takes; object_pos: POS at which a closing motion meets an object
    (None = nothing between the fingers); obstacle_pos: POS at which an opening motion meets an obstacle;
    activation_fault: FLT raised instead of finishing activation (0 = none); time_scale: model seconds per real
    second.
    """

    pos_open: int = 0
    pos_closed: int = 228
    stroke_mm: float = 85.0
    activation_s: float = 0.2
    object_pos: int | None = None
    obstacle_pos: int | None = None
    activation_fault: int = 0
    time_scale: float = 1.0
    act: int = 0
    gto: int = 0
    pre: int = 0
    spe: int = 0
    force: int = 0
    sta: int = 0
    flt: int = 0
    obj: int = 0
    pos: float = 0.0
    activation_started: float | None = None
    clock: float = field(default_factory=time.monotonic)

    def width_mm(self) -> float:
        """True opening between the pads, millimetres."""
        frac = (self.pos_closed - self.pos) / (self.pos_closed - self.pos_open)
        return self.stroke_mm * min(max(frac, 0.0), 1.0)

    def counts_per_s(self) -> float:
        """Finger speed in POS counts per model second at the current SPE."""
        mm_s = SPEED_MM_S[0] + (SPEED_MM_S[1] - SPEED_MM_S[0]) * self.spe / 255
        return mm_s * (self.pos_closed - self.pos_open) / self.stroke_mm

    def advance(self, now: float) -> None:
        """Move the model forward to real time `now` (time.monotonic seconds)."""
        dt = (now - self.clock) * self.time_scale
        self.clock = now
        if self.sta == 1 and self.activation_started is not None:
            if (now - self.activation_started) * self.time_scale >= self.activation_s:
                if self.activation_fault:
                    self.flt = self.activation_fault
                else:
                    self.sta, self.pos, self.activation_started = 3, float(self.pos_open), None
            return
        if self.sta != 3 or self.gto != 1 or self.obj != 0 or dt <= 0:
            return
        target = float(min(max(self.pre, self.pos_open), self.pos_closed))
        step = self.counts_per_s() * dt
        if target > self.pos:
            new = min(self.pos + step, target)
            if self.object_pos is not None and self.pos <= self.object_pos < new:
                self.pos, self.obj = float(self.object_pos), 2
                return
        else:
            new = max(self.pos - step, target)
            if self.obstacle_pos is not None and new < self.obstacle_pos <= self.pos:
                self.pos, self.obj = float(self.obstacle_pos), 1
                return
        self.pos = new
        if self.pos == target:
            self.obj = 3

    def set(self, var: str, value: int, now: float) -> None:
        """Apply one register write."""
        if var == "ACT":
            self.act = value
            if value == 0:
                self.sta = self.gto = self.flt = self.obj = 0
                self.activation_started = None
            elif self.sta == 0:
                self.sta, self.activation_started = 1, now
        elif var == "GTO":
            if value == 1 and self.sta != 3:
                self.flt = 7  # motion asked of a gripper that is not activated
                return
            self.gto = value
            if value == 1:
                self.obj = 0
        elif var == "POS":
            self.pre = value
            self.obj = 0 if self.gto == 1 else self.obj
        elif var == "SPE":
            self.spe = value
        elif var == "FOR":
            self.force = value
        else:
            raise KeyError(var)

    def get(self, var: str) -> int:
        """Read one register."""
        values = {
            "ACT": self.act,
            "GTO": self.gto,
            "POS": round(self.pos),
            "PRE": self.pre,
            "SPE": self.spe,
            "FOR": self.force,
            "STA": self.sta,
            "FLT": self.flt,
            "OBJ": self.obj,
        }
        return values[var]


class RobotiqTestServer:
    """Serves a `GripperModel` on 127.0.0.1 (an ephemeral port unless `port` is given).

    Misbehaviours for error-path tests: `silent` (accept requests, never answer), `reply_override` (answer
    every request with this line), `close_on_request` (drop the connection on the first request).
    """

    def __init__(self, model: GripperModel | None = None, port: int = 0) -> None:
        self.model = model or GripperModel()
        self.lock = threading.Lock()
        self.silent = False
        self.reply_override: str | None = None
        self.close_on_request = False
        self.log: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)  # the accept loop wakes up to notice close()
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
        self._running = True
        accept = threading.Thread(target=self._accept_loop, name="robotiq-test-server", daemon=True)
        accept.start()
        self._threads.append(accept)

    def __enter__(self) -> RobotiqTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and close every connection."""
        self._running = False
        self._listener.close()
        for client in list(self._clients):
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        for t in self._threads:
            t.join(timeout=2.0)

    def width_mm(self) -> float:
        """The modelled true opening now, millimetres."""
        with self.lock:
            self.model.advance(time.monotonic())
            return self.model.width_mm()

    def _accept_loop(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._clients.append(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client: socket.socket) -> None:
        buffer = b""
        with client:
            while self._running:
                try:
                    chunk = client.recv(1024)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    raw, _, buffer = buffer.partition(b"\n")
                    line = raw.decode("ascii", errors="replace").strip()
                    self.log.append(line)
                    if self.close_on_request:
                        return
                    reply = self._handle(line)
                    if self.silent:
                        continue
                    try:
                        client.sendall((self.reply_override or reply).encode("ascii") + b"\n")
                    except OSError:
                        return

    def _handle(self, line: str) -> str:
        words = line.split()
        now = time.monotonic()
        with self.lock:
            self.model.advance(now)
            try:
                if len(words) == 2 and words[0] == "GET":
                    return f"{words[1]} {self.model.get(words[1])}"
                if len(words) >= 3 and words[0] == "SET" and len(words) % 2 == 1:
                    pairs = [(words[i], int(words[i + 1])) for i in range(1, len(words), 2)]
                    for var, value in pairs:
                        if not 0 <= value <= 255:
                            return "?"
                        self.model.set(var, value, now)
                    return "ack"
            except (KeyError, ValueError):
                return "?"
        return "?"
