"""The viewer cap of GET /stream, through HTTP: a real uvicorn server (in a thread, on a free port) serving the
simulated cell (real MuJoCo; stand-in grounding of tests/fake_grounding.py), viewers as raw sockets like browsers
that keep the MJPEG stream open. One viewer beyond the cap gets 503 with Retry-After and a message saying what to
do; a viewer that goes away, or whose bounded stream ends, frees its slot; the cap comes from
SAM2GRASP_STREAM_MAX_VIEWERS (default 4)."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fake_grounding import stand_in_app
from live_server import running

from api.schemas import stream_responses
from api.stream import (
    BOUNDARY,
    DEFAULT_MAX_VIEWERS,
    MAX_VIEWERS_ENV,
    RETRY_AFTER_S,
    StreamFull,
    ViewerGate,
    max_viewers_from_env,
    mjpeg_frames,
)
from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig

CAP = 2


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MAX_VIEWERS_ENV, str(CAP))
    cell = SimCell(SimCellConfig(seed=3, pace=0.0, names=("red cube", "green cup", "blue can")))
    try:
        with running(stand_in_app(cell)) as port:
            yield "127.0.0.1", port
    finally:
        cell.close()
        mp.undo()


class Viewer:
    """A client of GET /stream over a raw socket (as a browser's <img> keeps it open)."""

    def __init__(self, where: tuple[str, int], query: str = "") -> None:
        self.sock = socket.create_connection(where, timeout=10)
        self.sock.sendall(f"GET /stream{query} HTTP/1.1\r\nHost: {where[0]}:{where[1]}\r\n\r\n".encode())
        self.data = b""
        while b"\r\n\r\n" not in self.data:
            self._read()
        head, self.body = self.data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.data += chunk

    def first_jpeg(self) -> bool:
        """Read until one whole JPEG part arrived."""
        while b"\xff\xd9" not in self.data:  # the JPEG end marker
            self._read()
        return True

    def error(self) -> dict[str, str]:
        """The JSON error body of a refused request."""
        size = int(self.headers["content-length"])
        while len(self.body) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.body += chunk
        error: dict[str, str] = json.loads(self.body[:size])["error"]
        return error

    def close(self) -> None:
        self.sock.close()


def viewer_when_free(where: tuple[str, int], query: str = "", timeout_s: float = 10.0) -> Viewer:
    """A viewer that got a slot, trying again while the stream is full (until `timeout_s` seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = Viewer(where, query)
        if v.status != 503 or time.monotonic() > deadline:
            return v
        v.close()
        time.sleep(0.1)


def test_viewers_beyond_the_cap_get_503_with_retry_after_until_a_slot_frees(server: tuple[str, int]) -> None:
    viewers = [Viewer(server) for _ in range(CAP)]
    try:
        for v in viewers:
            assert v.status == 200
            assert v.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            assert v.first_jpeg()
        refused = Viewer(server)
        assert refused.status == 503
        assert refused.headers["retry-after"] == str(RETRY_AFTER_S)
        error = refused.error()
        assert f"already has {CAP} viewer(s)" in error["message"]
        assert "close another viewer" in error["message"]
        assert MAX_VIEWERS_ENV in error["message"]
        refused.close()

        viewers.pop(0).close()  # a viewer goes away (a closed tab): its slot frees within moments
        t0 = time.monotonic()
        again = viewer_when_free(server, timeout_s=5.0)
        assert again.status == 200
        assert time.monotonic() - t0 < 5.0
        assert again.first_jpeg()
        viewers.append(again)
    finally:
        for v in viewers:
            v.close()


def test_a_bounded_stream_gives_its_slot_back_when_it_ends(server: tuple[str, int]) -> None:
    for i in range(CAP + 2):  # more bounded streams, one after the other, than there are slots
        # the first may wait for the slots of an earlier test's viewers, freed once the server saw them go
        v = viewer_when_free(server, "?frames=1", timeout_s=5.0) if i == 0 else Viewer(server, "?frames=1")
        assert v.status == 200
        assert v.first_jpeg()
        while not v.data.endswith(b"0\r\n\r\n"):  # the chunked body's end: the stream ended on its own
            v._read()
        v.close()


def test_the_cap_comes_from_the_environment_and_is_validated() -> None:
    assert max_viewers_from_env({}) == DEFAULT_MAX_VIEWERS == 4
    assert max_viewers_from_env({MAX_VIEWERS_ENV: " 7 "}) == 7
    for bad in ("0", "65", "two", "2.5"):
        with pytest.raises(ValueError, match=rf"{MAX_VIEWERS_ENV}.*1\.\.64"):
            max_viewers_from_env({MAX_VIEWERS_ENV: bad})
    with pytest.raises(ValueError, match=r"within 1\.\.64, got 0"):
        ViewerGate(0)


def test_a_viewer_that_never_started_gives_its_slot_back() -> None:
    gate = ViewerGate(1)
    closing = threading.Event()
    first = mjpeg_frames(lambda: None, 10.0, None, closing, gate=gate)
    assert gate.viewers == 1
    with pytest.raises(StreamFull) as full:
        mjpeg_frames(lambda: None, 10.0, None, closing, gate=gate)
    assert full.value.status_code == 503
    assert full.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
    del first  # the client went away before the response body was read
    gc.collect()
    assert gate.viewers == 0
    closing.set()
    ended = mjpeg_frames(lambda: None, 10.0, None, closing, gate=gate)
    assert list(ended) == []  # the server is shutting down: the stream ends, and its slot is free again
    assert gate.viewers == 0


def test_stream_responses_document_503_with_retry_after() -> None:
    doc = stream_responses(BOUNDARY)
    assert set(doc) == {200, 422, 503}
    assert f"multipart/x-mixed-replace; boundary={BOUNDARY}" in doc[200]["content"]
    assert "Retry-After" in doc[503]["headers"]


def test_openapi_documents_the_503_of_the_stream(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(f"GET /openapi.json HTTP/1.1\r\nHost: {server[0]}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    schema = json.loads(data.split(b"\r\n\r\n", 1)[1])
    responses = schema["paths"]["/stream"]["get"]["responses"]
    assert "503" in responses
    assert "Retry-After" in responses["503"]["headers"]
