"""The real cell (UR5e over ur_rtde, Robotiq 2F-85 over the URCap socket, RealSense camera) for `serve --backend
ur5e`. The drivers are imported only here, so the simulated product runs without them."""

from __future__ import annotations

import importlib

from pipeline.jobs.cell import Cell, CellUnavailable


def connect_real_cell(robot_ip: str | None, camera: str) -> Cell:
    """Connect the real arm, gripper and camera. Raises CellUnavailable saying what is missing."""
    if not robot_ip:
        raise CellUnavailable("the ur5e backend needs --robot-ip ADDRESS (the UR controller's address)")
    if camera != "realsense":
        raise CellUnavailable(f"camera {camera!r} is not supported; valid: realsense")
    try:
        for module in ("robot.ur5e", "robot.robotiq", "robot.realsense"):
            importlib.import_module(module)
    except ImportError as exc:
        raise CellUnavailable(
            f"the ur5e backend needs the drivers robot.ur5e, robot.robotiq and robot.realsense with ur_rtde and "
            f"pyrealsense2 installed: {exc}"
        ) from exc
    raise CellUnavailable(
        "the real-cell job session is not wired in this version: the drivers import, but picking on the real "
        "UR5e through the API is not implemented yet; use --backend sim"
    )
