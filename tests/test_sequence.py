"""Sequence documents: what is accepted, and that every mistake is refused with an error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.jobs.state import Controller
from pipeline.sequence import SequenceError, from_commands, load_sequence, parse_sequence_text

GOOD = """
name: tidy
controller: expert
steps:
  - command: pick the red cup
  - command: pick the left green cube
    place: {position: [0.3, 0.4, 0.15]}
    retries: 2
    stop_on_failure: false
  - pick the blue can
"""


def test_a_full_document_is_read() -> None:
    doc = parse_sequence_text(GOOD)
    assert doc.name == "tidy"
    assert doc.controller == Controller.EXPERT
    first, second, third = doc.steps
    assert first.placement.zone == "bin"
    assert first.retries == 0
    assert first.stop_on_failure
    assert second.placement.position == (0.3, 0.4, 0.15)
    assert second.placement.zone is None
    assert second.retries == 2
    assert not second.stop_on_failure
    assert third.command == "pick the blue can"


def test_files_and_plain_commands(tmp_path: Path) -> None:
    path = tmp_path / "seq.yaml"
    path.write_text(GOOD)
    assert len(load_sequence(path).steps) == 3
    assert [s.command for s in from_commands(["pick the red cup", "pick the blue can"]).steps] == [
        "pick the red cup",
        "pick the blue can",
    ]
    with pytest.raises(FileNotFoundError):
        load_sequence(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [", "not valid YAML at line"),
        ("- pick the red cup", "must be a mapping"),
        ("steps: []", "non-empty list"),
        ("steps: [{command: pick the red cup}]\nspeed: 3", "unknown field(s) 'speed'"),
        ("steps: [{command: ''}]", "steps[0].command must be non-empty"),
        ("steps: [{command: pick it, retries: 9}]", "steps[0].retries must be a whole number 0..5"),
        ("steps: [{command: pick it, retries: true}]", "retries must be a whole number"),
        ("steps: [{command: pick it, stop_on_failure: maybe}]", "stop_on_failure must be true or false"),
        ("steps: [{command: pick it, place: shelf}]", "zone must be one of bin"),
        ("steps: [{command: pick it, place: {position: [2, 0, 0.1]}}]", "outside the safety workspace"),
        ("steps: [{command: pick it, place: {position: [0.3, 0, 0.9]}}]", "release height"),
        ("steps: [{command: pick it, place: {position: [0.3, 0]}}]", "3 numbers"),
        ("steps: [{command: pick it, place: {zone: bin, position: [0.3, 0.2, 0.1]}}]", "exactly one of"),
        ("controller: robot\nsteps: [pick it]", "controller must be one of method, expert"),
        ("steps: [{command: pick it, colour: red}]", "steps[0] has unknown field(s) 'colour'"),
    ],
)
def test_mistakes_are_refused_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(SequenceError) as err:
        parse_sequence_text(text)
    assert message in str(err.value)


def test_size_and_step_limits() -> None:
    with pytest.raises(SequenceError, match="at most 50"):
        parse_sequence_text("steps:\n" + "  - pick the red cup\n" * 51)
    with pytest.raises(SequenceError, match="larger than"):
        parse_sequence_text("name: " + "x" * 70_000)


@pytest.mark.slow
@pytest.mark.render
def test_sequence_command_runs_a_file_and_exits_with_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sam2grasp sequence FILE` on the simulated cell with the scripted expert (grounding: the tests' stand-in)."""
    import json

    from fake_grounding import fake_grounding

    from pipeline import cli_product
    from pipeline.cli import main

    monkeypatch.setattr(cli_product, "grounding_for", lambda cell, backend: fake_grounding(cell))
    good = tmp_path / "good.yaml"
    good.write_text("controller: expert\nsteps:\n  - pick the red ball\n  - command: pick the blue cube\n")
    args = ["--objects", "red ball,green can", "--seed", "3", "--json"]
    assert main(["sequence", str(good), *args]) == 1  # the blue cube is not there: a failed pick exits 1
    report = json.loads(capsys.readouterr().out)
    assert [j["state"] for j in report["jobs"]] == ["succeeded", "failed"]
    assert report["jobs"][1]["reason"] == "no_match"
    one = tmp_path / "one.yaml"
    one.write_text("steps: [pick the green can]\n")
    assert main(["sequence", str(one), "--controller", "expert", *args]) == 0
    assert json.loads(capsys.readouterr().out)["succeeded"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [{command: pick it, retries: 99}]\n")
    assert main(["sequence", str(bad)]) == 2
    assert "retries" in capsys.readouterr().err
