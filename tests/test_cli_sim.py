"""The `sam2grasp` command line over the simulated cell: the demo video and user errors (exit status 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.dataset.video import probe_video
from pipeline.demo import run_demo
from robot.sim.outcome import Outcome


@pytest.mark.render
def test_demo_writes_a_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tmp" / "demo.mp4"
    status = main(["demo", "red cube", "--expert", "--width", "160", "--height", "120", "--out", str(out), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "success"
    assert result["method"].startswith("scripted expert")
    assert result["command"] == "red cube"
    assert result["target"] == "red cube"
    assert result["iou"] >= 0.5  # the grounded box is the red cube's
    assert result["error"] is None
    assert out.is_file()
    assert out.stat().st_size > 0
    info = probe_video(out)
    assert (info.width, info.height) == (160, 120)
    assert info.frames == result["frames"] > 20


def test_demo_with_unknown_colour_names_the_colours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.mp4"
    assert main(["demo", "pink cube", "--width", "160", "--height", "120", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pink" in err
    for colour in ("red", "green", "blue", "yellow", "orange", "purple", "white", "black"):
        assert colour in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.render
def test_demo_refuses_a_command_that_names_nothing_in_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.mp4"
    # a one-object scene holds only the red cube: the reference object is absent, so nothing may move
    args = ["demo", "pick the red cube next to the black box", "--objects", "1", "--expert", "--out", str(out)]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "nothing moved" in printed
    assert "no_match" in printed
    assert "black box" in printed
    assert not out.exists()


def test_demo_with_too_many_objects_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "red cube", "--objects", "9", "--out", str(tmp_path / "d.mp4")]) == 2
    assert "at most 6" in capsys.readouterr().err


def test_demo_with_no_objects_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1"):
        run_demo("red cube", tmp_path / "d.mp4", n_objects=0, width=32, height=24)


@pytest.mark.render
@pytest.mark.slow
def test_demo_runs_the_shipped_models_closed_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Smoke episode of the real method on the committed compact tracker and head (not a success-rate check:
    that is `sam2grasp eval`)."""
    out = tmp_path / "demo.mp4"
    status = main(["demo", "red cube", "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0
    assert result["method"].startswith("SAM2Grasp")
    assert result["outcome"] in {o.value for o in Outcome}  # an outcome of the cell, never failed_input
    info = probe_video(out)
    assert (info.width, info.height) == (320, 240)
    assert info.frames == result["frames"] > 20


def test_collect_with_negative_episodes_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "X"
    assert main(["collect", "--episodes", "-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "episodes" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_console_entry_point_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo", "pink cube", "--out", str(tmp_path / "d.mp4")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "known colours" in result.stderr
