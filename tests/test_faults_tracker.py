"""Tracker faults in the simulated cell through the real runtime, in simulated time (20 Hz). Stand-ins: the
tracker (it reads the cell's instance map and mimics SAM2's memory: 15 frames carried) and the head (the scripted
expert aimed at the tracked object), see pipeline.faults.sim_cell; the real compact models would be too slow.
Watch defaults: 10 lost frames before the loss action."""

from __future__ import annotations

import pytest
import torch

from pipeline.faults.core import ScenarioResult
from pipeline.faults.perception import (
    tracker_covered_by_arm,
    tracker_drift_reground,
    tracker_leaves_and_returns,
    tracker_leaves_view,
    tracker_twin_swap,
)
from pipeline.runtime.perception_watch import LossAction

torch.set_num_threads(1)
#: Memory carries 15 frames, then 10 lost frames: the loss action runs 25 ticks (1.25 s) after the fault.
LOSS_MS = 25 * 50.0


def assert_safe(r: ScenarioResult, state: str, reason: str) -> None:
    assert (r.end_state, r.reason) == (state, reason), r.detail
    assert r.stop_called
    assert r.moved_after_stop == 0
    assert r.limit_violations == 0
    assert r.passed


@pytest.mark.render
def test_target_leaves_view_fail_ends_at_once() -> None:
    r = tracker_leaves_view(LossAction.FAIL)
    assert_safe(r, "stopped", "tracker_lost")
    assert r.safe_stop_ms == pytest.approx(LOSS_MS, abs=60.0)
    assert r.detect_ms == pytest.approx(r.safe_stop_ms)  # simulated time: stopped on the tick that decided
    assert r.react_ms == 0.0


@pytest.mark.render
def test_target_leaves_view_hold_ends_after_hold_s() -> None:
    r = tracker_leaves_view(LossAction.HOLD)
    assert_safe(r, "stopped", "tracker_lost")
    assert "after holding" in r.detail
    assert r.extra["held_ticks"] >= 19  # held still for hold_s = 1 s before ending
    assert r.detect_ms == pytest.approx(LOSS_MS, abs=60.0)  # the hold began
    assert r.safe_stop_ms == pytest.approx(r.detect_ms, abs=60.0)  # still from the hold on, not from the stop
    assert r.extra["stop_ms"] == pytest.approx(LOSS_MS + 1000.0, abs=110.0)


@pytest.mark.render
def test_target_leaves_view_reground_finds_nothing_and_ends() -> None:
    r = tracker_leaves_view(LossAction.REGROUND)
    assert_safe(r, "stopped", "tracker_lost")
    assert r.extra["regrounds"] == 2
    assert "re-grounding attempt" in r.detail


@pytest.mark.render
def test_target_leaves_and_returns_within_hold_s_resumes() -> None:
    r = tracker_leaves_and_returns()
    assert_safe(r, "resumed", "max_ticks")
    assert r.extra["holds"] >= 1
    assert r.extra["held_ticks"] >= 4  # held still until the target was back


@pytest.mark.render
def test_target_covered_by_the_arm_holds_then_resumes() -> None:
    r = tracker_covered_by_arm(1.5)
    assert_safe(r, "resumed", "max_ticks")
    assert r.extra["held_ticks"] >= 4


@pytest.mark.render
def test_twin_swap_is_not_seen_by_the_tracker_and_the_pick_ends_wrong_object() -> None:
    r = tracker_twin_swap()
    assert_safe(r, "stopped", "wrong_object")  # the cell's outcome monitor ends the pick; the arm is stopped
    assert r.extra["holds"] == 0  # a same-looking twin in the same place is invisible to the watch


@pytest.mark.render
def test_drifted_tracker_is_regrounded_and_resumes() -> None:
    r = tracker_drift_reground()
    assert_safe(r, "resumed", "max_ticks")
    assert r.extra["regrounds"] == 1
