"""Camera faults in the simulated cell through the real runtime (policy-loop step, control tick, safety layer,
perception watch), in simulated time. Stand-ins: the tracker and the head (pipeline.faults.sim_cell; SAM2 and the
ACT head would be too slow here). Times are simulated: camera_timeout_s 0.5 s, max_frame_age_s 0.25 s, 20 Hz."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.faults.core import ScenarioResult
from pipeline.faults.perception import camera_black, camera_frozen, camera_gone, camera_late

torch.set_num_threads(1)
#: camera_timeout_s after the last fresh frame (0.05 s before the fault), plus one tick.
STOP_BOUND_MS = 500.0 + 50.0


def assert_safe(r: ScenarioResult, state: str, reason: str) -> None:
    assert (r.end_state, r.reason) == (state, reason), r.detail
    assert r.stop_called  # robot.stop() ran when the run ended, whatever ended it
    assert r.moved_after_stop == 0
    assert r.limit_violations == 0
    assert r.passed


@pytest.mark.render
@pytest.mark.parametrize("p", [0.4, 0.8])
def test_black_frames_do_not_end_the_run_while_memory_carries_the_target(p: float) -> None:
    r = camera_black(p, ticks=100)
    assert_safe(r, "running", "max_ticks")
    assert r.extra["blacked_frames"] >= p * 100 * 0.7  # the fault really happened
    assert r.extra["holds"] == 0


@pytest.mark.render
def test_frozen_frames_end_with_camera_lost() -> None:
    r = camera_frozen(1.0)
    assert_safe(r, "stopped", "camera_lost")
    assert "frozen frame" in r.detail
    assert 0.0 < r.safe_stop_ms <= STOP_BOUND_MS


@pytest.mark.render
def test_camera_gone_and_back_within_the_limit_goes_on() -> None:
    r = camera_gone(0.3, "within", "running")
    assert_safe(r, "running", "max_ticks")
    assert r.extra["skipped_frames"] == 6  # 0.3 s of TimeoutError at 20 Hz


@pytest.mark.render
def test_camera_gone_beyond_the_limit_ends_with_camera_lost() -> None:
    r = camera_gone(2.0, "beyond", "stopped")
    assert_safe(r, "stopped", "camera_lost")
    assert "camera timed out" in r.detail
    assert r.safe_stop_ms <= STOP_BOUND_MS


@pytest.mark.render
def test_late_frames_within_the_bound_are_used() -> None:
    r = camera_late(0.1, "late", "running")
    assert_safe(r, "running", "max_ticks")
    assert r.extra["skipped_frames"] <= 2  # only the step back in time when the lag starts


@pytest.mark.render
def test_late_frames_beyond_the_bound_end_with_camera_lost() -> None:
    r = camera_late(0.4, "late", "stopped")
    assert_safe(r, "stopped", "camera_lost")
    assert "late frame" in r.detail
    assert not math.isnan(r.safe_stop_ms)
