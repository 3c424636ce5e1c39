"""The durable job journal (pipeline.jobs.journal): replay after a stop, a torn last line, damage that must be a
clear error, compaction, the directory lock; and the runner and the API writing to it (the runner on
`ScriptedCell`, the TEST DOUBLE cell of tests/test_jobs.py; no simulation here)."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_jobs import PhraseLocator, ScriptedCell, parse_any, wait_for

from api.app import create_app
from api.config import ApiConfig
from pipeline.jobs.cell import CellUnavailable
from pipeline.jobs.grounding_port import Grounding
from pipeline.jobs.journal import (
    INTERRUPTED,
    JOURNAL_NAME,
    JobJournal,
    JournalError,
    ServerEventKind,
    read_journal,
)
from pipeline.jobs.runner import JobRunner
from pipeline.jobs.state import (
    Controller,
    Job,
    JobState,
    Placement,
    SequenceRef,
    StoredCandidate,
    Target,
    continue_job_ids,
    new_job_id,
)

TOKEN = "journal-test-token-0123456789"


def make_job(
    command: str = "pick the red cube", sequence: SequenceRef | None = None, placement: Placement | None = None
) -> Job:
    return Job(command, command, Controller.EXPERT, placement or Placement(), sequence=sequence)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_keeps_ended_jobs_and_turns_unfinished_ones_into_interrupted(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    assert journal.open().jobs == ()
    done = make_job(sequence=SequenceRef("s1-abc", 0, 2), placement=Placement(None, (0.3, 0.4, 0.15)))
    done.target = Target("red cube", (1.0, 2.0, 30.0, 40.0), 0.9, "red_cube_0")
    done.enter(JobState.GROUNDING)
    done.enter(JobState.SUCCEEDED)
    lifting = make_job("pick the green can")
    choosing = make_job("pick the blue ball")
    choosing.ask_choice((StoredCandidate((1.0, 2.0, 3.0, 4.0), 0.5, "blue ball"),), "ambiguous")
    journal.record_all([done, lifting, choosing])
    for state in (JobState.GROUNDING, JobState.TRACKING, JobState.GRASPING, JobState.LIFTING):
        lifting.enter(state)
        journal.record(lifting)
    journal.close()  # as a SIGKILL leaves it: no stop event, two jobs unfinished

    again = JobJournal(tmp_path)
    replay = again.open()
    again.close()
    by_id = {s.id: s for s in replay.jobs}
    assert [s.id for s in replay.jobs] == [done.id, lifting.id, choosing.id]  # creation order
    assert set(replay.interrupted) == {lifting.id, choosing.id}
    assert by_id[done.id] == done.snapshot()  # an ended job comes back as it was
    got = by_id[lifting.id]
    assert (got.state, got.reason) == (JobState.FAILED, INTERRUPTED)
    assert "while this job was lifting" in got.detail
    assert (got.command, got.created_at, got.candidates) == (lifting.command, lifting.created_at, lifting.candidates)
    assert [k for k, _ in got.timings] == ["queued", "grounding", "tracking", "grasping", "lifting"]
    assert "while this job was needs_choice" in by_id[choosing.id].detail
    restored = Job.restore(by_id[choosing.id]).to_json()
    assert restored["state"] == "failed"
    assert restored["reason"] == INTERRUPTED
    assert restored["candidates"] == [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "phrase": "blue ball"}]
    # the replayed file holds the interrupted state, so a third start reports nothing new
    third = JobJournal(tmp_path)
    assert third.open().interrupted == ()
    third.close()


def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = JobJournal(tmp_path)
    journal.open()
    job = make_job()
    journal.record(job)
    job.enter(JobState.GROUNDING)
    journal.record(job)
    journal.close()
    path = tmp_path / JOURNAL_NAME
    whole = path.read_bytes()
    job.enter(JobState.TRACKING)
    torn = whole + json.dumps({"v": 1, "kind": "job", "job": {"id": job.id}}).encode()[:25]  # killed mid-write
    path.write_bytes(torn)
    reopened = JobJournal(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pipeline.jobs.journal"):
        replay = reopened.open()
    reopened.close()
    assert "torn last line" in caplog.text
    assert replay.torn_last_line
    (got,) = replay.jobs
    assert got.reason == INTERRUPTED
    assert "while this job was grounding" in got.detail  # the last whole line
    assert all(isinstance(doc, dict) for doc in lines(path))  # rewritten without the torn bytes


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"v":1,"kind":"server","event":{"kind":"start","at":1.0,"pid":1}}\nnot json\n{}\n', "line 2: not a JSON"),
        (b'{"v":1,"kind":"job","job":{"id":"j1"}}\n\n', "line 1: job.command: Field required"),
        (b'{"v":2,"kind":"job","job":{}}\n{}\n', "line 1: format version 2"),
        (b'{"v":1,"kind":"jobs"}\n{}\n', "line 1: field 'kind' is 'jobs'; valid: 'job' or 'server'"),
        (b'\xff\xfe{"v":1}\n{}\n', "line 1: not a JSON line"),
    ],
)
def test_damage_other_than_a_torn_last_line_is_a_clear_error(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(content)
    with pytest.raises(JournalError) as caught:
        JobJournal(tmp_path).open()
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)
    assert path.read_bytes() == content  # nothing rewritten
    JobJournal(tmp_path).close()  # and the directory lock was released


def test_a_field_of_the_wrong_kind_names_the_valid_values(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    journal.open()
    journal.record(make_job())
    journal.close()
    path = tmp_path / JOURNAL_NAME
    docs = lines(path)
    number = next(i for i, d in enumerate(docs, start=1) if d["kind"] == "job")
    docs[number - 1]["job"]["state"] = "flying"  # type: ignore[index]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    with pytest.raises(JournalError, match=rf"line {number}: job\.state: Input should be 'queued', 'grounding'"):
        read_journal(path)


def test_unreadable_journal_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).mkdir()
    with pytest.raises(JournalError, match=f"{tmp_path / JOURNAL_NAME}: cannot be read"):
        JobJournal(tmp_path).open()


def test_compaction_keeps_the_last_jobs_on_start_and_while_running(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path, keep=3)
    journal.open()
    jobs = [make_job(f"pick the red cube {i}") for i in range(10)]
    for job in jobs:
        journal.record(job)
        job.enter(JobState.FAILED, "no_match")
        journal.record(job)
    journal.close()
    reopened = JobJournal(tmp_path, keep=3)
    replay = reopened.open()
    reopened.close()
    assert [s.id for s in replay.jobs] == [j.id for j in jobs[-3:]]
    path = tmp_path / JOURNAL_NAME
    assert sum(1 for d in lines(path) if d["kind"] == "job") == 3
    # while running: a long-lived server rewrites the file once it grows past 16 lines per kept job
    live = make_job("pick the green can")
    running = JobJournal(tmp_path / "live", keep=2)
    running.open()
    running.record(live)  # an unfinished job is never dropped
    for i in range(200):
        job = make_job(f"pick {i}")
        job.enter(JobState.STOPPED, "stop_requested")
        running.record(job)
    running.close()
    docs = lines(tmp_path / "live" / JOURNAL_NAME)
    assert len(docs) <= 16 * 2 + 4
    assert live.id in {d["job"]["id"] for d in docs if d["kind"] == "job"}  # type: ignore[index]


def test_a_second_server_cannot_take_the_directory(tmp_path: Path) -> None:
    first = JobJournal(tmp_path)
    first.open()
    with pytest.raises(JournalError, match="in use by another sam2grasp server"):
        JobJournal(tmp_path).open()
    first.close()
    second = JobJournal(tmp_path)
    second.open()
    second.close()


def test_runner_shutdown_interrupts_the_running_and_waiting_jobs(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    journal.open()
    cell = ScriptedCell(pick_s=30.0)
    runner = JobRunner(cell, Grounding(parse_any, PhraseLocator(), "test"), capacity=3, journal=journal)
    runner.start()
    try:
        running, waiting = runner.submit("pick a then b")
        wait_for(lambda: cell.moving.is_set(), 10)
        signal_at = time.monotonic()
        report = runner.shutdown("SIGTERM", signal_at)
        assert report.interrupted == (running.id, waiting.id)
        assert report.signal_to_halt_s is not None
        assert cell.halts == 1
        assert running.to_json()["reason"] == INTERRUPTED
        assert "while this job was tracking" in running.detail
        wait_for(lambda: not cell.moving.is_set(), 10)
        assert running.state == JobState.FAILED  # the halted pick did not turn it into "stopped"
        assert (waiting.state, waiting.reason) == (JobState.FAILED, INTERRUPTED)  # never started
        assert [start for start, _ in cell.log].count("start") == 1
        with pytest.raises(CellUnavailable, match="shutting down"):
            runner.submit("pick c")
        assert runner.shutdown("again") is report
    finally:
        runner.close()
        journal.close()
    replay = read_journal(tmp_path / JOURNAL_NAME)
    assert [(s.id, s.state, s.reason) for s in replay.jobs] == [
        (running.id, JobState.FAILED, INTERRUPTED),
        (waiting.id, JobState.FAILED, INTERRUPTED),
    ]
    stop = replay.last_stop
    assert stop is not None
    assert stop.kind == ServerEventKind.STOP
    assert (stop.cause, stop.interrupted) == ("SIGTERM", (running.id, waiting.id))


def test_api_journals_a_pick_before_answering_and_lists_restored_jobs(tmp_path: Path) -> None:
    config = ApiConfig(token=TOKEN, token_file=None, controller=Controller.EXPERT, state_dir=tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cell = ScriptedCell(pick_s=30.0)
    grounding = Grounding(parse_any, PhraseLocator(), "test")
    with TestClient(create_app(config, cell=cell, grounding=grounding)) as client:
        r = client.post("/pick", json={"command": "pick the red cube"}, headers=auth)
        assert r.status_code == 202
        job = r.json()
        ids = [d["job"]["id"] for d in lines(tmp_path / JOURNAL_NAME) if d["kind"] == "job"]  # type: ignore[index]
        assert job["id"] in ids
        wait_for(lambda: cell.moving.is_set(), 10)
    # leaving the client closed the app: the running job was ended as interrupted and journaled
    cell2 = ScriptedCell()
    with TestClient(create_app(config, cell=cell2, grounding=grounding)) as client:
        got = client.get(f"/jobs/{job['id']}").json()
        assert (got["state"], got["reason"]) == ("failed", INTERRUPTED)
        assert (got["command"], got["created_at"]) == (job["command"], job["created_at"])
        assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == [job["id"]]
        r = client.post("/pick", json={"command": "pick the green can"}, headers=auth)
        new = r.json()
        wait_for(lambda: client.get(f"/jobs/{new['id']}").json()["state"] == "succeeded", 10)


def test_ids_count_on_past_restored_ones() -> None:
    continue_job_ids(["j1000000-abcdef", "s999-123456", "not-an-id"])
    assert new_job_id().startswith("j1000001-")
    continue_job_ids(["j5-abcdef"])  # never backwards
    assert new_job_id().startswith("j1000002-")


def test_a_full_disk_refuses_the_job_and_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = JobJournal(tmp_path)
    journal.open()
    cell = ScriptedCell()
    runner = JobRunner(cell, Grounding(parse_any, PhraseLocator(), "test"), capacity=3, journal=journal)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 40:
            return real_write(fd, data[:40])  # part of the line reaches the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pipeline.jobs.journal.os.write", full_disk)
    with pytest.raises(CellUnavailable, match=r"No space left on device.*not queued"):
        runner.submit("pick a")
    monkeypatch.undo()
    assert len(runner.queue) == 0
    assert runner.jobs() == []
    journal.close()
    assert all(d["kind"] == "server" for d in lines(tmp_path / JOURNAL_NAME))  # whole lines only, no job
