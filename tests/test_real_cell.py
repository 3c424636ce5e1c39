"""The real cell (`serve --backend ur5e`) built from its real drivers against the test doubles of the other driver
tests: the real ur_rtde `RTDEReceiveInterface` and the real connection probe against the RTDE/dashboard protocol
server of tests/rtde_server.py (another process), the control side through the MOCK of tests/fake_rtde.py (no
server for ur_rtde's script/register protocol runs here), the Robotiq driver against the URCap socket server of
tests/robotiq_server.py, and the RealSense driver's real pyrealsense2 pipeline fed rendered frames by a software
device. The policy is the shipped one (models/). The grasp cannot succeed here (the served joints do not follow the
commands); the tests check that commands flow through the safety layer to the driver, that stop halts them, and
that what is missing is named before anything moves.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyrealsense2 as rs
import pytest
from fake_grounding import TEST_TOKEN, fake_parse_command
from fake_rtde import FakeController, FakeRtdeFactory, stopped_cleanly
from fastapi.testclient import TestClient
from robotiq_server import GripperModel, RobotiqTestServer
from rtde_server import RtdeServer

from api.app import create_app
from api.config import ApiConfig
from grounding.detection import Detection
from grounding.errors import NoMatch
from pipeline.jobs.cell import CellUnavailable
from pipeline.jobs.grounding_port import Grounding
from pipeline.jobs.real_cell import RealCell, connect_real_cell
from pipeline.jobs.real_config import DriverSeams
from pipeline.runtime.perception_watch import WatchConfig
from robot.calibration import CameraCalibration, save_calibration
from robot.intrinsics import CameraIntrinsics, look_at
from robot.realsense_software import SoftwareRealSense
from robot.safety import SafetyLimits
from robot.sim.config import HOME_Q, CellConfig
from robot.sim.env import PickEnv
from robot.sim.scene import SceneRequest
from robot.ur5e_boundary import UrRtdeFactory

pytestmark = pytest.mark.render
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
SERIAL = "SIM0101"
SERVO_PERIOD_S = 0.002
FINAL = {"succeeded", "failed", "stopped"}


def loopback() -> str:
    """A fresh loopback address, so each test owns ports 30004 and 29999 on it."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def real_receive(host: str, frequency_hz: float, variables: Sequence[str]) -> Any:
    """ur_rtde's own RTDEReceiveInterface."""
    return UrRtdeFactory().receive(host, frequency_hz, variables)


@dataclass(frozen=True)
class View:
    """One rendered view of the simulated cell standing in for the real one: image, the red cube's box (pixels),
    intrinsics and the camera pose as a calibration (OpenCV axes)."""

    rgb: npt.NDArray[np.uint8]
    box: tuple[float, float, float, float]
    intrinsics: CameraIntrinsics
    T_base_camera: npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def view() -> View:
    cfg = CellConfig(scene=SceneRequest(names=("red cube", "green cup", "blue can"), camera_jitter=0.0))
    with PickEnv(cfg) as env:
        obs, _ = env.reset(seed=2)
        scene = env.scene
        assert scene is not None
        assert obs.rgb is not None
        assert obs.instance_map is not None
        index = next(i for i, o in enumerate(scene.objects) if o.instance.startswith("red_cube"))
        ys, xs = np.nonzero(obs.instance_map == index)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        t = np.eye(4)
        t[:3, :3] = look_at(scene.camera.position, scene.camera.target) @ np.diag([1.0, -1.0, -1.0])
        t[:3, 3] = scene.camera.position
        return View(obs.rgb.copy(), box, cfg.intrinsics, t)


def write_calibration(path: Path, view: View, serial: str = SERIAL) -> Path:
    cal = CameraCalibration(serial, view.T_base_camera, 0.3, "2026-01-05T09:00:00+00:00", 12)
    return save_calibration(path, cal)


class Feeder:
    """Feeds the software RealSense the rendered view at about 15 Hz (a real camera's newest-frame stream)."""

    def __init__(self, device: SoftwareRealSense, rgb: npt.NDArray[np.uint8]) -> None:
        self._quit = threading.Event()
        depth = np.full(rgb.shape[:2], 900, dtype=np.uint16)
        self._thread = threading.Thread(target=self._loop, args=(device, rgb, depth), daemon=True)
        self._thread.start()

    def _loop(self, device: SoftwareRealSense, rgb: npt.NDArray[np.uint8], depth: npt.NDArray[np.uint16]) -> None:
        while not self._quit.is_set():
            device.feed(rgb, depth, time.time())
            self._quit.wait(1 / 15)

    def stop(self) -> None:
        self._quit.set()
        self._thread.join(2.0)


class BoxLocator:
    """TEST STAND-IN for grounding on the real cell: knows the red cube's box in the rendered view (the sim's
    segmentation), nothing else."""

    def __init__(self, box: tuple[float, float, float, float]) -> None:
        self.box = box
        self.images: list[tuple[int, ...]] = []

    def locate(self, image: npt.NDArray[np.uint8], query: Any) -> Detection:
        self.images.append(image.shape)
        if (query.colour, query.shape) != ("red", "cube"):
            raise NoMatch(f"no {query.colour} {query.shape} in view")
        return Detection(self.box, 0.9, query.text)


@dataclass
class Doubles:
    """The stand-ins the real cell connects to."""

    host: str
    server: RtdeServer
    ctl: FakeController
    gripper: RobotiqTestServer
    context: Any
    device: SoftwareRealSense
    calibration: Path

    def settings(self) -> dict[str, Any]:
        """Where the stand-ins listen, and timing limits for a test machine that is shared and not real-time (the
        limits themselves are tested in test_runtime, test_ur5e_driver and test_faults_*)."""
        return {
            "gripper_host": "127.0.0.1",
            "gripper_port": self.gripper.port,
            "connect_timeout_s": 1.0,
            "safety": SafetyLimits(command_timeout=2.0),
            "policy_hold_s": 10.0,
            "watch": WatchConfig(camera_timeout_s=10.0, max_frame_age_s=5.0, hold_s=10.0),
        }

    def seams(self) -> DriverSeams:
        return DriverSeams(FakeRtdeFactory(self.ctl, receive_factory=real_receive), None, self.context)


@pytest.fixture
def doubles(view: View, tmp_path: Path) -> Iterator[Doubles]:
    host = loopback()
    context = rs.context()
    device = SoftwareRealSense(context, SERIAL, view.intrinsics)
    with RtdeServer(host) as server, RobotiqTestServer(GripperModel(time_scale=8.0)) as gripper:
        server.q[:] = list(HOME_Q)
        ctl = FakeController(period_s=SERVO_PERIOD_S)
        yield Doubles(host, server, ctl, gripper, context, device, write_calibration(tmp_path / "cal.json", view))


def wait_until(cond: Any, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_pick_commands_pass_the_safety_layer_to_the_driver_and_stop_halts_them(view: View, doubles: Doubles) -> None:
    feeder = Feeder(doubles.device, view.rgb)
    cell: RealCell | None = None
    try:
        cell = connect_real_cell(
            doubles.host, "realsense", doubles.calibration, settings=doubles.settings(), seams=doubles.seams()
        )
        checked: list[npt.NDArray[np.float64]] = []
        sent: list[npt.NDArray[np.float64]] = []
        check, servo = cell.safety.check, cell.arm.servo_joints

        def spy_check(*args: Any, **kw: Any) -> Any:  # a spy on the real safety layer: records what it let pass
            cmd = check(*args, **kw)
            checked.append(cmd.q)
            return cmd

        def spy_servo(q: npt.NDArray[np.float64]) -> None:  # and on the real driver: records what reached it
            sent.append(np.array(q))
            servo(q)

        cell.safety.check = spy_check  # type: ignore[method-assign]
        cell.arm.servo_joints = spy_servo
        locator = BoxLocator(view.box)
        grounding = Grounding(fake_parse_command, locator, "TEST STAND-IN (the red cube's box in the rendered view)")
        app = create_app(ApiConfig(backend="ur5e", token=TEST_TOKEN, token_file=None), cell=cell, grounding=grounding)
        with TestClient(app) as client:
            wait_until(lambda: client.get("/health").json()["camera"]["ok"], 10.0, "camera frames")
            health = client.get("/health").json()
            assert health["backend"] == "ur5e"
            assert health["ok"] is True
            assert health["robot"]["connected"] is True
            assert health["robot"]["gripper"]["activated"] is True
            assert health["camera"]["serial"] == SERIAL
            assert health["models"]["method"] == "loaded"
            assert health["calibration"]["camera_serial"] == SERIAL
            np.testing.assert_allclose(health["robot"]["joints_rad"], HOME_Q, atol=1e-4)  # read through real RTDE

            r = client.post("/pick", json={"command": "pick the red cube", "controller": "expert"}, headers=AUTH)
            assert r.status_code == 409
            assert "expert" in r.json()["error"]["message"]

            r = client.post("/pick", json={"command": "pick the red cube"}, headers=AUTH)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_until(
                lambda: len(doubles.ctl.servoj) >= 200 or client.get(f"/jobs/{job_id}").json()["state"] in FINAL,
                60.0,
                "servoJ commands",
            )
            job = client.get(f"/jobs/{job_id}").json()
            assert job["state"] in {"tracking", "grasping", "lifting"}, (
                job["detail"],
                client.get("/health").json()["robot"]["last_motion"],
            )
            assert job["target"]["box"] == [round(v, 2) for v in view.box]
            assert locator.images == [(480, 640, 3)]  # grounded on the camera's frame

            r = client.post("/stop")
            assert r.status_code == 200
            stop = r.json()
            assert stop["job"] == job_id
            assert stop["halt_s"] >= 0.0  # latency is a benchmark figure (bench/api.py); halting is checked below
            n_servoj, n_sent = len(doubles.ctl.servoj), len(sent)
            time.sleep(0.5)
            assert len(doubles.ctl.servoj) == n_servoj  # no servoJ after the stop returned
            assert len(sent) == n_sent
            names = doubles.ctl.names()
            assert "servoStop" in names[max(i for i, n in enumerate(names) if n == "servoJ") :]
            wait_until(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "stopped", 10.0, "stopped job")
            health = client.get("/health").json()
            assert health["robot"]["moving"] is False
            assert health["safety"]["commands_forwarded"] == n_sent

        # every target that reached the driver is one the safety layer passed, in order
        assert len(sent) >= 5
        assert len(checked) >= len(sent)
        for q in sent:
            assert any(np.array_equal(q, c) for c in checked)
        # and the driver's 500 Hz servo thread capped every servoJ step (its own safety layer)
        qs = np.array([q for _, q in doubles.ctl.servoj])
        step = np.abs(np.diff(qs, axis=0)).max()
        assert step <= np.pi * SERVO_PERIOD_S + 1e-9
        assert all(c[1][3:] == (SERVO_PERIOD_S, 0.1, 300.0) for c in doubles.ctl.calls if c[0] == "servoJ")
    finally:
        if cell is not None:
            cell.close()  # what `sam2grasp serve` does when the server shuts down
        feeder.stop()
    assert stopped_cleanly(doubles.ctl)  # servoStop, then stopScript


def test_missing_parts_are_named_and_nothing_moves(view: View, doubles: Doubles, tmp_path: Path) -> None:
    seams, settings = doubles.seams(), doubles.settings()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"robot_ip": None}, "--robot-ip"),
        ({"calibration": None}, "--calibration PATH"),
        ({"calibration": tmp_path / "none.json"}, "none.json does not exist"),
        ({"controller": "expert"}, "privileged simulator state"),
        ({"camera": "kinect"}, "valid: realsense"),
        ({"robot_ip": loopback()}, r"UR5e at 127\.[0-9.]+ is not available: .*refused"),  # nothing listens there
        ({"robot_ip": "robot.local"}, "not a valid IPv4"),
    ]
    bad = tmp_path / "bad.json"
    doc = {"format_version": 1, "camera_serial": SERIAL, "T_base_camera": [[1.0]], "reprojection_rms_px": 0.3}
    bad.write_text(json.dumps({**doc, "date": "2026-01-05T09:00:00+00:00"}))
    cases.append(({"calibration": bad}, "T_base_camera must be a 4x4 matrix"))
    mm = tmp_path / "mm.json"
    t = np.eye(4)
    t[:3, 3] = [600.0, 0.0, 400.0]  # millimetres where metres belong
    mm.write_text(json.dumps({**doc, "T_base_camera": t.tolist(), "date": "2026-01-05T09:00:00+00:00"}))
    cases.append(({"calibration": mm}, "millimetres"))
    other = write_calibration(tmp_path / "other.json", view, serial="OTHER99")
    cases.append(({"calibration": other}, "RealSense.*'OTHER99'.*connected: SIM0101"))
    for change, words in cases:
        args: dict[str, Any] = {
            "robot_ip": doubles.host,
            "camera": "realsense",
            "calibration": doubles.calibration,
            "controller": "method",
            **change,
        }
        with pytest.raises(CellUnavailable, match=words):
            connect_real_cell(
                args["robot_ip"],
                args["camera"],
                args["calibration"],
                controller=args["controller"],
                settings=settings,
                seams=seams,
            )
    names = doubles.ctl.names()
    assert "servoJ" not in names
    assert "moveJ" not in names
    # the one case that reached the arm (a camera of another serial) closed it again: servoStop, stopScript
    assert names.count("construct_control") == 1
    assert stopped_cleanly(doubles.ctl)
    assert not any(line.startswith("SET") for line in doubles.gripper.log)  # the gripper was never touched


def test_serve_names_what_the_ur5e_backend_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], view: View
) -> None:
    from pipeline.cli import main

    base = ["serve", "--backend", "ur5e", "--robot-ip", "192.168.1.10", "--state-dir", str(tmp_path / "state")]
    assert main(base) == 3
    assert "--calibration PATH" in capsys.readouterr().err
    assert main([*base, "--calibration", str(tmp_path / "missing.json")]) == 3
    assert "missing.json does not exist" in capsys.readouterr().err
    cal = write_calibration(tmp_path / "cal.json", view)
    assert main([*base, "--calibration", str(cal), "--controller", "expert"]) == 3
    err = capsys.readouterr().err
    assert "privileged simulator state" in err
    assert "--controller method" in err


def test_serve_closes_the_connected_cell_when_the_server_ends_or_cannot_start(
    doubles: Doubles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import pipeline.jobs.real_cell as real_cell
    from pipeline.cli import main

    connected: list[tuple[Any, ...]] = []
    connect = real_cell.connect_real_cell

    def with_doubles(robot_ip: str, camera: str, calibration: Path, *, controller: str) -> RealCell:
        connected.append((robot_ip, camera, calibration, controller))
        return connect(
            robot_ip, camera, calibration, controller=controller, settings=doubles.settings(), seams=doubles.seams()
        )

    monkeypatch.setattr(real_cell, "connect_real_cell", with_doubles)
    args = ["serve", "--backend", "ur5e", "--robot-ip", doubles.host, "--calibration", str(doubles.calibration)]
    code = main([*args, "--grounding", "nonexistent", "--state-dir", str(tmp_path / "state")])
    assert code == 3
    assert "unknown grounding backend 'nonexistent'" in capsys.readouterr().err
    assert connected == [(doubles.host, "realsense", doubles.calibration, "method")]
    assert "setWatchdog" in doubles.ctl.names()  # the arm was connected ...
    assert stopped_cleanly(doubles.ctl)  # ... and closed again: servoStop, stopScript
    assert "servoJ" not in doubles.ctl.names()

    import uvicorn

    served: list[Any] = []

    def server_ends_at_once(server: uvicorn.Server, sockets: Any = None) -> None:  # the server was shut down
        served.append(server.config.app)
        assert not stopped_cleanly(doubles.ctl)  # the arm is connected while the server runs

    monkeypatch.setattr(uvicorn.Server, "run", server_ends_at_once)
    assert main([*args, "--state-dir", str(tmp_path / "state")]) == 0
    assert len(served) == 1
    assert len(connected) == 2
    assert stopped_cleanly(doubles.ctl)  # the drivers' exit path ran when the server ended


def test_the_stop_guard_reaches_the_real_arms_servo_thread_and_reports_the_servers_halt(
    view: View, doubles: Doubles
) -> None:
    import httpx

    feeder = Feeder(doubles.device, view.rgb)
    cell: RealCell | None = None
    try:
        cell = connect_real_cell(
            doubles.host, "realsense", doubles.calibration, settings=doubles.settings(), seams=doubles.seams()
        )
        grounding = Grounding(fake_parse_command, BoxLocator(view.box), "TEST STAND-IN")
        config = ApiConfig(backend="ur5e", token=TEST_TOKEN, token_file=None, stop_port=0)
        with TestClient(create_app(config, cell=cell, grounding=grounding)) as client:
            port = client.get("/health").json()["stop_port"]
            signal = cell.arm.stop_signal
            assert signal is not None  # the servo thread reads it at every tick
            answer = httpx.post(f"http://127.0.0.1:{port}/stop").json()
            assert answer["halted"] is True
            # the real arm is halted by the server's stop (its servo thread is one of the server's), so the answer
            # gives the server's halt, which follows the guard's raise
            assert answer["halted_monotonic_s"] > signal.raised()[1]
            assert not signal.pending
        assert cell.arm.stop_signal is None  # detached when the server ends
    finally:
        if cell is not None:
            cell.close()
        feeder.stop()
