"""SIGTERM and SIGKILL of the real server (`python -m pipeline.cli serve --backend sim`, the project's compact
grounder, the scripted expert) while a pick moves the simulated arm, each followed by a restart on the same
--state-dir: the job must be reported as failed with reason "interrupted" under its id, command and creation
time, never lost, and a new pick must succeed.

One chained test, because every server start loads the grounder (tens of seconds on 2 cores): start, pick,
SIGTERM; restart, check, pick, SIGKILL; restart, check both jobs, pick to success. Timeouts are generous waits,
never latency assertions (latencies are bench/faults.py's)."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.faults.server_process import FINAL, MOTION, ServerProcess, ServerSettings
from pipeline.jobs.journal import INTERRUPTED, JOURNAL_NAME, read_journal

pytestmark = [pytest.mark.slow, pytest.mark.render]


def check_interrupted(server: ServerProcess, job: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The restarted server reports `job` as failed/interrupted, with what it had before the stop; returns the job
    and the motion state it was interrupted in."""
    got = server.job(str(job["id"]))
    assert (got["state"], got["reason"]) == ("failed", INTERRUPTED), got
    for key in ("id", "command", "created_at", "controller"):
        assert got[key] == job[key], key
    assert {"queued", "grounding", "tracking"} <= set(got["timings"])
    found = re.search(r"while this job was (\w+)", got["detail"])
    assert found is not None, got["detail"]
    assert found.group(1) in MOTION
    return got, found.group(1)


def test_sigterm_and_sigkill_mid_pick_leave_the_job_interrupted_not_lost(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "server.log"
    paced = ServerSettings(state_dir=state, pace=1.0)  # real time: the arm is still moving when the signal comes

    # (a) SIGTERM: the exit path halts the arm, journals the job as interrupted and the server exits
    with ServerProcess(paced, log) as first:
        first.start()
        job1 = first.pick()
        moving1 = first.wait_job(job1["id"], MOTION)
        first.send(signal.SIGTERM)
        status = first.wait_exit(timeout_s=60)
    assert status == 0, first.log_tail()  # the exit path ran to its end (serve returned)
    output = log.read_text()
    assert "SIGTERM: arm halted" in output
    assert "Application shutdown complete" in output
    replay = read_journal(state / JOURNAL_NAME)
    stop = replay.last_stop
    assert stop is not None
    assert (stop.cause, stop.interrupted) == ("SIGTERM", (job1["id"],))
    assert stop.halt_ms is not None
    assert stop.signal_to_halt_ms is not None
    (journaled,) = (s for s in replay.jobs if s.id == job1["id"])
    assert (journaled.state.value, journaled.reason) == ("failed", INTERRUPTED)  # recorded by the exit path
    assert moving1["state"] in MOTION

    # (b) restart on the same state directory: the job is there, interrupted; a new pick runs; then SIGKILL
    with ServerProcess(paced, log) as second:
        second.start()
        _, state1 = check_interrupted(second, job1)
        assert "SIGTERM" in second.job(job1["id"])["detail"]
        listed = second.request("GET", "/jobs")[1]["jobs"]
        assert job1["id"] in [j["id"] for j in listed]
        job2 = second.pick()
        moving2 = second.wait_job(job2["id"], MOTION)
        second.send(signal.SIGKILL)
        assert second.wait_exit(timeout_s=60) == -signal.SIGKILL
    killed = {s.id: s for s in read_journal(state / JOURNAL_NAME).jobs}[job2["id"]]
    assert not killed.done  # nothing ran after the kill to end it

    # (c) restart again: both jobs are reported, the killed one interrupted in the state it was journaled in
    with ServerProcess(ServerSettings(state_dir=state, token=paced.token, pace=0.0), log) as third:
        third.start()
        got2, state2 = check_interrupted(third, job2)
        assert state2 == killed.state.value  # the last state journaled before the kill
        assert "killed" in got2["detail"]
        assert moving2["state"] in MOTION
        assert check_interrupted(third, job1)[1] == state1
        job3 = third.pick()
        assert job3["id"] not in (job1["id"], job2["id"])
        done = third.wait_job(job3["id"], FINAL, timeout_s=600)
        assert done["state"] == "succeeded", done
        third.send(signal.SIGTERM)
        third.wait_exit(timeout_s=60)
