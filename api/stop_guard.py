"""The stop guard: `POST /stop` served by a small process of its own, which halts the arm without waiting for the
API server's threads.

Under a flood of reads, every thread of the API server waits its turn for the interpreter lock, and a stop read
by any of them (the API's event loop, or a listener thread of the server) could wait well over 100 ms before it
acted. The guard has its own interpreter: it reads the stop at once, raises it in shared memory
(`robot.stop_signal.StopSignal`), which the simulated cell reads before every control step, and only then tells
the server, which ends the control loop, cancels the queue and acknowledges the stop; until it has, the arm
holds. The guard answers with the API's `POST /stop` answer once the server has confirmed.

A cell that does not read the signal (the real UR5e, whose driver is commanded from the server) is halted by the
server's stop as from the API; the answer's `halted_monotonic_s` then is the server's.

Guard and server speak JSON lines over the guard's standard input and output: the guard's first line gives the
port it listens on; then one line per stop each way. The guard ends when its standard input closes (the server
ended, also by SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from api.error_body import error_body
from api.stop_port import StopPort, check_stop_port
from robot.stop_signal import StopSignal

if TYPE_CHECKING:
    from pipeline.jobs.runner import StopReport

#: Seconds a stop waits for the server's confirmation before answering 503 (the arm holds meanwhile).
CONFIRM_TIMEOUT_S = 10.0
#: Seconds the server waits for the guard to listen.
START_TIMEOUT_S = 20.0
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- guard process
class _ServerLink:
    """The guard's half of the line protocol: tell the server of a stop, wait for its confirmation."""

    def __init__(self, out: IO[str], inp: IO[str]) -> None:
        self._out, self._inp = out, inp
        self._write = threading.Lock()
        self._done = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.closed = False

    def notify(self, number: int, seen: float, raised: float) -> None:
        with self._write:
            self._out.write(json.dumps({"stop": number, "seen": seen, "raised": raised}) + "\n")
            self._out.flush()

    def wait(self, number: int, timeout_s: float) -> dict[str, Any] | None:
        with self._done:
            self._done.wait_for(lambda: number in self._replies or self.closed, timeout_s)
            return self._replies.pop(number, None)

    def read_replies(self) -> None:
        """Take the server's confirmations until its end of the pipe closes."""
        for line in self._inp:
            try:
                reply = json.loads(line)
                number = int(reply["stop"])
            except (ValueError, KeyError, TypeError):
                continue
            with self._done:
                self._replies[number] = reply
                self._done.notify_all()
        with self._done:
            self.closed = True
            self._done.notify_all()


def _carry_out(signal: StopSignal, link: _ServerLink) -> Callable[[float], tuple[int, dict[str, Any]]]:
    def carry_out(seen: float) -> tuple[int, dict[str, Any]]:
        number, raised = signal.raise_stop()  # the simulated arm holds from its next control step
        try:
            link.notify(number, seen, raised)
        except (OSError, ValueError):
            return 503, error_body("server_gone", "the stop is raised and the arm holds, but the API server is gone")
        reply = link.wait(number, CONFIRM_TIMEOUT_S)
        if reply is None or "error" in reply:
            why = "did not confirm it" if reply is None else f"answered: {reply['error']}"
            msg = f"the stop is raised and the simulated arm holds, but the API server {why} within "
            msg += f"{CONFIRM_TIMEOUT_S:.0f} s (its jobs may still be queued): POST /stop on the API as well"
            return 503, error_body("not_confirmed", msg)
        halted = raised if reply.get("watched") else float(reply.get("halted_monotonic_s", raised))
        return 200, {
            "halted": True,
            "halt_s": round(max(0.0, halted - seen), 6),
            "job": reply.get("job"),
            "cancelled": int(reply.get("cancelled", 0)),
            "halted_monotonic_s": halted,
            "received_monotonic_s": seen,
        }

    return carry_out


def guard_main(argv: list[str] | None = None) -> int:
    """The guard process: listen, announce the port, serve stops until standard input closes."""
    parser = argparse.ArgumentParser(prog="python -m api.stop_guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--signal", required=True, help="the stop signal file the server created")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one, announced on stdout)")
    parser.add_argument("--origin", action="append", default=[], help="a page origin allowed to read the answer")
    args = parser.parse_args(argv)
    signal = StopSignal.attach(args.signal)
    link = _ServerLink(sys.stdout, sys.stdin)
    port = StopPort(_carry_out(signal, link), args.host, args.port, tuple(args.origin))
    port.start()
    with link._write:
        sys.stdout.write(json.dumps({"port": port.port}) + "\n")
        sys.stdout.flush()
    try:
        link.read_replies()  # returns when the server's end closes
    finally:
        port.close()
        signal.close()
        # the last user: a server killed outright could not remove it (its mapping stays valid if it still runs)
        signal.path.unlink(missing_ok=True)
    return 0


# ---------------------------------------------------------------------------------------------- server side
class StopGuard:
    """The server's half: starts the guard process, carries out the stops it raises (`stop`, the runner's) and
    acknowledges them on `signal`; `watched`: the cell reads `signal` at every control step (the simulated cell),
    so a stop halts the arm when the guard raises it.

    host, port: where the guard listens (port 0: a free one; `port` gives it once started); origins: page origins
    allowed to read its answers besides pages of the same machine name."""

    def __init__(
        self,
        stop: Callable[[], StopReport],
        signal: StopSignal,
        watched: bool,
        host: str = "127.0.0.1",
        port: int = 0,
        origins: tuple[str, ...] = (),
    ) -> None:
        check_stop_port(port)  # here too: a bad port is refused before a process is started
        self._stop, self.signal, self.watched = stop, signal, watched
        self._args = ["--signal", str(signal.path), "--host", host, "--port", str(port)]
        for origin in origins:
            self._args += ["--origin", origin]
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.carried_out = 0  #: stops raised by the guard and carried out here

    def start(self) -> None:
        """Start the guard and wait until it listens (RuntimeError saying why it did not)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.stop_guard", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self._proc = proc
        if proc.stdout is None or proc.stdin is None:
            raise RuntimeError("the stop guard has no pipes")
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        try:
            self.port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            self.close()
            raise RuntimeError(
                f"the stop guard did not start (exit status {proc.poll()}; it said {line.strip()!r}): is the "
                f"stop port ({self._args[5]}) free?"
            ) from None
        self._thread = threading.Thread(target=self._serve, args=(proc,), name="stop-guard-link", daemon=True)
        self._thread.start()

    def _serve(self, proc: subprocess.Popen[str]) -> None:
        if proc.stdout is None or proc.stdin is None:
            return
        for line in proc.stdout:
            try:
                number = int(json.loads(line)["stop"])
            except (ValueError, KeyError, TypeError):
                continue
            try:
                report = self._stop()
                reply: dict[str, Any] = {
                    "stop": number,
                    "job": report.job,
                    "cancelled": report.cancelled,
                    "halted_monotonic_s": report.halted_monotonic_s,
                    "watched": self.watched,
                }
                self.signal.acknowledge(number)  # carried out: the arm may move again for the next job
                self.carried_out += 1
            except Exception as exc:  # the guard must hear back; unacknowledged, the arm keeps holding
                reply = {"stop": number, "error": f"{type(exc).__name__}: {exc}"}
            try:
                proc.stdin.write(json.dumps(reply) + "\n")
                proc.stdin.flush()
            except (OSError, ValueError):
                return

    def close(self) -> None:
        """End the guard (its standard input closes, then it is killed if it lingers). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(5.0)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5.0)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


if __name__ == "__main__":
    sys.exit(guard_main())
