"""One motion of the simulated cell: a predictor's chunks go through the runtime's chunk queue, ensembler, safety
layer and control tick (`pipeline.runtime`) to the `SimRobot`, in lockstep with simulated time, optionally paced
to wall-clock time so that the camera stream looks live.

Each tick is one step of the runtime's policy loop (`PolicyLoop.step`): observe, predict, validate, queue. A
predictor that tracks its target (the method: it exposes the tracker's `last_step`) is watched by the perception
watch (`pipeline.runtime.perception_watch`): when the tracker loses the target the arm holds, and the motion ends
with "tracker_lost" if it does not come back; a camera without fresh frames ends it with "camera_lost".

`SimDrive.stop()` may be called from any thread: it ends the control loop (no command is sent after it returns)
and the robot holds where it is from the next simulated control step on. Units: seconds, radians, metres.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.jobs.cell import PickOutcome
from pipeline.jobs.chunk_predictors import PacedPredictor
from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason
from pipeline.runtime.perception_watch import PerceptionWatch, WatchConfig
from pipeline.runtime.policy_loop import ChunkPredictor, PolicyLoop
from robot.safety import SafetyLayer
from robot.sim.env import PickEnv
from robot.sim.expert import ScriptedExpert
from robot.sim.mjcf import GRIPPER_STROKE
from robot.sim.outcome import Outcome
from robot.sim.sim_robot import SimRobot

F64 = npt.NDArray[np.float64]


def tracks_target(predictor: object) -> bool:
    """True for a predictor whose tracker the perception watch can read (it has `last_step`, as the method's has)."""
    return hasattr(predictor, "last_step")


@dataclass(frozen=True)
class DriveResult:
    """How a drive ended: the control loop's reason and detail, the episode outcome (None if undecided), and the
    control ticks run."""

    reason: EndReason
    detail: str
    outcome: Outcome | None
    ticks: int


class ExpertPredictor:
    """The scripted expert as a `ChunkPredictor`: one action per call (a chunk of one), its clean plan executed
    without perturbations. Reads privileged simulator state (object poses); it is not the learned method."""

    def __init__(self, env: PickEnv, seed: int = 0) -> None:
        from robot.sim.expert import ExpertConfig

        self.expert = ScriptedExpert(env, ExpertConfig(noise_prob=0.0))
        self.expert.reset(seed)

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        """(1, 7): the expert's next joint targets (radians) and gripper opening (metres)."""
        action = np.asarray(self.expert.act().executed, dtype=np.float64)
        action[6] = min(max(action[6], 0.0), GRIPPER_STROKE)  # float32 rounding put 0.085 a hair above the stroke
        return action[None, :]


class SimDrive:
    """Drives `robot` with `predictor` until the episode ends (when `stop_on_episode_end`), the predictor is done
    (`done()` returns True), `max_ticks` pass, or `stop()`.

    sim_lock: held while the simulation steps (the cell's readers take it too); pace: simulated seconds per
    wall-clock second (1 = real time, 0 = as fast as the machine runs); on_tick: called after every step;
    watch: the perception watch ("auto": a default `PerceptionWatch` for a predictor that tracks its target, none
    for one that does not; None: none), on simulated time."""

    def __init__(
        self,
        robot: SimRobot,
        predictor: ChunkPredictor,
        safety: SafetyLayer,
        sim_lock: threading.RLock,
        *,
        pace: float = 1.0,
        max_ticks: int = 400,
        stop_on_episode_end: bool = True,
        on_tick: Callable[[int], None] | None = None,
        done: Callable[[], bool] | None = None,
        ensemble_m: float = 0.01,
        watch: PerceptionWatch | Literal["auto"] | None = "auto",
    ) -> None:
        if pace < 0 or not np.isfinite(pace):
            raise ValueError(f"pace must be >= 0 (simulated seconds per wall second; 0 = unpaced), got {pace}")
        if max_ticks < 1:
            raise ValueError(f"max_ticks must be >= 1, got {max_ticks}")
        self.robot, self.predictor, self.sim_lock = robot, predictor, sim_lock
        self.pace, self.max_ticks, self.stop_on_episode_end = pace, max_ticks, stop_on_episode_end
        self.on_tick, self.done = on_tick, done
        self.queue = ChunkQueue()
        period = robot.control_dt
        self.loop = ControlLoop(
            robot,
            self.queue,
            safety,
            gripper=robot,
            # lockstep: a prediction is made every tick, so "stalled" means the predictor itself stopped
            config=ControlConfig(period_s=period, ensemble_m=ensemble_m, hold_timeout_s=10 * period),
            clock=lambda: robot.time,  # stepped in simulated time: the loop's end is stamped with it
        )
        if watch == "auto":
            watch = PerceptionWatch(WatchConfig()) if tracks_target(predictor) else None
        self.watch = watch
        self._recorder = PacedPredictor(predictor, period, period)  # keeps the last chunk for the overlay
        self.policy = PolicyLoop(
            self._recorder, self._observe, self.queue, self.loop, watch=watch, clock=lambda: robot.time
        )
        self._tick = 0
        self.first_command_at: float | None = None  # wall-clock time (epoch seconds) of the first command sent
        self._stopped = threading.Event()

    @property
    def last_chunk(self) -> F64 | None:
        """The predictor's last chunk (K, 7), or None."""
        return self._recorder.last_chunk

    def _observe(self) -> tuple[Any, npt.NDArray[Any], int]:
        obs = self.robot.last_observation
        if obs is None:
            raise RuntimeError("the simulated robot has no observation yet")
        return obs, obs.state, self._tick

    def stop(self) -> None:
        """End the drive now (any thread): no further command reaches the robot, and the robot holds its pose
        from the next simulated control step on (`SimRobot.request_stop`). Returns without waiting for the
        simulation lock, which the drive holds while a step is simulated and rendered (tens of milliseconds, more
        on a loaded machine)."""
        self._stopped.set()
        self.loop.stop(EndReason.STOP_REQUESTED, "stop requested")
        self.robot.request_stop()

    def run(self) -> DriveResult:
        """Run to the end (blocking, on the caller's thread)."""
        robot, loop = self.robot, self.loop
        period = robot.control_dt
        wall0 = time.monotonic()
        ticks = 0
        try:
            with self.sim_lock:
                loop.begin(robot.time)
            for tick in range(self.max_ticks):
                if self._stopped.is_set():
                    break
                if self.done is not None and self.done():
                    loop.stop(EndReason.EPISODE_DONE, "motion complete")
                    break
                self._tick = tick
                end = self.policy.step()  # observe, (watch,) predict, validate, queue at this tick
                if end is not None:
                    self.policy.finish(*end)  # stops the control loop with the matching reason
                    break
                with self.sim_lock:
                    if loop.tick(tick, robot.time) is not None:
                        break
                    robot.advance(period)
                if self.first_command_at is None:
                    self.first_command_at = time.time()
                ticks += 1
                if self.on_tick is not None:
                    self.on_tick(tick)
                if self.stop_on_episode_end and (robot.terminated or robot.truncated):
                    info = robot.last_info
                    loop.stop(EndReason.EPISODE_DONE, str(info.outcome.value if info and info.outcome else ""))
                    break
                if self.pace > 0:
                    wait = wall0 + (tick + 1) * period / self.pace - time.monotonic()
                    if wait > 0 and self._stopped.wait(wait):
                        break
            else:
                loop.stop(EndReason.MAX_TICKS, f"{self.max_ticks} ticks done")
        finally:
            with self.sim_lock:
                result = loop.finish()
        info = robot.last_info
        return DriveResult(result.reason, result.detail, info.outcome if info else None, ticks)


def pick_outcome(result: DriveResult, halted: bool) -> PickOutcome:
    """How a pick drive ended, as the job sees it: success, stopped, the episode's failure (collision, dropped,
    wrong_object, timeout, empty_grasp), or the control loop's reason (policy_failed, ...)."""
    if halted or result.reason == EndReason.STOP_REQUESTED:
        return PickOutcome(False, "stopped", "stop requested")
    if result.outcome == Outcome.SUCCESS:
        return PickOutcome(True, "", f"held lifted after {result.ticks} control ticks")
    if result.outcome == Outcome.COLLISION:
        return PickOutcome(
            False, "collision", "protective stop: the arm hit the table or the bin (simulated); reset the scene"
        )
    if result.outcome is not None:
        return PickOutcome(False, result.outcome.value, f"episode ended as {result.outcome.value}")
    if result.reason == EndReason.MAX_TICKS:
        return PickOutcome(False, "timeout", result.detail)
    return PickOutcome(False, result.reason.value, result.detail)
