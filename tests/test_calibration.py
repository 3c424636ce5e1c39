"""Camera-to-base calibration: the JSON file's validation, the robot-world / hand-eye solver on exact synthetic
data, and the whole ChArUco routine on rendered views of a board on the simulated cell's flange, measured
against the camera's true pose."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli import main
from robot.calibration import (
    FORMAT_VERSION,
    CalibrationCameraMismatchError,
    CalibrationFormatError,
    CalibrationUnitsError,
    CalibrationVersionError,
    NotARotationError,
    load_calibration,
    parse_calibration,
    save_calibration,
)
from robot.calibration_routine import ArmPoseSource, pose_error, run_calibration
from robot.calibration_sim import SimBoardCell
from robot.calibration_solve import CalibrationSolveError, solve_camera_to_base
from robot.charuco import BoardPose, BoardSpec, pose_matrix, project_points
from robot.intrinsics import D435_COLOUR_640x480
from robot.protocols import Camera

T_GOOD = pose_matrix([2.0, -0.3, 0.5], [1.2, 0.05, 0.7])


def _doc(**override: object) -> str:
    doc: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "camera_serial": "123456789012",
        "T_base_camera": T_GOOD.tolist(),
        "reprojection_rms_px": 0.3,
        "date": "2026-11-28T09:00:00+00:00",
        "n_views": 12,
    }
    doc.update(override)
    return json.dumps(doc)


# ------------------------------------------------------------------ file format
def test_file_round_trips(tmp_path: Path) -> None:
    cal = parse_calibration(_doc())
    path = save_calibration(tmp_path / "sub" / "cal.json", cal)
    back = load_calibration(path, expected_serial="123456789012")
    np.testing.assert_allclose(back.T_base_camera, T_GOOD, atol=1e-15)
    assert (back.camera_serial, back.n_views, back.reprojection_rms_px) == ("123456789012", 12, 0.3)
    assert [p.name for p in path.parent.iterdir()] == ["cal.json"]  # no temporary file left behind


def test_non_orthonormal_rotation_is_refused() -> None:
    t = T_GOOD.copy()
    t[:3, :3] *= 1.01
    with pytest.raises(NotARotationError, match="not orthonormal"):
        parse_calibration(_doc(T_base_camera=t.tolist()))


def test_mirror_matrix_is_refused() -> None:
    t = T_GOOD.copy()
    t[:3, 0] *= -1.0  # orthonormal, determinant -1
    with pytest.raises(NotARotationError, match="determinant -1"):
        parse_calibration(_doc(T_base_camera=t.tolist()))


def test_millimetres_written_as_metres_are_refused() -> None:
    t = T_GOOD.copy()
    t[:3, 3] *= 1000.0
    with pytest.raises(CalibrationUnitsError, match=r"millimetres\? then it is 1.39 m"):
        parse_calibration(_doc(T_base_camera=t.tolist()))


def test_wrong_version_is_refused() -> None:
    with pytest.raises(CalibrationVersionError, match="version 2 is not supported; this build reads version 1"):
        parse_calibration(_doc(format_version=2))


def test_file_for_another_camera_is_refused() -> None:
    with pytest.raises(CalibrationCameraMismatchError, match=r"'123456789012'.*'999'"):
        parse_calibration(_doc(), expected_serial="999")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "one JSON object"),
        (_doc(T_base_camera=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "4x4"),
        (_doc(T_base_camera=[[1, 0], [0]]), "4 rows of 4"),
        (_doc(date="yesterday"), "ISO 8601"),
        (_doc(date="2026-11-28T09:00:00"), "time zone"),
        (_doc(reprojection_rms_px=-1.0), "reprojection_rms_px"),
        (_doc(camera_serial=12), "camera_serial"),
        (json.dumps({"format_version": 1}), "lacks the field 'camera_serial'"),
    ],
)
def test_malformed_files_are_refused(text: str, match: str) -> None:
    with pytest.raises(CalibrationFormatError, match=match):
        parse_calibration(text)


def test_bad_last_row_is_refused() -> None:
    t = T_GOOD.copy()
    t[3, 0] = 0.5
    with pytest.raises(CalibrationFormatError, match="last row"):
        parse_calibration(_doc(T_base_camera=t.tolist()))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sam2grasp calibrate"):
        load_calibration(tmp_path / "none.json")


# ------------------------------------------------------------------ solver on exact data
def _synthetic(
    n: int, rng: np.random.Generator, axes: str = "any"
) -> tuple[list[np.ndarray], list[BoardPose], np.ndarray]:
    intr = D435_COLOUR_640x480
    z = pose_matrix([2.2, 0.1, -0.4], [1.1, 0.1, 0.7])  # base <- camera
    x = pose_matrix([0.1, 3.0, 0.2], [-0.09, 0.07, 0.18])  # flange <- board
    board = BoardSpec()
    obj = np.asarray(board.cv_board().getChessboardCorners(), dtype=np.float64)
    flanges: list[np.ndarray] = []
    views: list[BoardPose] = []
    cam_from_base = np.linalg.inv(z)
    while len(views) < n:
        rvec = rng.normal(size=3) * 0.5 if axes == "any" else np.array([0.0, 0.0, rng.normal()])
        # a flange pose that keeps the board about 0.6 m in front of the camera
        t_cam_board = pose_matrix(rvec, [rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.5, 0.7)])
        t_cam_board[:3, :3] = cv2.Rodrigues(np.array([np.pi, 0.0, 0.0]))[0] @ t_cam_board[:3, :3]
        a = z @ t_cam_board @ np.linalg.inv(x)
        b = cam_from_base @ a @ x
        px = project_points(obj, b, intr)
        views.append(BoardPose(b, px, obj, 0.0))
        flanges.append(a)
    return flanges, views, z


def test_solver_recovers_exact_transforms() -> None:
    flanges, views, z = _synthetic(8, np.random.default_rng(0))
    sol = solve_camera_to_base(flanges, views, D435_COLOUR_640x480)
    mm, deg = pose_error(sol.T_base_camera, z)
    assert mm < 1e-3
    assert deg < 1e-4
    assert sol.rms_px < 1e-4


def test_solver_refuses_too_few_or_degenerate_views() -> None:
    flanges, views, _ = _synthetic(3, np.random.default_rng(1))
    with pytest.raises(CalibrationSolveError, match="at least 4 views"):
        solve_camera_to_base(flanges, views, D435_COLOUR_640x480)
    flanges, views, _ = _synthetic(6, np.random.default_rng(2), axes="z")
    with pytest.raises(CalibrationSolveError, match="two different axes"):
        solve_camera_to_base(flanges, views, D435_COLOUR_640x480)


# ------------------------------------------------------------------ the routine on rendered views
@pytest.fixture(scope="module")
def cell() -> Iterator[SimBoardCell]:
    with SimBoardCell(seed=0) as c:
        yield c


@pytest.mark.render
def test_calibration_on_rendered_views_matches_the_true_camera_pose(cell: SimBoardCell, tmp_path: Path) -> None:
    assert isinstance(cell, ArmPoseSource)
    assert isinstance(cell, Camera)
    poses = cell.board_facing_poses(12, seed=1)
    run = run_calibration(cell, cell, poses, "SIM-FRONT-0")
    mm, deg = pose_error(run.calibration.T_base_camera, cell.true_camera_pose())
    print(f"calibration error: {mm:.3f} mm, {deg:.4f} deg, RMS {run.calibration.reprojection_rms_px:.3f} px")
    assert run.views_used == 12
    assert mm < 2.0
    assert deg < 0.2
    assert run.calibration.reprojection_rms_px < 0.5
    # the board sits BOARD_OFFSET_M in front of the flange, facing away from it
    assert run.T_flange_board[2, 3] == pytest.approx(0.18, abs=0.002)
    assert run.T_flange_board[2, 2] == pytest.approx(-1.0, abs=1e-3)
    path = save_calibration(tmp_path / "cal.json", run.calibration)
    assert load_calibration(path, expected_serial="SIM-FRONT-0").n_views == 12


@pytest.mark.render
def test_calibration_fails_clearly_when_the_board_is_not_seen(cell: SimBoardCell) -> None:
    away = [np.array([0.3 * i, -1.2, 1.0, -1.0, -1.57, 0.0]) for i in range(5)]  # the board faces the ceiling
    with pytest.raises(CalibrationSolveError, match="detected in 0 of 5 poses"):
        run_calibration(cell, cell, away, "SIM-FRONT-0")


def test_board_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="smaller than square_m"):
        BoardSpec(marker_m=0.04)
    with pytest.raises(ValueError, match="unknown ArUco dictionary"):
        BoardSpec(dictionary="DICT_9X9_7")
    assert BoardSpec().image(px_per_square=50).shape == (300, 350)


# ------------------------------------------------------------------ command line
def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["calibrate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "sam2grasp calibrate --sim --out" in out
    assert "--check" in out


@pytest.mark.render
def test_cli_calibrates_the_simulated_cell_and_checks_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--sim", "--poses", "8", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["views_used"] == 8
    assert report["error_translation_mm"] < 3.0
    assert report["error_rotation_deg"] < 0.3
    assert main(["calibrate", "--check", str(out), "--serial", report["camera_serial"], "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["valid"] is True
    assert checked["T_base_camera"] == report["T_base_camera"]
    assert main(["calibrate", "--check", str(out), "--serial", "other"]) == 2
    assert "is for camera" in capsys.readouterr().err


def test_cli_without_sim_or_check_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--out", "x.json"]) == 2
    assert "pass --sim" in capsys.readouterr().err
