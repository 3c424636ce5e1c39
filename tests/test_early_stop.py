"""Stop at the socket (`api.early_stop`): the protocol starts the halt when the bytes of `POST /stop` arrive, the
endpoint takes that halt's report instead of halting twice, a job running again by then is stopped as well, and a
halt whose request never reached the endpoint is forgotten. Through HTTP: a real uvicorn server on the simulated
cell, served the way `sam2grasp serve` serves it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from fake_grounding import stand_in_app
from live_server import running

from api.early_stop import EarlyStop, protocol_for, stop_first_protocol, stop_now
from pipeline.jobs.runner import StopReport
from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig


class CountingStop:
    """A stand-in for the runner's stop that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> StopReport:
        with self.lock:
            self.calls += 1
            n = self.calls
        return StopReport(0.001, f"job{n}", 0, time.monotonic())


def test_a_signal_starts_one_halt_that_the_endpoint_takes_once() -> None:
    stop = CountingStop()
    with ThreadPoolExecutor(1) as lane:
        early = EarlyStop(stop, lane)
        early.signal()
        early.signal()  # the same stop's bytes in two chunks, or two stops at once: one halt
        taken = early.take()
        assert taken is not None
        assert taken.result(5).job == "job1"
        assert early.take() is None
    assert stop.calls == 1
    assert early.started == 1


def test_an_untaken_halt_is_forgotten_after_max_age() -> None:
    stop = CountingStop()
    with ThreadPoolExecutor(1) as lane:
        early = EarlyStop(stop, lane, max_age_s=0.05)
        early.signal()
        time.sleep(0.1)
        assert early.take() is None  # its request never reached the endpoint: a later stop halts anew
        early.signal()
        assert early.started == 2
        lane.shutdown(wait=True)
        early.signal()  # a closing server's lane refuses work: no error, nothing started
    assert early.started == 2
    with pytest.raises(ValueError, match="max_age_s"):
        EarlyStop(stop, ThreadPoolExecutor(1), max_age_s=0)


@dataclass
class FakeJob:
    done: bool


class FakeRunner:
    def __init__(self, current: FakeJob | None) -> None:
        self.current = current
        self.stop = CountingStop()


@pytest.mark.parametrize(("current", "calls"), [(None, 1), (FakeJob(done=True), 1), (FakeJob(done=False), 2)])
def test_endpoint_stops_again_when_a_job_runs_after_the_early_halt(current: FakeJob | None, calls: int) -> None:
    runner = FakeRunner(current)
    with ThreadPoolExecutor(1) as lane:
        early = EarlyStop(runner.stop, lane)
        before = time.monotonic()
        early.signal()
        report, seen = asyncio.run(stop_now(early, runner, lane))  # type: ignore[arg-type]
    assert runner.stop.calls == calls
    assert report.job == f"job{calls}"
    assert before <= seen <= report.halted_monotonic_s  # seen when signalled, before the halt it started


def test_without_an_early_halt_the_endpoint_halts_itself() -> None:
    runner = FakeRunner(None)
    with ThreadPoolExecutor(1) as lane:
        before = time.monotonic()
        report, seen = asyncio.run(stop_now(EarlyStop(runner.stop, lane), runner, lane))  # type: ignore[arg-type]
    assert runner.stop.calls == 1
    assert report.job == "job1"
    assert before <= seen <= report.halted_monotonic_s


class RecordingBase:
    """A stand-in for uvicorn's protocol: records what it is handed."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


@pytest.mark.parametrize(
    ("chunk", "starts"),
    [
        (b"POST /stop HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST /stop?why=drill HTTP/1.1\r\n\r\n", True),
        (b"POST /stops HTTP/1.1\r\n\r\n", False),
        (b"GET /stop HTTP/1.1\r\n\r\n", False),
        (b"POST /pick HTTP/1.1\r\n\r\n", False),
        (b"Host: x\r\n\r\n", False),
    ],
)
def test_protocol_starts_the_halt_only_for_a_stop_request_line(chunk: bytes, starts: bool) -> None:
    stop = CountingStop()
    with ThreadPoolExecutor(1) as lane:
        early = EarlyStop(stop, lane)
        protocol = stop_first_protocol(early, RecordingBase)()
        protocol.data_received(chunk)
    assert protocol.received == [chunk]  # the bytes are handled as usual either way
    assert early.started == int(starts)


def _post_stop(port: int) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /stop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_stop_through_http_starts_at_the_socket() -> None:
    cell = SimCell(SimCellConfig(seed=3, pace=0.0, names=("red cube", "green cup", "blue can")))
    try:
        app = stand_in_app(cell)
        assert protocol_for(app).__name__ == "StopFirstProtocol"
        with running(app) as port:
            status, body = _post_stop(port)
            assert status == 200
            assert body["halted"] is True
            assert app.state.early_stop.started == 1  # the halt began in the protocol, not in the endpoint
            status, body = _post_stop(port)
            assert status == 200
            assert app.state.early_stop.started == 2
    finally:
        cell.close()


def test_protocol_for_needs_an_app_of_create_app() -> None:
    class Bare:
        class state:  # noqa: N801
            pass

    with pytest.raises(ValueError, match="create_app"):
        protocol_for(Bare())
