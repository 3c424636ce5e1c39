"""Policy faults on the threaded runtime in real time (100 Hz control loop, hold_timeout_s 0.1 s, a MOCK arm and
a stand-in predictor, pipeline.faults.policy_faults). Time bounds carry generous margins for a loaded 2-core
machine; bench/faults.py reports the measured numbers."""

from __future__ import annotations

import pytest

from pipeline.faults.core import ScenarioResult
from pipeline.faults.policy_faults import CHUNK, HOLD_TIMEOUT_S, PERIOD, policy_fault

#: The queued chunk runs out (CHUNK ticks), the loop holds hold_timeout_s, then stops; plus scheduling slack.
STALL_BOUND_MS = (CHUNK * PERIOD + HOLD_TIMEOUT_S) * 1000.0 + 500.0


def assert_safe(r: ScenarioResult, reason: str) -> None:
    assert (r.end_state, r.reason) == ("stopped", reason), r.detail
    assert r.stop_called
    assert r.moved_after_stop == 0
    assert r.limit_violations == 0


def test_stalled_inference_holds_when_the_queue_runs_out_and_halts_after_the_hold_timeout() -> None:
    r = policy_fault("stall")
    assert_safe(r, "policy_stalled")
    assert r.extra["stop_ms"] <= STALL_BOUND_MS
    # safe (holding still) once the queued chunk ran out, before the loop decided that the policy stalled
    assert r.safe_stop_ms < r.extra["stop_ms"]
    assert r.detect_ms >= HOLD_TIMEOUT_S * 1000.0  # a stall is told from a slow prediction only by the timeout
    assert r.react_ms == 0.0
    # from the first held (motionless) command to robot.stop(): about hold_timeout_s, never much more
    assert r.extra["halt_after_hold_ms"] == pytest.approx(HOLD_TIMEOUT_S * 1000.0, abs=400.0)


@pytest.mark.parametrize(("failure", "why"), [("raise", "predictor_error"), ("nan", "non_finite_chunk")])
def test_failing_inference_stops_the_arm_at_once(failure: str, why: str) -> None:
    r = policy_fault(failure)
    assert_safe(r, "policy_failed")
    assert why in r.detail
    assert r.safe_stop_ms <= 500.0
