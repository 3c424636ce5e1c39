"""`sam2grasp record` end to end in the simulated cell: the scripted expert plays the hand moving the arm in teach
mode, keys come from a script (or stdin), and the dataset must pass `check_dataset`."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.cli_robot import parse_box
from pipeline.dataset.check import check_dataset
from pipeline.dataset.layout import scan_episode_files
from pipeline.dataset.reader import Dataset
from pipeline.record import RealRecordCell, ScriptedKeys, SimRecordCell, StdinKeys, record


def keys(*parts: tuple[str | None, int]) -> ScriptedKeys:
    seq: list[str | None] = []
    for key, n in parts:
        seq += [key] * n
    return ScriptedKeys(seq)


def test_teach_recording_saves_whole_episodes_and_discards_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "teach"
    cell = SimRecordCell(target=None, seed=3, width=64, height=48, period_s=0.05)
    script = keys(("s", 1), (None, 20), ("e", 1), ("s", 1), (None, 10), ("d", 1), ("s", 1), (None, 15), ("e", 1))
    said: list[str] = []
    report = record(out, cell, script, say=said.append)
    assert report.saved == (0, 1)
    assert report.discarded == 1
    assert report.frames == 21 + 16
    assert not cell.teach  # teach mode left at the end
    check = check_dataset(out)
    assert check.ok, check.problems
    assert (check.episodes, check.frames) == (2, 37)
    indexed, temps = scan_episode_files(out)
    assert temps == []
    assert {i for i, _ in indexed} == {0, 1}  # the discarded take wrote nothing
    ds = Dataset(out)
    assert ds.fps == pytest.approx(20.0)
    ep = ds.load_episode(0, images=False)
    states, actions = ep.state, ep.action
    np.testing.assert_allclose(actions[:-1], states[1:])  # the action is the next measured state
    assert np.abs(states[-1] - states[0]).max() > 0.01  # the hand really moved the arm
    assert any("discarded" in s for s in said)
    # each episode records its scene's camera (begin set up seed 3, the takes used 4, 5 (discarded) and 6)
    for index, seed in ((0, 4), (1, 6)):
        view = ds.episode_meta(index).camera
        assert view is not None
        assert (view.intrinsics.width, view.intrinsics.height) == (64, 48)
        cell.env.reset(seed)
        np.testing.assert_allclose(view.T_base_camera, cell.env.camera_view().T_base_camera, atol=1e-9)


def test_the_real_cell_records_its_calibrated_camera_and_none_without_a_calibration() -> None:
    from robot.calibration import CameraCalibration
    from robot.camera_view import CameraView
    from robot.intrinsics import D435_COLOUR_640x480
    from robot.sim.scene import CAMERA_POSITION, CAMERA_TARGET

    truth = CameraView.from_look_at(CAMERA_POSITION, CAMERA_TARGET, D435_COLOUR_640x480)
    calibration = CameraCalibration("123456789012", truth.T_base_camera, 0.3, "2026-11-29T09:00:00+00:00")
    plain = RealRecordCell("10.0.0.2", (1, 2, 30, 40), "red cup")  # constructing connects to nothing
    assert plain.camera_view() is None
    cell = RealRecordCell("10.0.0.2", (1, 2, 30, 40), "red cup", calibration=calibration)
    assert cell.camera.requested_serial == "123456789012"  # the calibrated camera is the one opened
    cell.camera = SimpleNamespace(intrinsics=D435_COLOUR_640x480)  # type: ignore[assignment]  # an open RealSense
    view = cell.camera_view()
    assert view is not None
    assert view.intrinsics == D435_COLOUR_640x480
    np.testing.assert_allclose(view.T_base_camera, truth.T_base_camera)


def test_quit_discards_the_episode_in_progress_and_episodes_limit_stops(tmp_path: Path) -> None:
    cell = SimRecordCell(seed=1, width=32, height=24, period_s=0.05)
    report = record(tmp_path / "a", cell, keys(("s", 1), (None, 3), ("q", 1)), say=lambda s: None)
    assert (report.saved, report.discarded) == ((), 1)
    assert check_dataset(tmp_path / "a").episodes == 0
    cell = SimRecordCell(seed=1, width=32, height=24, period_s=0.05)
    report = record(
        tmp_path / "b", cell, keys(("s", 1), (None, 2), ("e", 1), ("s", 1), ("e", 1)), episodes=1, say=lambda s: None
    )
    assert report.saved == (0,)


def test_record_command_reads_keys_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("x\ns\ne\nq\n"))
    out = tmp_path / "cli"
    args = ["record", "--robot", "sim", "--camera", "sim", "--out", str(out), "--width", "32", "--height", "24"]
    assert main([*args, "--json"]) == 0
    report = check_dataset(out)
    assert report.ok, report.problems
    assert report.episodes == 1


def test_stdin_keys_end_of_input_is_quit() -> None:
    source = StdinKeys(io.StringIO("s\n"))
    assert source.poll(1.0) == "s"
    assert source.poll(1.0) == "q"


def test_record_arguments_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["record", "--out", str(tmp_path / "x")]
    assert main([*base, "--robot", "sim", "--camera", "realsense"]) == 2
    assert "valid: sim+sim, ur5e+realsense" in capsys.readouterr().err
    assert main([*base, "--robot", "sim", "--camera", "sim", "--box", "1,2,30,40"]) == 2
    assert "--target" in capsys.readouterr().err
    assert main([*base, "--robot", "ur5e", "--camera", "realsense"]) == 2
    assert "--host" in capsys.readouterr().err
    assert parse_box("1,2,30,40") == (1.0, 2.0, 30.0, 40.0)
    with pytest.raises(ValueError, match="four numbers"):
        parse_box("1,2,3")
    with pytest.raises(ValueError, match="x0 < x1"):
        parse_box("30,2,1,40")
    with pytest.raises(SystemExit):
        main([*base, "--robot", "sim", "--camera", "sim", "--box", "1,2,3,4", "--target", "red cube"])
    assert main([*base, "--robot", "sim", "--camera", "sim", "--calibration", str(tmp_path / "c.json")]) == 2
    assert "simulated cell records its own scene camera" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    real = [*base, "--robot", "ur5e", "--camera", "realsense", "--host", "10.0.0.2", "--calibration", str(bad)]
    assert main(real) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err  # the file is named
    assert "lacks the field" in err  # and its flaw
