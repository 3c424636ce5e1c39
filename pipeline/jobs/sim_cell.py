"""The simulated cell session behind the API and `sam2grasp pick`: one MuJoCo scene kept across jobs, so that a
sequence picks several objects in turn; after a lift held, the object is carried to its place (the drop bin by
default) and the arm goes back to its start pose.

Controllers: "method" (the shipped SAM2Grasp agent from models/, its tracker prompted with the grounded box, the
runtime of `pipeline.runtime` driving the arm) and "expert" (the scripted expert on privileged simulator state).
Every command, of either controller and of the place motion, passes one `SafetyLayer`. Units: metres, radians,
seconds; `pace` is simulated seconds per wall-clock second (0 = as fast as the machine runs).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from grounding.detection import Detection
from pipeline.jobs.agent_slot import AgentSlot
from pipeline.jobs.cell import OverlayFrame, PickOutcome, StateCallback, TargetError
from pipeline.jobs.place import PlacePredictor, drop_zones, in_drop_zone
from pipeline.jobs.sim_config import GRASP_CLOSE_SHARE, LIFTING_RISE, MIN_TARGET_IOU, MODELS, SimCellConfig
from pipeline.jobs.sim_drive import DriveResult, ExpertPredictor, SimDrive, pick_outcome
from pipeline.jobs.sim_view import chunk_pixels, health_json, match_instance, overlay_of, scene_json
from pipeline.jobs.state import Controller, JobState, Placement, Target
from pipeline.runtime.control_loop import EndReason
from robot.protocols import RobotStatus
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv, ResetOptions
from robot.sim.mjcf import GRIPPER_STROKE, TCP_OFFSET
from robot.sim.outcome import OutcomeRules
from robot.sim.scene import SceneRequest, SceneSpec, sample_scene
from robot.sim.sim_robot import SimRobot
from robot.stop_signal import StopSignal

T = TypeVar("T")


class SimCell:
    """The simulated `Cell`. Thread-safe: API threads read frames and health; everything that steps or renders
    the simulation runs on the cell's own simulation thread (an OpenGL context belongs to one thread)."""

    #: the simulated arm moves only when the simulation steps, and every step reads the stop signal first: a stop
    #: raised by the guard holds it from that moment
    halts_on_raised_stop = True

    controllers = frozenset({Controller.METHOD, Controller.EXPERT})

    def __init__(self, config: SimCellConfig | None = None) -> None:
        self.config = cfg = config or SimCellConfig()
        self._sim_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-cell")
        self.cell = CellConfig(
            image_width=cfg.width,
            image_height=cfg.height,
            depth=False,
            rules=OutcomeRules(max_episode_s=cfg.max_pick_s),
            scene=SceneRequest(n_objects=cfg.objects, names=cfg.names),
        )
        self.env = self._on_sim(lambda: PickEnv(self.cell))
        self.safety = SafetyLayer(SafetyLimits(violation_mode="clamp"), TCP_OFFSET, self.cell.control_dt)
        self._lock = threading.RLock()  # the simulation: stepping, rendering, reading state
        self._frame_lock = threading.Lock()
        self._frame: OverlayFrame | None = None
        self._frame_seq = 0
        self._drive: SimDrive | None = None
        self._stop_signal: StopSignal | None = None  # a stop raised by the stop guard's process (attach_stop_signal)
        self._agents = AgentSlot(
            self.config.head, self.config.tracker, f"the method needs the shipped models in {MODELS}"
        )
        self._protective = ""
        self._candidates: tuple[tuple[float, float, float, float], ...] = ()
        self.last_halt_s: float | None = None  # seconds the last halt took
        self.last_first_command_at: float | None = None  # epoch seconds of the last pick's first arm command
        self.reset_scene(cfg.seed)

    # ------------------------------------------------------------------ scene
    def reset_scene(self, seed: int, names: tuple[str, ...] = ()) -> SceneSpec:
        """A new scene from `seed` (exact objects when `names` are given); clears a protective stop."""
        if self._drive is not None:
            raise RuntimeError("cannot reset the scene while the arm is moving: stop first")
        request = SceneRequest(n_objects=self.config.objects, names=names) if names else self.cell.scene
        scene = sample_scene(seed, request)

        def reset() -> None:
            with self._lock:
                obs, _ = self.env.reset(seed, ResetOptions(scene=scene))
                self.robot = SimRobot(self.env, obs)
                self.robot.stop_signal = self._stop_signal
                self._protective = ""
                self._candidates = ()
                self._publish(caption=f"scene {seed}")

        self._on_sim(reset)
        return scene

    @property
    def scene(self) -> SceneSpec:
        """The current scene."""
        scene = self.env.scene
        if scene is None:
            raise RuntimeError("the simulated cell has no scene")
        return scene

    # ------------------------------------------------------------------ Cell
    def camera_image(self) -> npt.NDArray[np.uint8]:
        """The current rendered image, (H, W, 3) uint8."""
        with self._lock:
            obs = self.robot.last_observation
            if obs is None or obs.rgb is None:
                raise RuntimeError("the simulated camera has no image")
            return obs.rgb.copy()

    def robot_status(self) -> RobotStatus:
        """Connected; protective stop after a collision, until the scene is reset."""
        if self._protective:
            return RobotStatus(protective_stop=True, message=self._protective)
        return RobotStatus()

    def prepare(self, detection: Detection) -> Target:
        """The object whose box (from the simulator's segmentation) best overlaps the grounded box."""
        with self._lock:
            obs = self.robot.last_observation
            scene = self.scene
            inst = None if obs is None else obs.instance_map
        if inst is None:
            raise TargetError("the simulated camera has no segmentation to match the grounded box against")
        best, best_iou = match_instance(inst, scene, detection.box_xyxy_px)
        if best_iou < MIN_TARGET_IOU:
            raise TargetError(
                f"the grounded box {list(detection.box_xyxy_px)} covers no object in view (best overlap "
                f"{best_iou:.2f}, at least {MIN_TARGET_IOU} needed)"
            )
        return Target(detection.phrase, detection.box_xyxy_px, detection.score, best)

    def pick(
        self, target: Target, controller: Controller, on_state: StateCallback, halt: threading.Event
    ) -> PickOutcome:
        """Grasp and lift `target.instance`, driven by `controller`; see the module doc."""
        if controller not in self.controllers:
            raise ValueError(f"unknown controller {controller!r}; valid: {', '.join(c.value for c in Controller)}")
        if halt.is_set():
            return PickOutcome(False, "stopped", "stop requested before the motion began")
        with self._lock:
            self.env.retarget(target.instance)
            self.robot = SimRobot(self.env, self.robot.last_observation)
            self.robot.stop_signal = self._stop_signal
            self._candidates = ()
        phase = [JobState.TRACKING]
        on_state(JobState.TRACKING)  # loading the method's models (once) counts as tracking
        predictor: Any
        if controller == Controller.EXPERT:
            predictor = ExpertPredictor(self.env)
        else:
            from policy.agent import AgentChunkPredictor

            try:
                agent = self.load_agent()
            except (OSError, ValueError) as exc:  # a model file missing or damaged: the pick fails, nothing moved
                return PickOutcome(False, "models_unavailable", f"the method's models cannot be loaded: {exc}")
            from policy.grasp_yaw import named_shape

            shape = named_shape(target.phrase)  # the shape the command names, never the simulator's record
            predictor = AgentChunkPredictor(agent, np.asarray(target.box), self.env.camera_view(), shape)

        def on_tick(_tick: int) -> None:
            info = self.robot.last_info
            rise = 0.0 if info is None else info.target_rise
            if phase[0] == JobState.TRACKING and self.robot.gripper_target < GRASP_CLOSE_SHARE * GRIPPER_STROKE:
                phase[0] = JobState.GRASPING
                on_state(JobState.GRASPING)
            if phase[0] in (JobState.TRACKING, JobState.GRASPING) and rise >= LIFTING_RISE:
                phase[0] = JobState.LIFTING
                on_state(JobState.LIFTING)
            self._publish(predictor, controller)

        ticks = math.ceil(self.config.max_pick_s / self.cell.control_dt) + 5
        drive = SimDrive(
            self.robot, predictor, self.safety, self._lock, pace=self.config.pace, max_ticks=ticks, on_tick=on_tick
        )
        result = self._run(drive, halt)
        self.last_first_command_at = drive.first_command_at
        return self._pick_outcome(result, halt)

    def place(self, placement: Placement, halt: threading.Event) -> PickOutcome:
        """Carry the held object to `placement`, open, rise and return to the start pose."""
        if placement.position is not None:
            release = placement.position
        else:
            zones = drop_zones()
            if placement.zone not in zones:
                raise ValueError(f"unknown drop zone {placement.zone!r}; valid zones: {', '.join(zones)}")
            release = zones[placement.zone]
        with self._lock:
            q0 = self.env.joint_command
            instance = self.env.target
        # carry with the gripper commanded shut (the end of the pick left it holding at the measured width)
        predictor = PlacePredictor(q0, 0.0, release, self.cell.control_dt)

        def finished() -> bool:
            near = float(np.max(np.abs(self.robot.joint_positions() - self.robot.joint_target))) < 0.02
            return predictor.finished and near

        ticks = math.ceil((predictor.total_s + 15.0) / self.cell.control_dt)
        drive = SimDrive(
            self.robot,
            predictor,
            self.safety,
            self._lock,
            pace=self.config.pace,
            max_ticks=ticks,
            stop_on_episode_end=False,
            done=finished,
            on_tick=lambda _t: self._publish(predictor),
        )
        result = self._run(drive, halt)
        if halt.is_set() or result.reason == EndReason.STOP_REQUESTED:
            return PickOutcome(False, "stopped", "stopped while placing")
        with self._lock:
            where = self.env.object_position(instance)
        if placement.position is None and placement.zone is not None:
            ok = in_drop_zone(placement.zone, where)
        else:
            ok = bool(np.hypot(*(where[:2] - np.asarray(release[:2]))) < 0.06)
        detail = f"{instance} released at {np.round(where, 3).tolist()} m"
        if result.reason != EndReason.EPISODE_DONE:
            return PickOutcome(False, "place_failed", f"place motion ended with {result.reason.value}; {detail}")
        return PickOutcome(ok, "" if ok else "not_placed", detail)

    def attach_stop_signal(self, signal: StopSignal | None) -> None:
        """Hold the arm at every simulated control step while a stop raised through `signal` (by the stop guard,
        another process) is pending, from the next step on, whatever the server's threads are doing."""
        self._stop_signal = signal
        self.robot.stop_signal = signal  # one attribute: the step in progress sees it at its next control step

    def halt(self) -> float:
        """Stop all motion now; seconds taken (the control loop ended and the robot told to hold)."""
        t0 = time.monotonic()
        drive = self._drive
        if drive is not None:
            drive.stop()
        else:
            with self._lock:
                self.robot.stop()
        self.last_halt_s = time.monotonic() - t0
        return self.last_halt_s

    def simulate_protective_stop(self, message: str = "protective stop (simulated fault drill)") -> None:
        """Put the simulated arm in a protective stop, as a collision would (for drills and tests); resetting the
        scene clears it."""
        self.halt()
        self._protective = message

    def show_candidates(self, boxes: tuple[tuple[float, float, float, float], ...]) -> None:
        """Draw these boxes on the stream while a person chooses."""
        self._candidates = boxes
        self._publish(caption="several objects match: click one" if boxes else "")

    def overlay_frame(self) -> OverlayFrame | None:
        """The latest image and its overlays."""
        with self._frame_lock:
            return self._frame

    @property
    def moving(self) -> bool:
        """True while a motion runs."""
        return self._drive is not None

    def health(self) -> dict[str, Any]:
        """Robot, camera, models, safety and scene facts."""
        status = self.robot_status()
        with self._lock:
            robot = self.robot
            joints = robot.joint_positions().round(4).tolist()
            target = robot.joint_target.round(4).tolist()
            width = round(robot.width(), 4)
            scene = scene_json(self.env)
        method = self._agents.status()
        robot_facts = {
            "moving": self.moving,
            "joints_rad": joints,
            "joint_target_rad": target,
            "gripper_width_m": width,
            "last_halt_s": self.last_halt_s,
            "first_command_at": self.last_first_command_at,
        }
        return health_json(self.config, status, robot_facts, self.overlay_frame(), method, self.safety, scene)

    def close(self) -> None:
        """Stop motion and free the renderer."""
        self.halt()
        self._on_sim(self.env.close)
        self._sim_thread.shutdown(wait=True)

    # ------------------------------------------------------------------ internals
    def load_agent(self) -> Any:
        """The shipped SAM2Grasp agent, loaded once (FileNotFoundError naming the missing checkpoint)."""
        return self._agents.get()

    def _run(self, drive: SimDrive, halt: threading.Event) -> DriveResult:
        self._drive = drive
        try:
            if halt.is_set():
                drive.stop()
            return self._on_sim(drive.run)
        finally:
            self._drive = None

    def _on_sim(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the simulation thread and return its result (its exception is raised here)."""
        return self._sim_thread.submit(fn).result()

    def _pick_outcome(self, result: DriveResult, halt: threading.Event) -> PickOutcome:
        outcome = pick_outcome(result, halt.is_set())
        if outcome.reason == "collision":
            self._protective = outcome.detail
        return outcome

    def _publish(self, predictor: Any = None, controller: Controller | None = None, caption: str = "") -> None:
        with self._lock:
            obs = self.robot.last_observation
            if obs is None or obs.rgb is None:
                return
            drive = self._drive
            chunk = None if drive is None or drive.last_chunk is None else chunk_pixels(self.env, drive.last_chunk)
            box, mask, text = overlay_of(obs, predictor, controller)
        with self._frame_lock:
            self._frame_seq += 1
            self._frame = OverlayFrame(obs.rgb, box, mask, chunk, caption or text, self._candidates, self._frame_seq)
