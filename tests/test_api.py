"""The HTTP API on the simulated cell (real MuJoCo, unpaced unless a test needs time to act), through Starlette's
TestClient: auth, every documented status, job JSON, stop, choose, sequences, stream, events. Grounding is the
stand-in of tests/fake_grounding.py; picks meant to succeed use the scripted expert (labelled in the job JSON)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_grounding import TEST_TOKEN, stand_in_app
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
FINAL = {"succeeded", "failed", "stopped"}
pytestmark = pytest.mark.render


def make_client(
    pace: float = 0.0, names: tuple[str, ...] = ("green can", "red ball", "blue cube"), **config: Any
) -> Iterator[tuple[TestClient, SimCell]]:
    cell = SimCell(SimCellConfig(seed=3, pace=pace, names=names))
    try:
        with TestClient(stand_in_app(cell, **config)) as client:
            yield client, cell
    finally:
        cell.close()


@pytest.fixture
def api() -> Iterator[tuple[TestClient, SimCell]]:
    yield from make_client()


@pytest.fixture
def paced_api() -> Iterator[tuple[TestClient, SimCell]]:
    yield from make_client(pace=1.0)


def wait_job(client: TestClient, job_id: str, states: set[str], timeout_s: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_state_changing_endpoints_need_the_token(api: tuple[TestClient, SimCell]) -> None:
    client, _ = api
    for path, body in (
        ("/pick", {"command": "pick the red ball"}),
        ("/sequence", {"commands": ["pick the red ball"]}),
        ("/jobs/x/choose", {"candidate": 0}),
        ("/scene/reset", {}),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TEST_TOKEN}):
            r = client.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "unauthorized"
    assert client.get("/jobs").json() == {"jobs": []}


@pytest.mark.slow
def test_pick_is_accepted_and_runs_to_success(api: tuple[TestClient, SimCell]) -> None:
    client, _ = api
    r = client.post("/pick", json={"command": "pick the red ball"}, headers=AUTH)
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] in {"queued", "grounding", "tracking"}
    assert job["command"] == "pick the red ball"
    assert "expert" in job["controller"]
    assert "privileged" in job["controller"]
    done = wait_job(client, job["id"], FINAL)
    assert done["state"] == "succeeded", done
    assert done["target"]["instance"] == "red_ball_0"
    assert len(done["target"]["box"]) == 4
    assert {"queued", "grounding", "tracking", "grasping", "lifting", "placing"} <= set(done["timings"])
    assert all(v >= 0 for v in done["timings"].values())
    listed = client.get("/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    health = client.get("/health").json()
    assert health["ok"]
    assert any(o["in_bin"] for o in health["scene"]["objects"] if o["instance"] == "red_ball_0")


def test_bad_requests_get_their_documented_status(api: tuple[TestClient, SimCell]) -> None:
    client, _ = api
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"command": "wave at the camera"}}, 400, "unsupported_command"),
        ({"content": b'{"command": ', "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
        ({"json": {"command": "pick the red ball", "speed": 2}}, 422, "invalid"),
        ({"json": {"command": 5}}, 422, "invalid"),
        ({"json": {"command": ""}}, 422, "invalid"),
        ({"json": {"command": "pick the red ball", "controller": "magic"}}, 422, "invalid"),
        (
            {"content": b'{"command": "' + b"x" * 70_000 + b'"}', "headers": {"content-type": "application/json"}},
            413,
            "too_large",
        ),
    ]
    for kwargs, status, kind in cases:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        r = client.post("/pick", headers=headers, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert r.json()["error"]["type"] == kind
    r = client.get("/jobs/does-not-exist")
    assert r.status_code == 404
    assert "GET /jobs" in r.json()["error"]["message"]
    assert client.post("/jobs/does-not-exist/choose", json={"candidate": 0}, headers=AUTH).status_code == 404
    assert (
        client.post("/sequence", json={"commands": ["pick it"], "document": "steps: [pick]"}, headers=AUTH).status_code
        == 422
    )
    r = client.post("/sequence", json={"document": "steps: [{command: pick the red ball, retries: 7}]"}, headers=AUTH)
    assert r.status_code == 400
    assert "retries" in r.json()["error"]["message"]


def test_full_queue_is_429_and_protective_stop_is_409() -> None:
    for client, the_cell in make_client(queue_capacity=1):
        r = client.post("/pick", json={"command": "pick the red ball, then the green can"}, headers=AUTH)
        assert r.status_code == 429
        assert r.headers["retry-after"]
        assert client.get("/jobs").json()["jobs"] == []  # all or none
        the_cell.simulate_protective_stop("protective stop: drill")
        r = client.post("/pick", json={"command": "pick the red ball"}, headers=AUTH)
        assert r.status_code == 409
        assert "protective stop" in r.json()["error"]["message"]
        assert client.get("/health").json()["robot"]["protective_stop"]
        r = client.post("/scene/reset", json={"seed": 5}, headers=AUTH)
        assert r.status_code == 200
        assert r.json()["seed"] == 5
        assert not client.get("/health").json()["robot"]["protective_stop"]
        assert client.post("/scene/reset", json={"objects": ["pink elephant"]}, headers=AUTH).status_code == 400


def test_stop_halts_motion_and_cancels_the_queue(paced_api: tuple[TestClient, SimCell]) -> None:
    client, _ = paced_api
    r = client.post("/sequence", json={"commands": ["pick the red ball", "pick the green can"]}, headers=AUTH)
    assert r.status_code == 202
    first, second = r.json()["jobs"]
    assert first["sequence"]["steps"] == 2
    wait_job(client, first["id"], {"tracking", "grasping"}, 30)
    time.sleep(0.3)
    r = client.post("/stop")  # no token: stopping is always accepted
    assert r.status_code == 200
    body = r.json()
    assert body["halted"]
    assert body["job"] == first["id"]
    assert body["cancelled"] == 1
    assert body["halt_s"] >= 0.0  # how fast is bench/api.py's and bench/load.py's figure, not a test's
    assert body["halted_monotonic_s"] <= time.monotonic()  # the server's clock here is this process's
    assert body["received_monotonic_s"] <= body["halted_monotonic_s"]  # seen before it halted
    assert client.get(f"/jobs/{first['id']}").json()["state"] == "stopped"
    assert client.get(f"/jobs/{second['id']}").json()["state"] == "stopped"
    robot = client.get("/health").json()["robot"]
    time.sleep(0.3)
    later = client.get("/health").json()["robot"]
    assert not later["moving"]
    assert later["joint_target_rad"] == robot["joint_target_rad"]
    assert later["joints_rad"] == robot["joints_rad"]


def test_ambiguous_command_waits_for_a_choice(paced_api: tuple[TestClient, SimCell]) -> None:
    client, _ = paced_api
    r = client.post("/scene/reset", json={"seed": 7, "objects": ["red cube", "red cube", "green cup"]}, headers=AUTH)
    assert r.status_code == 200
    job = client.post("/pick", json={"command": "pick the red cube"}, headers=AUTH).json()
    waiting = wait_job(client, job["id"], {"needs_choice"} | FINAL, 20)
    assert waiting["state"] == "needs_choice"
    assert waiting["reason"] == "ambiguous"
    assert len(waiting["candidates"]) == 2
    assert all(len(c["box"]) == 4 for c in waiting["candidates"])
    r = client.post(f"/jobs/{job['id']}/choose", json={"candidate": 2}, headers=AUTH)
    assert r.status_code == 400
    assert "candidates 0..1" in r.json()["error"]["message"]
    assert client.post(f"/jobs/{job['id']}/choose", json={"candidate": -1}, headers=AUTH).status_code == 422
    r = client.post(f"/jobs/{job['id']}/choose", json={"candidate": 1}, headers=AUTH)
    assert r.status_code == 200
    moving = wait_job(client, job["id"], {"tracking", "grasping", "lifting"} | FINAL, 20)
    assert moving["target"]["box"] == waiting["candidates"][1]["box"]
    r = client.post(f"/jobs/{job['id']}/choose", json={"candidate": 0}, headers=AUTH)
    assert r.status_code == 409
    assert r.json()["error"]["type"] == "not_waiting"
    client.post("/stop")


def test_sequence_forms_and_events(api: tuple[TestClient, SimCell]) -> None:
    client, _ = api
    with client.websocket_connect("/events") as ws:
        assert ws.receive_json()["kind"] == "snapshot"
        r = client.post(
            "/sequence",
            json={"steps": [{"command": "pick the red ball", "retries": 1, "place": {"zone": "bin"}}], "name": "one"},
            headers=AUTH,
        )
        assert r.status_code == 202
        assert r.json()["name"] == "one"
        job_id = r.json()["jobs"][0]["id"]
        seen = set()
        while "grounding" not in seen:
            msg = ws.receive_json()
            if msg["kind"] == "job" and msg["data"]["id"] == job_id:
                seen.add(msg["data"]["state"])
        client.post("/stop")
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/events", headers={"Origin": "http://evil.example"}) as ws,
    ):
        ws.receive_json()  # another site's page may not read the cell's events
    r = client.post("/sequence", json={"document": "name: doc\nsteps:\n  - pick the blue cube\n"}, headers=AUTH)
    assert r.status_code == 202
    assert r.json()["jobs"][0]["command"] == "pick the blue cube"
    client.post("/stop")


def test_stream_health_and_page(api: tuple[TestClient, SimCell]) -> None:
    client, _ = api
    r = client.get("/stream", params={"frames": 2})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
    assert r.content.count(b"\xff\xd8") == 2  # two JPEG images
    health = client.get("/health").json()
    assert {"robot", "camera", "models", "safety", "queue", "grounding"} <= set(health)
    assert "STAND-IN" in health["grounding"]
    page = client.get("/")
    assert page.status_code == 200
    assert "STOP" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "http://evil"}).headers


def test_the_server_sets_its_read_threads_and_switch_interval_and_restores_the_interval() -> None:
    import sys

    import anyio.to_thread

    before = sys.getswitchinterval()
    seen: dict[str, float] = {}
    for client, _ in make_client(read_threads=3, switch_interval_s=0.002):
        # read on the server's event loop, where the thread pool is
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)  # type: ignore[union-attr]
        seen["tokens"] = limiter.total_tokens
        seen["switch"] = sys.getswitchinterval()
        assert client.get("/health").status_code == 200
    assert seen == {"tokens": 3, "switch": pytest.approx(0.002)}
    assert sys.getswitchinterval() == pytest.approx(before)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("read_threads", 0, "read_threads must be within 1..64"),
        ("read_threads", 65, "read_threads must be within 1..64"),
        ("switch_interval_s", 1.0, r"switch_interval_s must be within 0.0001..0.1 s"),
        ("switch_interval_s", 0.0, r"switch_interval_s must be within 0.0001..0.1 s"),
    ],
)
def test_server_thread_settings_are_validated(field: str, value: float, match: str) -> None:
    from api.config import ApiConfig

    with pytest.raises(ValueError, match=match):
        ApiConfig(**{field: value})  # type: ignore[arg-type]
