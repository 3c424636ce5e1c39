"""Process fault scenarios of the API server: SIGTERM and SIGKILL of `sam2grasp serve` (the simulated cell, the
scripted expert, the project's compact grounder) while a pick moves the arm, then a restart on the same state
directory. Defined end state: "recovered" — the server stopped the arm (SIGTERM: its exit path halts the arm and
journals the stop; SIGKILL: the process, and with it the simulated arm, is gone: a real UR5e is halted by the RTDE
watchdog the driver sets at connect), the restarted server reports the job as failed with reason "interrupted"
under its id, command and creation time, and a new pick succeeds.

`ServerProcess` runs the real server as a child process over HTTP; tests/test_server_kill.py uses it too.
Units: seconds, milliseconds where a name ends in `_ms`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.faults.core import ScenarioResult
from pipeline.jobs.journal import INTERRUPTED, JOURNAL_NAME, JournalError, read_journal

REPO = Path(__file__).resolve().parents[2]
#: The job states in which the arm moves for the job.
MOTION = frozenset({"tracking", "grasping", "lifting", "placing"})
#: The job states a job never leaves.
FINAL = frozenset({"succeeded", "failed", "stopped"})
#: The scene of the scenarios: one red cube among other objects (the pick command's target).
OBJECTS = "red cube,green can,blue ball"
COMMAND = "pick the red cube"


class ServerError(RuntimeError):
    """The server did not start, or did not answer as expected (the message holds the end of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerSettings:
    """How to start the server: its state directory, port (0: a free one), bearer token (SAM2GRASP_TOKEN), scene
    seed and objects, pace (simulated seconds per wall second; 0 = unpaced), controller and grounding backend."""

    state_dir: Path
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    seed: int = 3
    objects: str = OBJECTS
    pace: float = 1.0
    controller: str = "expert"
    grounding: str = "compact"


class ServerProcess:
    """`python -m pipeline.cli serve --backend sim ...` as a child process, its output in `log_path`.

    Use as a context manager: leaving it kills a server still running (SIGKILL) so no child outlives a test."""

    def __init__(self, settings: ServerSettings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.port = settings.port or free_port()
        self.stop_port = free_port()  # the stop guard's (`serve` would take --port + 1, which may be in use)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    @property
    def pid(self) -> int:
        """The server's process id (ServerError before `start`)."""
        if self.proc is None:
            raise ServerError("the server was not started")
        return self.proc.pid

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and wait until GET /health answers (ServerError, with its log, if it exits first or
        `timeout_s` seconds pass)."""
        s = self.settings
        args = [sys.executable, "-m", "pipeline.cli", "serve", "--backend", "sim", "--port", str(self.port)]
        args += ["--stop-port", str(self.stop_port)]
        args += ["--controller", s.controller, "--grounding", s.grounding, "--state-dir", str(s.state_dir)]
        args += ["--seed", str(s.seed), "--objects", s.objects, "--pace", str(s.pace)]
        env = {
            **os.environ,
            "SAM2GRASP_TOKEN": s.token,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.request("GET", "/health", timeout_s=2.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerError(f"the server did not answer GET /health within {timeout_s} s:\n{self.log_tail()}")

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of one request, with the bearer token."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.settings.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read())

    def pick(self, command: str = COMMAND) -> dict[str, Any]:
        """POST /pick; the job (ServerError unless 202)."""
        status, body = self.request("POST", "/pick", {"command": command})
        if status != 202:
            raise ServerError(f"POST /pick {command!r} answered {status}: {body}")
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id} (ServerError unless 200)."""
        status, body = self.request("GET", f"/jobs/{job_id}")
        if status != 200:
            raise ServerError(f"GET /jobs/{job_id} answered {status}: {body}")
        return body

    def wait_job(self, job_id: str, states: Collection[str], timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll the job until its state is one of `states` (ServerError when it ends elsewhere or time runs out)."""
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if job["state"] in FINAL:
                raise ServerError(f"job {job_id} ended as {job['state']} before reaching {sorted(states)}: {job}")
            time.sleep(0.1)
        raise ServerError(f"job {job_id} did not reach {sorted(states)} within {timeout_s} s; last: {job}")

    def send(self, sig: signal.Signals) -> float:
        """Send `sig` to the server; the epoch second it was sent."""
        sent = time.time()
        os.kill(self.pid, sig)
        return sent

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        """The server's exit status (negative: the signal that ended it); ServerError when it outlives
        `timeout_s` seconds."""
        if self.proc is None:
            raise ServerError("the server was not started")
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise ServerError(f"the server still ran {timeout_s} s after the signal:\n{self.log_tail()}") from None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _json(blob: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(blob or b"{}")
    except ValueError:
        return {"raw": blob[:500].decode(errors="replace")}
    return doc if isinstance(doc, dict) else {"value": doc}


def server_kill_mid_pick(sig: signal.Signals, root: Path) -> ScenarioResult:
    """Start the server, pick the red cube, send `sig` while the arm moves, restart on the same state directory:
    the job must read failed/interrupted with its id, command and creation time, and a new pick must succeed."""
    name = f"server_{sig.name.lower()}_mid_pick"
    settings = ServerSettings(state_dir=root / "state")
    log = root / "server.log"
    try:
        with ServerProcess(settings, log) as first:
            first.start()
            job = first.pick()
            moving = first.wait_job(job["id"], MOTION)
            sent = first.send(sig)
            status = first.wait_exit()
            gone = time.time()
        replay = read_journal(settings.state_dir / JOURNAL_NAME)
        stop = replay.last_stop if sig != signal.SIGKILL else None
        # the restart runs unpaced: the next pick only has to succeed
        restart = ServerSettings(state_dir=settings.state_dir, token=settings.token, pace=0.0)
        with ServerProcess(restart, log) as second:
            second.start()
            after = second.job(job["id"])
            new = second.pick()
            done = second.wait_job(new["id"], FINAL)
            second.send(signal.SIGTERM)
            second.wait_exit()
    except (ServerError, JournalError, OSError) as exc:
        return ScenarioResult(name, "recovered", "error", type(exc).__name__, detail=str(exc)[-600:])
    interrupted = after["state"] == "failed" and after["reason"] == INTERRUPTED
    intact = all(after[k] == job[k] for k in ("id", "command", "created_at")) and bool(after["timings"])
    if sig == signal.SIGKILL:
        safe_ms, halted = (gone - sent) * 1000.0, status == -signal.SIGKILL
        how = "SIGKILL: the process (and the simulated arm in it) ended; measured: kill to process reaped"
    else:
        clean = status == 0  # serve returned after its shutdown
        halted = clean and stop is not None and job["id"] in stop.interrupted and stop.halt_ms is not None
        safe_ms = float("nan") if stop is None else (stop.at - sent) * 1000.0
        how = "SIGTERM: the server's exit path halted the arm; measured: signal sent to arm halted (server clock)"
    recovered = interrupted and done["state"] == "succeeded" and halted
    return ScenarioResult(
        scenario=name,
        expected_end_state="recovered",
        end_state="recovered" if recovered else ("stopped" if halted else "error"),
        reason=after["reason"] or after["state"],
        safe_stop_ms=safe_ms,
        data_intact=intact,
        stop_called=halted,
        detail=f"{how}; the job was {moving['state']} when the signal came; {after['detail']}",
        extra={
            "job": job["id"],
            "state_at_signal": moving["state"],
            "exit_status": status,
            "signal_to_exit_ms": round((gone - sent) * 1000.0, 1),
            "signal_to_halt_ms": None if stop is None else stop.signal_to_halt_ms,
            "halt_ms": None if stop is None else stop.halt_ms,
            "next_pick": done["state"],
            "commands_checked": "not observable across the process boundary; the cell's safety layer clamps",
        },
    )


def server_sigterm_mid_pick(root: Path) -> ScenarioResult:
    """SIGTERM while a pick moves the arm (see `server_kill_mid_pick`)."""
    return server_kill_mid_pick(signal.SIGTERM, root)


def server_sigkill_mid_pick(root: Path) -> ScenarioResult:
    """SIGKILL while a pick moves the arm (see `server_kill_mid_pick`)."""
    return server_kill_mid_pick(signal.SIGKILL, root)
