"""The UR5e as the calibration pose source (over the recording mock of ur_rtde, tests/fake_rtde.py), the taught
pose file, and the real-cell `sam2grasp calibrate` argument checks (nothing connects when they fail)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_rtde import manual_driver

from pipeline.cli import main
from robot.calibration_ur5e import UR5ePoseSource, load_pose_file
from robot.kinematics import forward
from robot.sim.config import HOME_Q
from robot.ur5e_config import UR5eConfig


def test_pose_source_moves_with_movej_and_reports_the_flange_pose() -> None:
    robot, ctl = manual_driver(UR5eConfig(host="127.0.0.1", handle_signals=False))
    try:
        source = UR5ePoseSource(robot)
        q = np.asarray(HOME_Q) + np.array([0.1, -0.05, 0.05, 0.1, 0.0, 0.3])
        source.move_to(q)
        moves = [args for name, args in ctl.calls if name == "moveJ"]
        assert len(moves) == 1
        assert np.allclose(moves[0][0], q)
        assert np.allclose(source.flange_pose(), forward(q))
        with pytest.raises(ValueError, match="outside the joint limits"):
            source.move_to(np.array([0.0, 0.0, 4.0, 0.0, 0.0, 0.0]))  # elbow beyond ±π
        assert len([n for n, _ in ctl.calls if n == "moveJ"]) == 1  # the refused pose sent nothing
    finally:
        robot.close()


def test_pose_file(tmp_path: Path) -> None:
    good = tmp_path / "poses.json"
    good.write_text(json.dumps({"poses": [list(HOME_Q)] * 5}))
    assert len(load_pose_file(good)) == 5
    cases = {
        "missing.json": (None, "not found"),
        "bad.json": ("{not json", "not valid JSON"),
        "few.json": (json.dumps({"poses": [list(HOME_Q)] * 3}), "at least 4"),
        "short.json": (json.dumps({"poses": [[0.0] * 5] * 4}), "6 finite joint angles"),
        "degrees.json": (json.dumps({"poses": [[0.0, -90.0, 90.0, -90.0, -90.0, 0.0]] * 4}), "degrees"),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=fragment):
            load_pose_file(path)


def test_real_calibration_needs_robot_and_poses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "c.json")]) == 2
    assert "--robot-ip" in capsys.readouterr().err
    poses = tmp_path / "p.json"
    poses.write_text(json.dumps({"poses": [[0.0, -90.0, 90.0, -90.0, -90.0, 0.0]] * 4}))
    args = ["calibrate", "--robot-ip", "192.0.2.1", "--poses-file", str(poses), "--out", str(tmp_path / "c.json")]
    assert main(args) == 2  # the degrees are refused before any connection is tried
    assert "degrees" in capsys.readouterr().err
