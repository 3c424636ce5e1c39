"""Connecting the real cell's parts, each failure turned into a `CellUnavailable` that names the part, the address
or file, and what to check. Nothing here moves the arm; activating the gripper moves its fingers only when the
gripper was not active yet.

Order: the calibration file (read and validated), the arm (probed with time limits before ur_rtde is built, watchdog
set, servo thread started), the camera (opened, its serial checked against the calibration), the gripper
(connected, activated). A part that fails closes the parts connected before it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from pipeline.jobs.cell import CellUnavailable
from pipeline.jobs.real_config import DriverSeams, RealCellConfig
from robot.calibration import CalibrationFileError, CameraCalibration, load_calibration

log = logging.getLogger(__name__)
#: Seconds the gripper may take to activate.
GRIPPER_ACTIVATION_S = 5.0


def require_drivers() -> None:
    """CellUnavailable unless the UR5e, Robotiq and RealSense drivers (and ur_rtde, pyrealsense2) import."""
    try:
        for module in ("robot.ur5e", "robot.robotiq", "robot.realsense"):
            importlib.import_module(module)
    except ImportError as exc:
        raise CellUnavailable(
            f"the ur5e backend needs the drivers robot.ur5e, robot.robotiq and robot.realsense with ur_rtde and "
            f"pyrealsense2 installed: {exc}"
        ) from exc


def read_calibration(path: Path | None) -> CameraCalibration:
    """The validated camera-to-base calibration at `path`; CellUnavailable when it is not given, missing or invalid."""
    if path is None:
        raise CellUnavailable(
            "the ur5e backend needs --calibration PATH: the camera-to-base calibration file written by "
            "`sam2grasp calibrate` (it ties the camera to the robot base and names the camera's serial number)"
        )
    try:
        return load_calibration(path)
    except FileNotFoundError as exc:
        raise CellUnavailable(f"--calibration {path}: {exc}") from exc
    except CalibrationFileError as exc:
        raise CellUnavailable(f"--calibration {path} cannot be used: {exc}") from exc
    except OSError as exc:
        raise CellUnavailable(f"--calibration {path} cannot be read: {exc}") from exc


def connect_arm(config: RealCellConfig, seams: DriverSeams) -> Any:
    """A connected `robot.ur5e.UR5e` (servo thread running, watchdog set); CellUnavailable naming the address."""
    from robot.ur5e import UR5e
    from robot.ur5e_config import UR5eConfig
    from robot.ur5e_connect import probe_controller
    from robot.ur5e_errors import UR5eError

    try:
        ur_config = UR5eConfig(
            host=config.robot_ip,
            connect_timeout_s=config.connect_timeout_s,
            tcp_offset=config.tcp_offset,
            safety=config.safety,
            # the server owns SIGINT/SIGTERM; its shutdown closes the cell (servoStop, stopScript), and an atexit
            # hook of the driver does it too if the process ends another way
            handle_signals=False,
        )
    except ValueError as exc:
        raise CellUnavailable(f"--robot-ip {config.robot_ip!r}: {exc}") from exc
    arm = UR5e(ur_config, factory=seams.rtde_factory, probe=seams.probe or probe_controller)
    try:
        arm.connect()
    except UR5eError as exc:
        raise CellUnavailable(
            f"the UR5e at {ur_config.host} is not available: {exc}. Nothing was moved; check the address, the "
            "network and the controller (powered on, remote control, no program running)"
        ) from exc
    return arm


def open_camera(config: RealCellConfig, seams: DriverSeams, calibration: CameraCalibration) -> Any:
    """An open `robot.realsense.RealSenseCamera` for the calibrated camera; CellUnavailable naming the serials."""
    from robot.realsense import CameraNotFoundError, RealSenseCamera

    serial = config.camera_serial or calibration.camera_serial
    if serial != calibration.camera_serial:
        raise CellUnavailable(
            f"camera {serial!r} was asked for, but --calibration {config.calibration} is for camera "
            f"{calibration.camera_serial!r}: calibrate this camera or pass the file made for it"
        )
    camera = RealSenseCamera(
        serial,
        width=config.width,
        height=config.height,
        fps=config.fps,
        depth=False,
        reconnect_attempts=1,
        reconnect_backoff_s=0.2,
        context=seams.realsense_context,
    )
    try:
        camera.open()
    except CameraNotFoundError as exc:
        raise CellUnavailable(f"the RealSense camera of the calibration is not available: {exc}") from exc
    except RuntimeError as exc:
        raise CellUnavailable(f"RealSense {serial} could not be started: {exc}") from exc
    return camera


def connect_gripper(config: RealCellConfig) -> Any:
    """A connected, activated `robot.robotiq.RobotiqGripper`; CellUnavailable naming the address and port."""
    from robot.robotiq import RobotiqGripper
    from robot.robotiq_errors import RobotiqError

    where = f"{config.gripper_address}:{config.gripper_port}"
    gripper = RobotiqGripper(config.gripper_address, config.gripper_port, connect_timeout_s=config.connect_timeout_s)
    try:
        gripper.connect()
        gripper.activate(GRIPPER_ACTIVATION_S)
    except (RobotiqError, OSError) as exc:
        gripper.close()
        raise CellUnavailable(
            f"the Robotiq gripper at {where} is not available: {exc}. Check that the Robotiq Grippers URCap runs "
            "on the controller"
        ) from exc
    return gripper


def close_quietly(part: Any, what: str) -> None:
    """`part.close()`, logging (not raising) a failure; None is skipped."""
    if part is None:
        return
    try:
        part.close()
    except Exception:
        log.exception("closing the %s failed", what)
