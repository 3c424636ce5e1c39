"""The stop guard: its HTTP side (`api.stop_port`: the answer of the API's POST /stop, kept-alive connections,
wrong requests refused without a stop, CORS and the page's policy, stops carried out even when the request is odd
or the connection limit is reached), the shared stop signal (`robot.stop_signal`) and the simulated arm holding
on it, the guard process (`api.stop_guard`) and the app running it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fake_grounding import TEST_TOKEN, stand_in_app
from fastapi.testclient import TestClient

from api.config import ApiConfig
from api.error_body import error_body
from api.schemas import StopResponse
from api.stop_guard import StopGuard
from api.stop_port import MAX_CONNECTIONS, StopPort, stop_answer
from pipeline.jobs.runner import StopReport
from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv
from robot.sim.scene import SceneRequest
from robot.sim.sim_robot import SimRobot
from robot.stop_signal import StopSignal

ROOT = Path(__file__).resolve().parents[1]


class CountingStop:
    """The runner's stop, counted; each halt takes `halt_s` seconds."""

    def __init__(self, halt_s: float = 0.0) -> None:
        self.calls, self.halt_s = 0, halt_s
        self._lock = threading.Lock()

    def __call__(self) -> StopReport:
        with self._lock:
            self.calls += 1
        time.sleep(self.halt_s)
        return StopReport(self.halt_s, "job-1" if self.calls == 1 else None, 2, time.monotonic())

    def carry_out(self, seen: float) -> tuple[int, dict[str, Any]]:
        """As the guard answers: the stop's report as the API's answer."""
        return 200, stop_answer(self(), seen)


@pytest.fixture
def lane() -> Iterator[tuple[StopPort, CountingStop, str]]:
    stop = CountingStop()
    port = StopPort(stop.carry_out, origins=("https://console.example",))
    port.start()
    try:
        yield port, stop, f"http://127.0.0.1:{port.port}"
    finally:
        port.close()


def test_a_stop_answers_as_the_api_does_on_a_kept_alive_connection(lane: tuple[StopPort, CountingStop, str]) -> None:
    port, stop, url = lane
    with httpx.Client(base_url=url) as client:
        before = time.monotonic()
        first = client.post("/stop")
        second = client.post("/stop?from=page")
    assert first.status_code == second.status_code == 200
    answer = StopResponse.model_validate(first.json())  # the schema of the API's POST /stop
    assert answer.halted
    assert answer.job == "job-1"
    assert answer.cancelled == 2
    assert before <= answer.received_monotonic_s <= answer.halted_monotonic_s <= time.monotonic()
    assert second.json()["job"] is None
    assert stop.calls == 2
    assert port.served == 2
    assert first.headers.get("connection", "").lower() != "close"  # the stop button's next stop needs no handshake


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/stop", 405), ("PUT", "/stop", 405), ("DELETE", "/stop", 405), ("POST", "/pick", 404), ("GET", "/", 405)],
)
def test_anything_but_post_stop_is_refused_and_nothing_stops(
    lane: tuple[StopPort, CountingStop, str], method: str, path: str, status: int
) -> None:
    _, stop, url = lane
    r = httpx.request(method, url + path)
    assert r.status_code == status
    message = r.json()["error"]["message"]
    assert "POST /stop only" in message
    assert path in message
    assert stop.calls == 0
    if status == 405:
        assert r.headers["allow"] == "POST, OPTIONS"


def test_the_page_of_the_same_host_and_allowed_origins_may_read_the_answer(
    lane: tuple[StopPort, CountingStop, str],
) -> None:
    port, stop, url = lane
    page = httpx.post(url + "/stop", headers={"Origin": "http://127.0.0.1:8000"})
    assert page.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    listed = httpx.post(url + "/stop", headers={"Origin": "https://console.example"})
    assert listed.headers["access-control-allow-origin"] == "https://console.example"
    foreign = httpx.post(url + "/stop", headers={"Origin": "https://elsewhere.example"})
    assert foreign.status_code == 200  # carried out: stopping is always allowed ...
    assert "access-control-allow-origin" not in foreign.headers  # ... but the other site cannot read the answer
    preflight = httpx.options(url + "/stop", headers={"Origin": "http://127.0.0.1:8000"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert stop.calls == 3
    assert port.served == 3


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n",  # a body too large (never sent)
        b"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",  # not a length
        b"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{}{}",
    ],
)
def test_an_odd_stop_request_still_stops(lane: tuple[StopPort, CountingStop, str], request_bytes: bytes) -> None:
    port, stop, _ = lane
    answer = _raw(port.port, request_bytes)  # the server closes the connection after answering
    assert answer.startswith(b"HTTP/1.1 200")
    assert stop.calls == 1


def test_a_request_line_that_is_not_http_gets_an_error_and_nothing_stops(
    lane: tuple[StopPort, CountingStop, str],
) -> None:
    port, stop, _ = lane
    answer = _raw(port.port, b"STOP NOW PLEASE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400")
    assert stop.calls == 0


def test_beyond_the_connection_limit_a_stop_is_still_carried_out(lane: tuple[StopPort, CountingStop, str]) -> None:
    port, stop, _ = lane
    idle = [socket.create_connection(("127.0.0.1", port.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # every idle connection has been taken in by a thread of the lane
        answer = _raw(port.port, b"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"Connection: close" in answer
        assert stop.calls == 1
    finally:
        for sock in idle:
            sock.close()


def test_an_answer_other_than_200_is_passed_on_and_not_counted() -> None:
    port = StopPort(lambda seen: (503, error_body("not_confirmed", "the server did not confirm")))
    port.start()
    try:
        r = httpx.post(f"http://127.0.0.1:{port.port}/stop")
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "not_confirmed"
        assert port.served == 0
    finally:
        port.close()


def test_port_and_config_are_validated() -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        StopPort(CountingStop().carry_out, port=70000)
    signal = StopSignal.create()
    try:
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            StopGuard(CountingStop(), signal, False, port=-2)
    finally:
        signal.close()
    with pytest.raises(ValueError, match=r"stop_port must be within 0\.\.65535"):
        ApiConfig(stop_port=-1, token_file=None)


# ---------------------------------------------------------------------------------------------- the signal
def test_a_signal_raised_in_one_mapping_is_pending_in_another_until_acknowledged() -> None:
    server = StopSignal.create()
    try:
        guard = StopSignal.attach(server.path)
        assert not server.pending
        number, at = guard.raise_stop()
        assert number == 1
        assert server.raised() == (1, at)
        assert server.pending
        guard.raise_stop()
        server.acknowledge(1)
        assert server.pending  # the second stop is not carried out yet
        server.acknowledge(2)
        assert not server.pending
        late = StopSignal.attach(server.path)
        assert not late.pending  # stops raised before a process looked are not its business
        guard.close()
        late.close()
        assert late.pending  # a closed signal reads as a stop: a step that still held it holds
    finally:
        server.close()
    assert not server.path.exists()  # the owner removes the file
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StopSignal.attach(server.path)


def test_attach_refuses_a_file_of_the_wrong_size(tmp_path: Any) -> None:
    bad = tmp_path / "signal"
    bad.write_bytes(b"x" * 3)
    with pytest.raises(ValueError, match="expected 16"):
        StopSignal.attach(bad)


def test_the_simulated_arm_holds_while_a_raised_stop_is_pending_whatever_it_is_told() -> None:
    env = PickEnv(CellConfig(render=False, scene=SceneRequest(n_objects=(3, 3))))
    sim = SimRobot(env, env.reset(0)[0])
    signal = StopSignal.create()
    try:
        sim.stop_signal = signal
        goal = sim.joint_positions() + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
        sim.servo_joints(goal)
        sim.advance(4 * sim.control_dt)
        StopSignal.attach(signal.path).raise_stop()  # as the guard raises it
        sim.advance(sim.control_dt)  # the step that sees it latches the pose where it began
        held = sim.joint_target.copy()
        for _ in range(10):
            sim.servo_joints(goal)  # a control loop not yet told goes on commanding
            sim.advance(sim.control_dt)
        assert np.max(np.abs(sim.joint_positions() - held)) < 0.01
        np.testing.assert_array_equal(sim.joint_target, held)
        signal.acknowledge(1)  # carried out: the next job may move
        sim.servo_joints(goal)
        sim.advance(10 * sim.control_dt)
        assert np.max(np.abs(sim.joint_positions() - held)) > 0.05
    finally:
        signal.close()


# ---------------------------------------------------------------------------------------------- the guard
def test_the_guard_process_raises_the_stop_then_the_server_carries_it_out() -> None:
    stop = CountingStop()
    signal = StopSignal.create()
    guard = StopGuard(stop, signal, watched=True)
    guard.start()
    try:
        before = time.monotonic()
        r = httpx.post(f"http://127.0.0.1:{guard.port}/stop")
        assert r.status_code == 200
        answer = StopResponse.model_validate(r.json())
        assert answer.job == "job-1"
        assert answer.cancelled == 2
        # the halt is when the guard raised the stop (the watched cell holds from its next step), right after it
        # read the request
        assert before <= answer.received_monotonic_s <= answer.halted_monotonic_s <= time.monotonic()
        assert answer.halt_s == pytest.approx(answer.halted_monotonic_s - answer.received_monotonic_s, abs=1e-5)
        assert signal.raised() == (1, answer.halted_monotonic_s)
        assert not signal.pending  # acknowledged once carried out
        assert (stop.calls, guard.carried_out) == (1, 1)
        assert httpx.get(f"http://127.0.0.1:{guard.port}/stop").status_code == 405  # nothing else is served
        assert stop.calls == 1
    finally:
        guard.close()
        signal.close()
    with pytest.raises(httpx.ConnectError):  # the guard ends with the server's end of the pipe
        httpx.post(f"http://127.0.0.1:{guard.port}/stop", timeout=2)


def test_a_stop_the_server_fails_to_carry_out_is_reported_and_keeps_the_arm_held() -> None:
    def broken() -> StopReport:
        raise RuntimeError("the runner is wedged")

    signal = StopSignal.create()
    guard = StopGuard(broken, signal, watched=True)
    guard.start()
    try:
        r = httpx.post(f"http://127.0.0.1:{guard.port}/stop", timeout=30)
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        assert "the runner is wedged" in message
        assert "POST /stop on the API" in message
        assert signal.pending  # never acknowledged: the watched arm keeps holding
    finally:
        guard.close()
        signal.close()


def test_an_unwatched_cell_is_halted_when_the_server_says() -> None:
    stop = CountingStop(halt_s=0.05)
    signal = StopSignal.create()
    guard = StopGuard(stop, signal, watched=False)
    guard.start()
    try:
        answer = httpx.post(f"http://127.0.0.1:{guard.port}/stop").json()
        assert answer["halted_monotonic_s"] > signal.raised()[1]  # the server's halt, not the raise
        assert answer["halt_s"] >= 0.05
    finally:
        guard.close()
        signal.close()


def test_a_guard_that_cannot_listen_says_why() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    signal = StopSignal.create()
    try:
        guard = StopGuard(CountingStop(), signal, watched=True, port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="did not start"):
            guard.start()
    finally:
        taken.close()
        signal.close()


@pytest.mark.render
def test_the_app_runs_its_stop_guard_which_halts_a_running_pick() -> None:
    cell = SimCell(SimCellConfig(seed=3, pace=1.0, names=("green can", "red ball", "blue cube")))
    try:
        with TestClient(stand_in_app(cell, stop_port=0)) as client:
            lane = client.get("/health").json()["stop_port"]
            assert isinstance(lane, int)
            assert lane > 0
            auth = {"Authorization": f"Bearer {TEST_TOKEN}"}
            job = client.post("/pick", json={"command": "pick the red ball"}, headers=auth).json()
            end = time.monotonic() + 30
            while client.get(f"/jobs/{job['id']}").json()["state"] not in ("tracking", "grasping"):
                assert time.monotonic() < end, "the pick never moved"
                time.sleep(0.05)
            r = httpx.post(f"http://127.0.0.1:{lane}/stop")
            assert r.status_code == 200
            assert r.json()["job"] == job["id"]
            assert client.get(f"/jobs/{job['id']}").json()["state"] == "stopped"
            first = client.get("/health").json()["robot"]
            time.sleep(0.3)
            later = client.get("/health").json()["robot"]
            assert not later["moving"]
            assert later["joint_target_rad"] == first["joint_target_rad"]
        with pytest.raises(httpx.ConnectError):  # the guard ends with the server
            httpx.post(f"http://127.0.0.1:{lane}/stop", timeout=2)
    finally:
        cell.close()
    assert client.app.state.stop_guards == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("127.0.0.1:8000", 8001, "http://127.0.0.1:8001"),
        ("robot-cell.local:8000", 9001, "http://robot-cell.local:9001"),
        ("[::1]:8000", 8001, "http://[::1]:8001"),
        ("127.0.0.1:8000", None, None),  # no stop lane: the page connects to its own origin only
        ("evil host;script-src *", 8001, None),  # a Host header that is not a machine name changes nothing
        ("", 8001, None),
    ],
)
def test_the_page_policy_lets_it_reach_the_stop_lane_only(host: str, port: int | None, allowed: str | None) -> None:
    from api.middleware import CSP, csp

    policy = csp(host, port)
    if allowed is None:
        assert policy == CSP
    else:
        assert f"connect-src 'self' {allowed} ws: wss:;" in policy
        assert policy.replace(f" {allowed}", "") == CSP


def test_the_guard_ends_when_its_server_is_killed() -> None:
    """A server killed with SIGKILL runs no clean-up: the guard sees its pipe close and ends by itself."""
    import subprocess
    import sys

    program = (
        "import sys, time\n"
        "from api.stop_guard import StopGuard\n"
        "from robot.stop_signal import StopSignal\n"
        "signal = StopSignal.create()\n"
        "guard = StopGuard(lambda: None, signal, watched=True)\n"
        "guard.start()\n"
        "print(guard.port, signal.path, flush=True)\n"
        "time.sleep(600)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert server.stdout is not None
        first, path = server.stdout.readline().split()
        port = int(first)
        assert Path(path).exists()
        assert httpx.get(f"http://127.0.0.1:{port}/stop").status_code == 405  # the guard listens
        server.kill()
        server.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/stop", timeout=1)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException):
                pass  # caught closing down: a connection it had accepted was reset
            except httpx.ConnectError:
                gone = time.monotonic() + 5
                while Path(path).exists() and time.monotonic() < gone:
                    time.sleep(0.05)
                assert not Path(path).exists()  # and removed the signal file the server could not
                return
            time.sleep(0.1)
        raise AssertionError(f"the guard on port {port} outlived its server by 10 s")
    finally:
        if server.poll() is None:
            server.kill()
