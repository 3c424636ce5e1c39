"""The stop lane (`api.stop_port`): POST /stop on a port of its own, served outside the API's event loop — the
answer of the API's POST /stop, kept-alive connections, wrong requests refused without a stop, CORS for the
page, stops carried out even when the request is odd or the connection limit is reached, and in the app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fake_grounding import TEST_TOKEN, stand_in_app
from fastapi.testclient import TestClient

from api.config import ApiConfig
from api.schemas import StopResponse
from api.stop_port import MAX_CONNECTIONS, StopPort
from pipeline.jobs.runner import StopReport
from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig


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


@pytest.fixture
def lane() -> Iterator[tuple[StopPort, CountingStop, str]]:
    stop = CountingStop()
    pool = ThreadPoolExecutor(max_workers=1)
    port = StopPort(stop, pool, origins=lambda: ("https://console.example",))
    port.start()
    try:
        yield port, stop, f"http://127.0.0.1:{port.port}"
    finally:
        port.close()
        pool.shutdown()


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


def test_when_the_lane_is_shut_down_the_answer_says_the_server_is_closing() -> None:
    stop = CountingStop()
    pool = ThreadPoolExecutor(max_workers=1)
    port = StopPort(stop, pool)
    port.start()
    pool.shutdown()
    try:
        r = httpx.post(f"http://127.0.0.1:{port.port}/stop")
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "server_closing"
    finally:
        port.close()


def test_port_and_config_are_validated() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        StopPort(CountingStop(), pool, port=70000)
    with pytest.raises(ValueError, match=r"stop_port must be within 0\.\.65535"):
        ApiConfig(stop_port=-1, token_file=None)
    pool.shutdown()


@pytest.mark.render
def test_the_app_runs_its_stop_lane_which_halts_a_running_pick() -> None:
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
        with pytest.raises(httpx.ConnectError):  # the lane closes with the server
            httpx.post(f"http://127.0.0.1:{lane}/stop", timeout=2)
    finally:
        cell.close()
    assert client.app.state.stop_lanes == []  # type: ignore[attr-defined]


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
