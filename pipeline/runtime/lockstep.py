"""Lockstep evaluation in simulation: predict → control ticks → `SimRobot.advance`, on one thread, so simulated
time waits for the policy however slow the machine is.

With `latency` set, a chunk becomes available only after that much simulated time (or the measured inference
time) has passed since its observation, while the control loop keeps executing the older chunks: this tests
the asynchronous runtime's behaviour deterministically. Units: seconds of simulated time, radians, metres.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason, LoopResult
from pipeline.runtime.policy_loop import ChunkError, ChunkPredictor, validate_chunk
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.outcome import Outcome
from robot.sim.sim_robot import SimRobot

F64 = npt.NDArray[np.float64]
#: Given the robot, returns (frame, state) for the predictor.
LockstepObserve = Callable[[SimRobot], tuple[Any, npt.NDArray[Any]]]


@dataclass(frozen=True)
class LockstepConfig:
    """Settings of a lockstep run.

    max_ticks: control ticks at most; replan_ticks: ticks between two observations while the policy is idle
    (1 = observe every tick, ACT's temporal-ensembling setting); latency: None (a chunk is usable at its own
    tick), seconds of simulated time before it is usable, or "measured" (the wall-clock inference time);
    control: control-loop settings (its period must be a whole multiple of the cell's control_dt; default: one
    control_dt per tick); stop_on_episode_end: end when the episode terminates or is truncated.
    """

    max_ticks: int = 400
    replan_ticks: int = 1
    latency: float | Literal["measured"] | None = None
    control: ControlConfig | None = None
    stop_on_episode_end: bool = True
    staleness_ticks: int | None = None

    def __post_init__(self) -> None:
        if self.max_ticks < 1 or self.replan_ticks < 1:
            raise ValueError(f"max_ticks and replan_ticks must be >= 1, got {self.max_ticks}, {self.replan_ticks}")
        lat = self.latency
        if lat is not None and lat != "measured" and (isinstance(lat, str) or not 0.0 <= lat < math.inf):
            raise ValueError(f"latency must be None, 'measured' or a finite number of seconds >= 0, got {lat!r}")


@dataclass(frozen=True)
class LockstepResult:
    """Outcome of a lockstep run: the control loop's end state, the episode outcome (None if undecided),
    chunks predicted, wall-clock seconds per prediction, and simulated seconds elapsed."""

    loop: LoopResult
    outcome: Outcome | None
    chunks: int
    inference_times_s: tuple[float, ...] = field(default=())
    sim_time_s: float = 0.0


def observe_sim(robot: SimRobot) -> tuple[Any, npt.NDArray[Any]]:
    """Default observation: the cell's last `Observation` as the frame (rgb, target box and mask for oracle
    perception) and its (7,) state."""
    obs = robot.last_observation
    if obs is None:
        raise RuntimeError("SimRobot has no observation yet: build it with env.reset's observation")
    return obs, obs.state


def run_lockstep(
    robot: SimRobot,
    predictor: ChunkPredictor,
    config: LockstepConfig | None = None,
    safety: SafetyLayer | None = None,
    observe: LockstepObserve = observe_sim,
) -> LockstepResult:
    """Run one episode on `robot` with `predictor` through the same queue, ensembler, safety layer and control
    tick as the threaded runtime. `safety` defaults to the default limits at the control period."""
    cfg = config or LockstepConfig()
    ctrl = cfg.control or ControlConfig(period_s=robot.control_dt)
    ratio = ctrl.period_s / robot.control_dt
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ValueError(
            f"control period {ctrl.period_s} s must be a whole multiple of the cell's control_dt {robot.control_dt} s"
        )
    safety = safety or SafetyLayer(SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=ctrl.period_s)
    queue = ChunkQueue(staleness_ticks=cfg.staleness_ticks)
    loop = ControlLoop(robot, queue, safety, gripper=robot, config=ctrl, clock=lambda: robot.time)
    pending: list[tuple[int, int, F64]] = []  # (tick it becomes usable, tick it was observed at, chunk)
    times: list[float] = []
    next_obs = 0
    try:
        loop.begin(robot.time)
        for tick in range(cfg.max_ticks):
            _deliver(queue, pending, tick)
            if tick >= next_obs and not pending:  # the policy is idle: observe and predict
                frame, state = observe(robot)
                started = time.perf_counter()
                try:
                    chunk = validate_chunk(predictor.predict(frame, state), queue.action_dim)
                except ChunkError as exc:
                    loop.stop(EndReason.POLICY_FAILED, f"{exc.reason.value}: {exc}")
                    break
                except Exception as exc:
                    loop.stop(EndReason.POLICY_FAILED, f"predict() raised {type(exc).__name__}: {exc}")
                    break
                finally:
                    times.append(time.perf_counter() - started)
                delay = 0.0 if cfg.latency is None else times[-1] if cfg.latency == "measured" else cfg.latency
                ready = tick + math.ceil(delay / ctrl.period_s - 1e-9)
                pending.append((ready, tick, chunk))
                next_obs = max(tick + cfg.replan_ticks, ready)
                _deliver(queue, pending, tick)
            if loop.tick(tick, robot.time) is not None:
                break
            robot.advance(ctrl.period_s)
            if cfg.stop_on_episode_end and (robot.terminated or robot.truncated):
                loop.stop(EndReason.EPISODE_DONE, str(robot.last_info.outcome if robot.last_info else ""))
                break
        else:
            loop.stop(EndReason.MAX_TICKS, f"{cfg.max_ticks} ticks done")
    finally:
        result = loop.finish()
    info = robot.last_info
    return LockstepResult(result, info.outcome if info else None, len(times), tuple(times), robot.time)


def _deliver(queue: ChunkQueue, pending: list[tuple[int, int, F64]], tick: int) -> None:
    """Queue the pending chunks that are usable at `tick`, at the tick they were observed at."""
    for item in [p for p in pending if p[0] <= tick]:
        queue.put(item[2], item[1])
        pending.remove(item)
