"""The simulated cell for fault scenarios: the real runtime (`PolicyLoop.step`, `ControlLoop.tick`, the safety
layer, the perception watch) driven in simulated time over `SimRobot`, with stand-ins where the real compact
models would be too slow for a test.

Stand-ins (named as such everywhere they are used):
- `StandInTracker` replaces SAM2: it reads the rendered instance map of the tracked object (its pixels) and
  mimics SAM2's memory: on a black frame, or while the object is hidden, it keeps a positive object score for
  `memory_frames` frames, then reports the object absent (score -4). It follows whatever object of the same
  name lies where it last saw its object, as an appearance tracker would (a same-named twin is not told apart).
- `TrackedExpert` replaces the ACT head: the scripted expert's next action, aimed at the object the stand-in
  tracker follows (not at the episode's true target), repeated as a chunk.
Units: seconds of simulated time, radians, metres, pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import mujoco
import numpy as np
import numpy.typing as npt

from pipeline.faults.core import RecordingRobot
from pipeline.runtime.chunk_queue import ChunkQueue
from pipeline.runtime.control_loop import ControlConfig, ControlLoop, EndReason, LoopResult
from pipeline.runtime.perception_watch import PerceptionWatch
from pipeline.runtime.policy_loop import PolicyLoop, PolicyResult
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv, ResetOptions
from robot.sim.expert import ExpertConfig, ScriptedExpert
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.scene import SceneRequest
from robot.sim.sim_robot import SimRobot

F64 = npt.NDArray[np.float64]
#: A small rendered cell: enough pixels for the instance map, fast enough for tests (about 10 ms per step).
CELL = CellConfig(image_width=96, image_height=72, depth=False, scene=SceneRequest(n_objects=(3, 3)))
#: Scene seed 0 holds orange_box_0, orange_cube_0 and orange_box_1: a same-named twin pair.
SEED, TARGET, TWIN = 0, "orange_box_0", "orange_box_1"
CHUNK = 5


@dataclass
class _Step:
    """The stand-in tracker's step: what `tracked_score` reads (object score logit, box pixels)."""

    object_score: float
    box: F64


class StandInTracker:
    """STAND-IN for the SAM2 tracker (see the module doc). `blind` frames (a set of frame indices) see nothing
    of the object, as when the arm covers it; `lost_until_prompt`: after losing the object it stays lost until
    prompted again (a tracker whose memory drifted)."""

    def __init__(self, env: PickEnv, instance: str, memory_frames: int = 15, min_pixels: int = 3) -> None:
        self.env, self.instance = env, instance
        self.memory_frames, self.min_pixels = memory_frames, min_pixels
        self.blind: Callable[[int], bool] = lambda _i: False
        self.drift_at: int | None = None
        self.frames = 0
        self._unseen = 0
        self._drifted = False
        self._last_box = np.zeros(4)
        self.last_step: _Step | None = None

    def reprompt(self, box: npt.ArrayLike) -> None:
        """Prompt again with `box`: the object whose pixels lie in it becomes the tracked one."""
        self._drifted, self._unseen = False, 0
        self._last_box = np.asarray(box, dtype=np.float64)
        names = self._objects()
        found = self._instance_at(self._last_box, names)
        if found is not None:
            self.instance = found

    def step(self, obs: Observation) -> _Step:
        """Track into `obs` (its rgb and instance map)."""
        i = self.frames
        self.frames += 1
        if self.drift_at is not None and i >= self.drift_at and not self._drifted and self.drift_at >= 0:
            self._drifted, self.drift_at = True, None
        black = obs.rgb is None or not obs.rgb.any()
        box = None if black or self.blind(i) or self._drifted else self._box_of(obs)
        if box is not None:
            self._unseen, self._last_box = 0, box
            score = 4.0
        else:
            self._unseen += 1
            score = 2.0 if self._unseen <= self.memory_frames and not self._drifted else -4.0
        self.last_step = _Step(score, self._last_box.copy())
        return self.last_step

    def _objects(self) -> list[str]:
        scene = self.env.scene
        return [] if scene is None else [o.instance for o in scene.objects]

    def _box_of(self, obs: Observation) -> F64 | None:
        inst_map = obs.instance_map
        if inst_map is None:
            raise RuntimeError("the stand-in tracker needs the cell's instance map (render=True)")
        names = self._objects()
        # appearance decides: whatever same-looking object lies where the object was last seen is "the object"
        here = self._instance_at(self._last_box, names, inst_map) if self._last_box.any() else None
        if here is not None:
            self.instance = here
        mask = inst_map == names.index(self.instance)
        if int(mask.sum()) < self.min_pixels:
            return None
        ys, xs = np.nonzero(mask)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)

    def _instance_at(self, box: F64, names: list[str], inst_map: npt.NDArray[np.int16] | None = None) -> str | None:
        """The same-named object with the most pixels inside `box` (from the latest instance map)."""
        scene = self.env.scene
        if inst_map is None:
            obs = self.env._observe()
            inst_map = obs.instance_map
        if scene is None or inst_map is None:
            return None
        name = next(o.name for o in scene.objects if o.instance == self.instance)
        x0, y0, x1, y1 = (int(v) for v in np.round(box))
        window = inst_map[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
        best, best_n = None, self.min_pixels - 1
        for k, obj in enumerate(scene.objects):
            n = int((window == k).sum())
            if obj.name == name and n > best_n:
                best, best_n = obj.instance, n
        return best


class _AimedEnv:
    """The cell as the expert sees it: everything from `env`, except that `target` is the tracked object."""

    def __init__(self, env: PickEnv, tracker: StandInTracker) -> None:
        self._env, self._tracker = env, tracker

    @property
    def target(self) -> str:
        return self._tracker.instance

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class TrackedExpert:
    """STAND-IN for the ACT head (see the module doc): `predict(obs, state)` steps the stand-in tracker on the
    frame and returns the expert's next action aimed at the tracked object, repeated `CHUNK` times."""

    def __init__(self, env: PickEnv, tracker: StandInTracker, seed: int = SEED) -> None:
        self.tracker = tracker
        self.expert = ScriptedExpert(cast(PickEnv, _AimedEnv(env, tracker)), ExpertConfig(noise_prob=0.0))
        self.expert.reset(seed)

    @property
    def last_step(self) -> _Step | None:
        return self.tracker.last_step

    def reprompt(self, box: npt.ArrayLike) -> None:
        self.tracker.reprompt(box)

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        self.tracker.step(cast(Observation, frame))
        action = np.asarray(self.expert.act().executed, dtype=np.float64)
        return np.tile(action, (CHUNK, 1))


def move_object(env: PickEnv, instance: str, position: npt.ArrayLike) -> None:
    """Teleport an object's centre to `position` (metres, world frame), at rest."""
    model, data = env.model, env.data
    if model is None or data is None:
        raise RuntimeError("reset the cell first")
    joint = model.body(instance).jntadr[0]
    adr, vadr = model.jnt_qposadr[joint], model.jnt_dofadr[joint]
    data.qpos[adr : adr + 3] = np.asarray(position, dtype=np.float64)
    data.qvel[vadr : vadr + 6] = 0.0
    mujoco.mj_forward(model, data)


def swap_objects(env: PickEnv, a: str, b: str) -> None:
    """Exchange the poses of two objects (a same-named twin takes the target's place)."""
    pa, pb = env.object_position(a), env.object_position(b)
    move_object(env, a, pb)
    move_object(env, b, pa)


class CameraFaults:
    """The cell's camera with faults, as `observe` for the policy loop. Each fault is a window of simulated
    seconds [start, end): black frames with probability `black_p` (seeded), `frozen` (the last frame before the
    window again), `gone` (TimeoutError), `late` (frames stamped `late_s` seconds old)."""

    def __init__(self, robot: SimRobot, tick: Callable[[], int], seed: int = 0) -> None:
        self.robot, self.tick = robot, tick
        self.black_p = 0.0
        self.frozen: tuple[float, float] | None = None
        self.gone: tuple[float, float] | None = None
        self.late: tuple[float, float, float] | None = None
        self.rng = np.random.default_rng([seed, 3])
        self.blacked = self.frames = 0
        self._before: Observation | None = None

    def __call__(self) -> tuple[Any, npt.NDArray[Any], int]:
        obs = self.robot.last_observation
        if obs is None:
            raise RuntimeError("the cell has no observation")
        now, state = obs.time, obs.state
        self.frames += 1
        if self.gone is not None and self.gone[0] <= now < self.gone[1]:
            raise TimeoutError(f"no frame within the read timeout at t={now:.2f} s (injected)")
        if self.frozen is not None and self.frozen[0] <= now < self.frozen[1] and self._before is not None:
            return self._before, state, self.tick()
        self._before = obs
        if self.late is not None and self.late[0] <= now < self.late[1]:
            obs = dataclasses.replace(obs, time=now - self.late[2])
        if self.frames > 1 and self.rng.random() < self.black_p:
            self.blacked += 1
            rgb = None if obs.rgb is None else np.zeros_like(obs.rgb)
            obs = dataclasses.replace(obs, rgb=rgb)
        return obs, state, self.tick()


@dataclass
class SimRun:
    """A runtime over the cell, ready to drive: the env, the recording arm, the loops and the camera."""

    env: PickEnv
    sim: SimRobot
    arm: RecordingRobot
    tracker: StandInTracker
    predictor: TrackedExpert
    camera: CameraFaults
    watch: PerceptionWatch
    control: ControlLoop
    policy: PolicyLoop
    tick: int = 0


def build_run(watch: PerceptionWatch, target: str = TARGET, hold_timeout_s: float = 0.5) -> SimRun:
    """A fresh cell (scene seed 0, `target` picked) with the runtime, the stand-ins and the faulty camera."""
    env = PickEnv(CELL)
    obs, _ = env.reset(SEED, ResetOptions(target=target))
    sim = SimRobot(env, obs)
    period = sim.control_dt
    arm = RecordingRobot(sim, lambda: sim.time, gripper=sim, period_s=period)
    tracker = StandInTracker(env, target)
    predictor = TrackedExpert(env, tracker)
    run_box: list[SimRun] = []
    camera = CameraFaults(sim, lambda: run_box[0].tick)
    safety = SafetyLayer(SafetyLimits(), tcp_offset=TCP_OFFSET, period_s=period)
    queue = ChunkQueue()
    cfg = ControlConfig(period_s=period, hold_timeout_s=hold_timeout_s, ensemble_m=-20.0)
    control = ControlLoop(arm, queue, safety, gripper=arm, config=cfg, clock=lambda: sim.time)
    policy = PolicyLoop(predictor, camera, queue, control, watch=watch, clock=lambda: sim.time)
    run = SimRun(env, sim, arm, tracker, predictor, camera, watch, control, policy)
    run_box.append(run)
    return run


def drive(
    run: SimRun, max_ticks: int, inject: Callable[[SimRun], None] | None = None, *, close: bool = True
) -> tuple[LoopResult, PolicyResult | None]:
    """Drive `run` tick by tick in simulated time: inject faults, one policy step, one control tick, advance the
    cell. Ends on a loop end, the episode's end (EPISODE_DONE with the outcome) or after `max_ticks` ticks.
    close: close the cell afterwards."""
    control, policy, sim = run.control, run.policy, run.sim
    presult: PolicyResult | None = None
    try:
        control.begin(sim.time)
        for tick in range(max_ticks):
            run.tick = tick
            if inject is not None:
                inject(run)
            end = policy.step()
            if end is not None:
                presult = policy.finish(*end)
                break
            if control.tick(tick, sim.time) is not None:
                break
            sim.advance(control.config.period_s)
            if sim.terminated or sim.truncated:
                info = sim.last_info
                control.stop(EndReason.EPISODE_DONE, str(info.outcome.value if info and info.outcome else ""))
                break
        else:
            control.stop(EndReason.MAX_TICKS, f"{max_ticks} ticks done")
    finally:
        result = control.finish()
        if close:
            run.env.close()
    return result, presult
