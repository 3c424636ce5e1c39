"""Process faults: SIGKILL during head training (resumes from the last checkpoint), and a full disk while
recording, stood in for by a child process with a file-size limit (RLIMIT_FSIZE; writes past it fail with EFBIG as
a full disk fails with ENOSPC). SIGKILL during collect and cache: tests/test_dataset_kill.py and tests/test_cache.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.faults.process import disk_full_recording, kill_during_train


def test_disk_full_while_recording_is_a_clear_error_and_the_dataset_stays_valid(tmp_path: Path) -> None:
    r = disk_full_recording(tmp_path / "ds")
    assert r.end_state == "error", r.detail
    assert "File too large" in r.detail  # the OS error reaches the caller, naming the file
    assert r.data_intact  # check_dataset passes with the one committed episode, and the next one is added
    assert r.extra["problems"] == []


@pytest.mark.slow
def test_kill_during_training_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    r = kill_during_train(tmp_path / "train")
    assert r.end_state == "resumed", r.detail
    assert r.extra["resumed_at_step"] >= r.extra["killed_at_step"] > 0
    assert r.data_intact  # the finished run's policy loads and its report counts every step
