"""Camera and tracker fault scenarios, run in the simulated cell through the real runtime (see
`pipeline.faults.sim_cell` for the stand-in tracker and head). Each returns a `ScenarioResult`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from pipeline.faults.core import ScenarioResult
from pipeline.faults.sim_cell import TARGET, TWIN, SimRun, build_run, drive, move_object, swap_objects
from pipeline.runtime.control_loop import EndReason, LoopResult
from pipeline.runtime.perception_watch import LossAction, PerceptionWatch, WatchConfig
from pipeline.runtime.policy_loop import PolicyResult

#: Where an object goes to leave the camera's view (metres, world frame: beside the table, on the floor side).
OUT_OF_VIEW = (0.0, 1.5, 0.05)
#: Simulated second at which faults start (the arm is on its way to the target by then).
FAULT_T = 1.0


def _summary(
    name: str, expected: str, run: SimRun, result: LoopResult, presult: PolicyResult | None, fault_t: float
) -> ScenarioResult:
    arm, watch = run.arm, run.watch
    reason = result.reason
    outcome = result.detail if reason == EndReason.EPISODE_DONE else ""
    if reason == EndReason.MAX_TICKS or (reason == EndReason.EPISODE_DONE and outcome == "success"):
        state = "resumed" if (watch.holds or watch.regrounds) else "running"
        text = outcome or reason.value
    else:
        state, text = "stopped", outcome or reason.value
    safe = detect = float("nan")
    # when the runtime first acted on the fault: the watch held, re-grounded or ended the run, or the loop ended
    acted = [t for t in (watch.first_action_s, result.ended_s) if t is not None and t >= fault_t - 1e-9]
    first = min(acted) if acted else None
    if state == "stopped" and arm.stops:
        # safe: stopped, or holding still from the runtime's first action on (a hold before the run ended)
        still = None if first is None else arm.first_still_after(first)
        safe = max((arm.stops[0] if still is None else still) - fault_t, 0.0) * 1000.0
        detect = float("nan") if first is None else max(first - fault_t, 0.0) * 1000.0
    elif state == "resumed":
        still = arm.first_still_after(fault_t)
        safe = float("nan") if still is None else max(still - fault_t, 0.0) * 1000.0
        held = watch.first_action_s
        detect = float("nan") if held is None else max(held - fault_t, 0.0) * 1000.0
    return ScenarioResult(
        scenario=name,
        expected_end_state=expected,
        end_state=state,
        reason=text,
        safe_stop_ms=safe,
        detect_ms=detect,
        limit_violations=arm.violations,
        stop_called=bool(arm.stops),
        moved_after_stop=arm.moved_after_stop(),
        detail=result.detail,
        extra={
            "stop_ms": (arm.stops[0] - fault_t) * 1000.0 if arm.stops else float("nan"),
            "ticks": result.ticks,
            "held_ticks": result.held_ticks,
            "holds": watch.holds,
            "regrounds": watch.regrounds,
            "skipped_frames": watch.skipped,
            "blacked_frames": run.camera.blacked,
            "frames": run.camera.frames,
            "policy_end": None if presult is None else presult.reason.value,
        },
    )


def _run(
    name: str,
    expected: str,
    config: WatchConfig,
    max_ticks: int,
    setup: Callable[[SimRun], None] | None = None,
    inject: Callable[[SimRun], None] | None = None,
    reground: Callable[[object], npt.ArrayLike | None] | None = None,
    target: str = TARGET,
    fault_t: float = FAULT_T,
) -> ScenarioResult:
    run = build_run(PerceptionWatch(config, reground), target)
    if setup is not None:
        setup(run)
    result, presult = drive(run, max_ticks, inject)
    return _summary(name, expected, run, result, presult, fault_t)


def _once(at_s: float, action: Callable[[SimRun], None]) -> Callable[[SimRun], None]:
    """An injector that runs `action` once, at the first tick at or after `at_s` simulated seconds."""
    done = [False]

    def inject(run: SimRun) -> None:
        if not done[0] and run.sim.time >= at_s - 1e-9:
            done[0] = True
            action(run)

    return inject


# ---------------------------------------------------------------- camera
def camera_black(p: float = 0.8, ticks: int = 120) -> ScenarioResult:
    """A share `p` of frames blacked out (occlusion) from the start; the stand-in tracker's memory carries the
    object through them: the run must go on."""

    def setup(run: SimRun) -> None:
        run.camera.black_p = p

    return _run(f"camera_black_p{p:g}", "running", WatchConfig(), ticks, setup, fault_t=0.0)


def camera_frozen(seconds: float = 1.0) -> ScenarioResult:
    """The camera repeats one frame (same timestamp) for `seconds` > camera_timeout_s (0.5 s)."""

    def setup(run: SimRun) -> None:
        run.camera.frozen = (FAULT_T, FAULT_T + seconds)

    return _run("camera_frozen", "stopped", WatchConfig(), 100, setup)


def camera_gone(seconds: float, name: str, expected: str) -> ScenarioResult:
    """The camera raises TimeoutError for `seconds`, then delivers frames again."""

    def setup(run: SimRun) -> None:
        run.camera.gone = (FAULT_T, FAULT_T + seconds)

    return _run(name, expected, WatchConfig(), 100, setup)


def camera_late(lag_s: float, name: str, expected: str) -> ScenarioResult:
    """Every frame from FAULT_T on arrives `lag_s` seconds old (max_frame_age_s is 0.25 s)."""

    def setup(run: SimRun) -> None:
        run.camera.late = (FAULT_T, math.inf, lag_s)

    return _run(name, expected, WatchConfig(), 100, setup)


# ---------------------------------------------------------------- tracker
def _leave(run: SimRun) -> None:
    move_object(run.env, TARGET, OUT_OF_VIEW)


def tracker_leaves_view(on_loss: LossAction = LossAction.HOLD) -> ScenarioResult:
    """The target is taken out of the camera's view and does not come back: the memory carries it for a while,
    then the loss action runs and the run ends with tracker_lost (hold: after hold_s; reground: the grounder finds
    nothing; fail: at once)."""
    cfg = WatchConfig(on_loss=on_loss, hold_s=1.0)
    return _run(
        f"tracker_leaves_view_{on_loss.value}",
        "stopped",
        cfg,
        160,
        inject=_once(FAULT_T, _leave),
        reground=lambda _frame: None,
    )


def tracker_leaves_and_returns() -> ScenarioResult:
    """The target leaves the view and is put back 1.5 s later, within hold_s (2 s): the arm holds, then resumes."""
    home: list[npt.NDArray[np.float64]] = []

    def leave(run: SimRun) -> None:
        home.append(run.env.object_position(TARGET))
        _leave(run)

    def back(run: SimRun) -> None:
        move_object(run.env, TARGET, home[0])

    first, second = _once(FAULT_T, leave), _once(FAULT_T + 1.5, back)

    def inject(run: SimRun) -> None:
        first(run)
        second(run)

    return _run("tracker_leaves_and_returns", "resumed", WatchConfig(hold_s=2.0), 110, inject=inject)


def tracker_covered_by_arm(seconds: float = 1.5) -> ScenarioResult:
    """The arm covers the target for `seconds`: injected as frames in which the stand-in tracker sees none of the
    target's pixels (the front camera of this cell rarely sees such a cover). Memory carries it 0.75 s, the watch
    holds, and the run resumes once the target is seen again."""
    start = round(FAULT_T / 0.05)
    frames = round(seconds / 0.05)

    def setup(run: SimRun) -> None:
        run.tracker.blind = lambda i: start <= i < start + frames

    return _run("tracker_covered_by_arm", "resumed", WatchConfig(hold_s=2.0), 100, setup)


def tracker_twin_swap() -> ScenarioResult:
    """The target swaps places with its same-named twin during the approach. An appearance tracker cannot tell
    them apart and follows the twin; the policy picks it, and the cell's outcome monitor ends the pick with
    wrong_object (the arm is stopped). A jump check (max_box_jump_px) sees nothing: the box does not move."""
    cfg = WatchConfig(max_box_jump_px=20.0)
    return _run(
        "tracker_twin_swap", "stopped", cfg, 400, inject=_once(FAULT_T, lambda r: swap_objects(r.env, TARGET, TWIN))
    )


def tracker_drift_reground() -> ScenarioResult:
    """The tracker's memory drifts off the target (it stays lost until prompted again) while the target stays in
    view: the watch calls the re-grounding callback (a stand-in grounder returning the target's box from the
    cell's labels, as grounding the original command would), prompts again, and the run resumes."""

    def setup(run: SimRun) -> None:
        run.tracker.drift_at = round(FAULT_T / 0.05)

    holder: list[SimRun] = []

    def ground(_frame: object) -> npt.ArrayLike | None:
        obs = holder[0].sim.last_observation
        if obs is None or not obs.target_box.any():
            return None
        return obs.target_box

    run = build_run(PerceptionWatch(WatchConfig(on_loss=LossAction.REGROUND), ground))
    holder.append(run)
    setup(run)
    result, presult = drive(run, 100)
    return _summary("tracker_drift_reground", "resumed", run, result, presult, FAULT_T)


CAMERA: dict[str, Callable[[], ScenarioResult]] = {
    "camera_black_p0.8": lambda: camera_black(0.8),
    "camera_frozen": camera_frozen,
    "camera_gone_within_limit": lambda: camera_gone(0.3, "camera_gone_within_limit", "running"),
    "camera_gone_beyond_limit": lambda: camera_gone(2.0, "camera_gone_beyond_limit", "stopped"),
    "camera_late_within_bound": lambda: camera_late(0.1, "camera_late_within_bound", "running"),
    "camera_late_beyond_bound": lambda: camera_late(0.4, "camera_late_beyond_bound", "stopped"),
}
TRACKER: dict[str, Callable[[], ScenarioResult]] = {
    "tracker_leaves_view_hold": lambda: tracker_leaves_view(LossAction.HOLD),
    "tracker_leaves_view_reground": lambda: tracker_leaves_view(LossAction.REGROUND),
    "tracker_leaves_view_fail": lambda: tracker_leaves_view(LossAction.FAIL),
    "tracker_leaves_and_returns": tracker_leaves_and_returns,
    "tracker_covered_by_arm": tracker_covered_by_arm,
    "tracker_twin_swap": tracker_twin_swap,
    "tracker_drift_reground": tracker_drift_reground,
}
