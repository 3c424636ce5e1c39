"""The RealSense driver through the real pyrealsense2 library: a software device (`robot.realsense_software`) fed
with colour and depth rendered by the simulated cell, read back through `rs.pipeline` and `rs.align`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyrealsense2 as rs
import pytest

from robot.intrinsics import CameraIntrinsics
from robot.protocols import Camera
from robot.realsense import CameraNotFoundError, CameraTimeoutError, RealSenseCamera, connected_serials
from robot.realsense_frames import depth_to_mm
from robot.realsense_software import SoftwareRealSense
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv
from robot.sim.render import CameraRenderer

pytestmark = pytest.mark.render


@dataclass(frozen=True)
class Rendered:
    """Two rendered views of the cell at 640x480 and the first one's depth at 320x240."""

    intrinsics: CameraIntrinsics
    rgb: list[npt.NDArray[np.uint8]]
    depth: list[npt.NDArray[np.uint16]]
    depth_small: npt.NDArray[np.uint16]


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    cfg = CellConfig(scene=CellConfig().scene)
    with PickEnv(cfg) as env:
        obs, _ = env.reset(seed=3)
        q = obs.joints.copy()
        q[0] += 0.4
        obs2 = obs
        for _ in range(6):
            obs2, *_ = env.step(np.append(q, 0.02))
        assert env.model is not None
        assert env.data is not None
        small = CameraRenderer(env.model, "front", 320, 240, depth=True, segmentation=False)
        depth_small = small.render(env.data).depth_mm  # the state of obs2
        small.close()
    assert obs.rgb is not None
    assert obs2.rgb is not None
    assert obs.depth_mm is not None
    assert obs2.depth_mm is not None
    assert depth_small is not None
    return Rendered(cfg.intrinsics, [obs.rgb, obs2.rgb], [obs.depth_mm, obs2.depth_mm], depth_small)


@pytest.fixture
def context() -> rs.context:
    return rs.context()


@pytest.fixture
def device(context: rs.context, rendered: Rendered) -> SoftwareRealSense:
    return SoftwareRealSense(context, "SIM0001", rendered.intrinsics)


@pytest.fixture
def camera(context: rs.context, device: SoftwareRealSense) -> Iterator[RealSenseCamera]:
    cam = RealSenseCamera("SIM0001", context=context, reconnect_backoff_s=0.05)
    cam.open()
    yield cam
    cam.close()


def test_camera_satisfies_the_protocol(camera: RealSenseCamera) -> None:
    assert isinstance(camera, Camera)
    assert camera.serial == "SIM0001"


def test_colour_and_depth_round_trip_through_the_pipeline(
    camera: RealSenseCamera, device: SoftwareRealSense, rendered: Rendered
) -> None:
    for i in range(2):
        stamp = 1000.0 + i / 30
        device.feed(rendered.rgb[i], rendered.depth[i], stamp)
        frame = camera.read(timeout_s=2.0)
        np.testing.assert_array_equal(frame.rgb, rendered.rgb[i])
        assert frame.depth_mm is not None
        assert frame.timestamp_s == pytest.approx(stamp, abs=1e-6)
        # identical intrinsics and identity extrinsics: rs.align maps every depth pixel's footprint back onto
        # itself, so most pixels come back exact; its rounding leaves a few holes (0 = no reading) and lets the
        # nearer surface win at edges
        got, truth = frame.depth_mm.astype(np.int64), rendered.depth[i].astype(np.int64)
        assert np.mean(got == truth) > 0.9
        has_depth = got > 0
        assert has_depth.mean() > 0.93
        assert np.mean(np.abs(got - truth)[has_depth] <= 5) > 0.98
    assert not np.array_equal(rendered.rgb[0], rendered.rgb[1])  # the two views really differ


def _close_intrinsics(a: CameraIntrinsics, b: CameraIntrinsics) -> bool:
    """Equal up to pyrealsense2's float32 storage."""
    return (a.width, a.height) == (b.width, b.height) and np.allclose(
        [a.fx, a.fy, a.cx, a.cy], [b.fx, b.fy, b.cx, b.cy], rtol=1e-6, atol=1e-4
    )


def test_intrinsics_come_from_the_stream_profile(
    camera: RealSenseCamera, context: rs.context, rendered: Rendered
) -> None:
    assert _close_intrinsics(camera.intrinsics, rendered.intrinsics)
    assert camera.distortion[0] == "none"
    odd = CameraIntrinsics(width=640, height=480, fx=601.25, fy=603.5, cx=317.75, cy=242.125)
    odd_device = SoftwareRealSense(context, "SIM0003", odd)  # must outlive the pipeline that streams from it
    with RealSenseCamera("SIM0003", context=context) as cam:
        assert _close_intrinsics(cam.intrinsics, odd)
        assert cam.serial == odd_device.serial


def test_depth_of_another_resolution_is_aligned_to_colour(context: rs.context, rendered: Rendered) -> None:
    small = rendered.intrinsics.scaled(320, 240)
    device = SoftwareRealSense(context, "SIM0002", rendered.intrinsics, depth=small)
    with RealSenseCamera("SIM0002", context=context, depth_size=(320, 240)) as cam:
        device.feed(rendered.rgb[1], rendered.depth_small, 5.0)
        frame = cam.read(timeout_s=2.0)
    assert frame.depth_mm is not None
    assert frame.depth_mm.shape == (480, 640)
    truth = rendered.depth[1].astype(np.int64)
    got = frame.depth_mm.astype(np.int64)
    valid = (truth > 0) & (got > 0)
    assert valid.mean() > 0.95
    err = np.abs(got - truth)[valid]
    assert np.median(err) <= 3  # millimetres
    assert np.mean(err < 20) > 0.97


def test_depth_units_other_than_millimetres_are_converted() -> None:
    raw = np.array([[0, 1000, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(depth_to_mm(raw, 0.001), raw)
    np.testing.assert_array_equal(depth_to_mm(raw, 0.0001), [[0, 100, 6554]])
    with pytest.raises(ValueError, match="positive"):
        depth_to_mm(raw, 0.0)


def test_serial_selection(context: rs.context, device: SoftwareRealSense, rendered: Rendered) -> None:
    other = SoftwareRealSense(context, "SIM0009", rendered.intrinsics)
    assert sorted(connected_serials(context)) == ["SIM0001", "SIM0009"]
    with RealSenseCamera("SIM0009", context=context) as cam:
        device.feed(rendered.rgb[0], rendered.depth[0], 1.0)  # the other camera's frame must not arrive here
        other.feed(rendered.rgb[1], rendered.depth[1], 2.0)
        frame = cam.read(timeout_s=2.0)
    assert frame.timestamp_s == pytest.approx(2.0)
    np.testing.assert_array_equal(frame.rgb, rendered.rgb[1])
    with pytest.raises(CameraNotFoundError, match=r"'SIM0404'.*connected: SIM000[19], SIM000[19]"):
        RealSenseCamera("SIM0404", context=context).open()
    with pytest.raises(CameraNotFoundError, match="pass the serial number"):
        RealSenseCamera(None, context=context).open()


def test_no_device_at_all(context: rs.context) -> None:
    with pytest.raises(CameraNotFoundError, match="connected RealSense devices: none"):
        RealSenseCamera(context=context).open()


class Feeder:
    """Feeds the software device at about 20 Hz from a thread while `running` is set."""

    def __init__(self, device: SoftwareRealSense, rendered: Rendered) -> None:
        self.running = threading.Event()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(device, rendered), daemon=True)
        self._thread.start()

    def _loop(self, device: SoftwareRealSense, rendered: Rendered) -> None:
        while not self._quit.is_set():
            if self.running.is_set():
                device.feed(rendered.rgb[0], rendered.depth[0], time.monotonic())
            time.sleep(0.05)

    def stop(self) -> None:
        self._quit.set()
        self._thread.join(timeout=2.0)


def test_timeout_restarts_the_pipeline_a_bounded_number_of_times(
    context: rs.context, device: SoftwareRealSense, rendered: Rendered
) -> None:
    feeder = Feeder(device, rendered)
    try:
        with RealSenseCamera("SIM0001", context=context, reconnect_attempts=2, reconnect_backoff_s=0.05) as cam:
            feeder.running.set()
            assert cam.read(timeout_s=1.0).rgb.shape == (480, 640, 3)
            feeder.running.clear()  # the camera stalls
            time.sleep(0.1)
            t0 = time.monotonic()
            with pytest.raises(CameraTimeoutError, match=r"within 0.2 s, 2 pipeline restart"):
                cam.read(timeout_s=0.2)
            elapsed = time.monotonic() - t0
            assert cam.reconnects == 2
            assert 0.6 <= elapsed < 2.0  # three waits of 0.2 s plus two restarts
            # the stream comes back while the driver is restarting: the read succeeds on the restarted pipeline
            threading.Timer(0.35, feeder.running.set).start()
            t0 = time.monotonic()
            frame = cam.read(timeout_s=0.3)
            assert cam.reconnects >= 3
            assert frame.timestamp_s >= t0 - 0.1
            np.testing.assert_array_equal(frame.rgb, rendered.rgb[0])
    finally:
        feeder.stop()


def test_close_is_clean_and_final(camera: RealSenseCamera, device: SoftwareRealSense, rendered: Rendered) -> None:
    device.feed(rendered.rgb[0], rendered.depth[0], 1.0)
    camera.read(timeout_s=2.0)
    camera.close()
    camera.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        camera.read(timeout_s=0.1)
    camera.open()  # reopening after close works
    device.feed(rendered.rgb[1], rendered.depth[1], 2.0)
    assert camera.read(timeout_s=2.0).timestamp_s == pytest.approx(2.0)


def test_bad_arguments_are_refused(camera: RealSenseCamera) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        camera.read(timeout_s=0.0)
    with pytest.raises(ValueError, match="reconnect_attempts"):
        RealSenseCamera(reconnect_attempts=-1)
