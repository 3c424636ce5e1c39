"""`sam2grasp record`: kinesthetic demonstrations. The arm is in teach mode (freedrive), a person moves it by hand,
and the cell is sampled at the policy rate into the same dataset layout as simulated data (atomic episodes).

Keys (one per line on stdin, or any injected `KeySource`): s start an episode, e end and save it, d discard it,
q quit (an episode in progress is discarded). The action stored with frame t is the measured state of frame t+1
(what the hand did next). In the simulated cell the scripted expert plays the hand. Each episode records the
fixed camera's calibration (intrinsics and `T_base_camera`) when the cell has one (the real cell with
`--calibration`), which heads trained with place values need. Units: seconds, radians, metres, pixels.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.writer import DatasetWriter
from robot.calibration import CameraCalibration
from robot.camera_view import CameraView
from robot.kinematics import forward, pose_to_vector

log = logging.getLogger(__name__)
KEYS = {"s": "start", "e": "end and save", "d": "discard", "q": "quit"}
Box = tuple[float, float, float, float]


class KeySource(Protocol):
    """Where the record loop's key presses come from."""

    def poll(self, timeout_s: float) -> str | None:
        """The next key ("s", "e", "d", "q"), or None when none arrived within `timeout_s` seconds."""
        ...


class ScriptedKeys:
    """Keys from a list: one item per poll (None = no key that tick); "q" once the list is used up."""

    def __init__(self, keys: Iterable[str | None]) -> None:
        self._keys = list(keys)

    def poll(self, timeout_s: float) -> str | None:
        """The next scripted key."""
        return self._keys.pop(0) if self._keys else "q"


class StdinKeys:
    """Keys typed on a text stream (stdin by default), read by a daemon thread; end of input reads as "q"."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._stream = stream or sys.stdin
        threading.Thread(target=self._read, name="record-keys", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            for char in line.strip().lower():
                if char in KEYS:
                    self._queue.put(char)
                else:
                    print(f"unknown key {char!r}; keys: " + ", ".join(f"{k} {v}" for k, v in KEYS.items()))
        self._queue.put("q")

    def poll(self, timeout_s: float) -> str | None:
        """The next key typed, or None."""
        try:
            return self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None


@dataclass(frozen=True)
class Sample:
    """One sample of the cell: images, proprioception (state: 6 joints rad + gripper m), TCP pose + gripper,
    the target's box (pixels) and mask, seconds since the cell started."""

    rgb: npt.NDArray[np.uint8]
    depth_mm: npt.NDArray[np.uint16]
    state: npt.NDArray[np.float32]
    ee_pose: npt.NDArray[np.float32]
    target_box: npt.NDArray[np.float32]
    target_mask: npt.NDArray[np.bool_]
    time_s: float


class RecordCell(Protocol):
    """An arm in teach mode with a camera, sampled by the record loop."""

    period_s: float

    def begin(self) -> None:
        """Enter teach mode."""
        ...

    def new_episode(self) -> tuple[str, str, int, tuple[ObjectRecord, ...]]:
        """Prepare an episode; returns (task text, target name, scene seed, objects)."""
        ...

    def sample(self, first: bool) -> Sample:
        """Sample the cell now (`first`: the episode's first frame, which carries the prompt box)."""
        ...

    def wait_next(self) -> None:
        """Wait until the next policy tick (the simulated cell advances one step: the hand moves)."""
        ...

    def outcome(self) -> str:
        """The episode's outcome label."""
        ...

    def camera_view(self) -> CameraView | None:
        """The fixed camera's calibration during this episode (None: the cell has none)."""
        ...

    def end(self) -> None:
        """Leave teach mode and release the hardware."""
        ...


@dataclass(frozen=True)
class RecordReport:
    """What a record session did: episodes saved (their indices), discarded, frames saved, seconds."""

    saved: tuple[int, ...]
    discarded: int
    frames: int
    seconds: float


def _episode(
    frames: list[Sample],
    info: tuple[str, str, int, tuple[ObjectRecord, ...]],
    outcome: str,
    fps: float,
    camera: CameraView | None,
) -> Episode:
    task, target, seed, objects = info
    t0 = frames[0].time_s
    out = []
    for i, s in enumerate(frames):
        nxt = frames[min(i + 1, len(frames) - 1)]
        out.append(
            Frame(
                rgb=s.rgb,
                depth_mm=s.depth_mm,
                state=s.state,
                action=nxt.state.copy(),
                ee_pose=s.ee_pose,
                target_box=s.target_box,
                target_mask=s.target_mask,
                timestamp=s.time_s - t0,
            )
        )
    return Episode(task, target, seed, outcome, fps, objects, tuple(out), camera=camera)


def record(
    out: Path,
    cell: RecordCell,
    keys: KeySource,
    *,
    episodes: int | None = None,
    max_episode_s: float = 120.0,
    say: Callable[[str], None] = print,
) -> RecordReport:
    """Run the key-driven record loop on `cell` into the dataset at `out` until "q" or `episodes` saved.
    An episode reaching `max_episode_s` seconds is saved as it is."""
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be a positive number of episodes or None, got {episodes}")
    if not 0 < max_episode_s <= 3600:
        raise ValueError(f"max_episode_s must be within (0, 3600] s, got {max_episode_s}")
    fps = 1.0 / cell.period_s
    t_start = time.monotonic()
    saved: list[int] = []
    discarded = n_frames = 0
    frames: list[Sample] = []
    info: tuple[str, str, int, tuple[ObjectRecord, ...]] | None = None
    with DatasetWriter(out, fps=fps) as writer:
        cell.begin()
        say("teach mode on: move the arm by hand. Keys: " + ", ".join(f"{k} {v}" for k, v in KEYS.items()))
        try:
            while episodes is None or len(saved) < episodes:
                key = keys.poll(0.0)
                if key == "q":
                    if frames:
                        say(f"quit: the episode in progress ({len(frames)} frames) was discarded")
                        discarded += 1
                    break
                if key == "s" and info is None:
                    info, frames = cell.new_episode(), []
                    say(f"recording episode {writer.num_episodes}: {info[0]!r}")
                elif key == "d" and info is not None:
                    say(f"discarded ({len(frames)} frames)")
                    info, frames, discarded = None, [], discarded + 1
                elif key in ("s", "e", "d"):
                    say(f"key {key!r} ignored: " + ("already recording" if info is not None else "not recording"))
                if info is not None and key != "e":
                    frames.append(cell.sample(first=not frames))
                if info is not None and (key == "e" or len(frames) >= max_episode_s * fps):
                    if frames:
                        episode = _episode(frames, info, cell.outcome(), fps, cell.camera_view())
                        index = writer.add_episode(episode)
                        saved.append(index)
                        n_frames += len(frames)
                        say(f"saved episode {index}: {len(frames)} frames")
                    info, frames = None, []
                cell.wait_next()
        finally:
            cell.end()
    return RecordReport(tuple(saved), discarded, n_frames, time.monotonic() - t_start)


# ---------------------------------------------------------------------------------------------- cells
class SimRecordCell:
    """The simulated cell in teach mode: the scripted expert moves the arm (the hand) one step per tick.

    target: object to demonstrate ("red cup" or an instance id; None = random); seed: first scene seed."""

    def __init__(
        self, target: str | None = None, seed: int = 0, width: int = 640, height: int = 480, period_s: float = 0.05
    ) -> None:
        from robot.sim.config import CellConfig
        from robot.sim.env import PickEnv
        from robot.sim.expert import ExpertConfig, ScriptedExpert

        self.env = PickEnv(CellConfig(control_dt=period_s, image_width=width, image_height=height))
        self.hand = ScriptedExpert(self.env, ExpertConfig(noise_prob=0.0))
        self.period_s, self.target, self.seed = period_s, target, seed
        self.teach = False
        self._obs: Any = None
        self._outcome = "demonstration"

    def begin(self) -> None:
        """Teach mode on (the simulated arm follows the hand)."""
        self.teach = True
        self.new_episode()

    def new_episode(self) -> tuple[str, str, int, tuple[ObjectRecord, ...]]:
        """A new scene (next seed); the hand starts its demonstration."""
        from pipeline.collect import object_records
        from robot.sim.env import ResetOptions

        seed, self.seed = self.seed, self.seed + 1
        self._obs, info = self.env.reset(seed, ResetOptions(target=self.target))
        self.hand.reset(seed)
        self._outcome = "demonstration"
        return info.command, info.target, seed, object_records(info, self._obs)

    def sample(self, first: bool) -> Sample:
        """The last observation of the cell."""
        o = self._obs
        return Sample(
            o.rgb,
            o.depth_mm,
            o.state,
            np.append(o.tcp_pose, o.gripper_width).astype(np.float32),
            o.target_box,
            o.target_mask,
            o.time,
        )

    def wait_next(self) -> None:
        """The hand moves the arm for one period."""
        if self.teach:
            self._obs, _, _, _, info = self.env.step(self.hand.act().executed)
            if info.outcome is not None:
                self._outcome = info.outcome.value

    def outcome(self) -> str:
        """The simulator's verdict on the demonstration, else "demonstration"."""
        return self._outcome

    def camera_view(self) -> CameraView:
        """This scene's camera (the simulator jitters it per scene)."""
        return self.env.camera_view()

    def end(self) -> None:
        """Teach mode off."""
        self.teach = False
        self.env.close()


class RealRecordCell:
    """The real cell: UR5e in freedrive (ur_rtde teach mode), Robotiq 2F-85, RealSense camera.

    host: controller IP; box: the prompt box (pixels) stored with each episode's first frame; target: the
    target's name for the task text; tcp_offset: metres from flange to TCP; calibration: the camera's calibration
    (`sam2grasp calibrate`), which opens that camera by its serial number and is recorded with every episode
    (None: episodes carry no camera record, and heads with place values cannot learn from them). Per-frame boxes
    and masks of real recordings are left empty (zeros): the tracker fills them in when features are cached."""

    def __init__(
        self,
        host: str,
        box: Box | None,
        target: str | None,
        period_s: float = 0.05,
        tcp_offset: float = 0.0,
        width: int = 640,
        height: int = 480,
        calibration: CameraCalibration | None = None,
    ) -> None:
        from robot.realsense import RealSenseCamera
        from robot.robotiq import RobotiqGripper
        from robot.ur5e import UR5e
        from robot.ur5e_config import UR5eConfig

        self.arm = UR5e(UR5eConfig(host=host, tcp_offset=tcp_offset))
        self.gripper = RobotiqGripper(host)
        serial = None if calibration is None else calibration.camera_serial
        self.camera = RealSenseCamera(serial, width=width, height=height)
        self.period_s, self.box, self.target, self.tcp_offset = period_s, box, target, tcp_offset
        self.calibration = calibration
        self._next = 0.0

    def begin(self) -> None:
        """Connect everything, activate the gripper if needed, enter freedrive."""
        self.arm.connect()
        self.camera.open()
        self.gripper.connect()
        self.gripper.activate()
        self.arm.teach_mode()
        self._next = time.monotonic()

    def new_episode(self) -> tuple[str, str, int, tuple[ObjectRecord, ...]]:
        """Task text from the target name (or the box)."""
        name = self.target or "object in the box"
        return f"pick the {name}", self.target or "box", 0, ()

    def sample(self, first: bool) -> Sample:
        """Read camera, joints and gripper now."""
        frame = self.camera.read(1.0)
        h, w = frame.rgb.shape[:2]
        depth = frame.depth_mm if frame.depth_mm is not None else np.zeros((h, w), np.uint16)
        q = self.arm.joint_positions()
        width = self.gripper.width()
        state = np.append(q, width).astype(np.float32)
        ee = np.append(pose_to_vector(forward(q, self.tcp_offset)), width).astype(np.float32)
        box = np.array(self.box if first and self.box is not None else (0, 0, 0, 0), np.float32)
        return Sample(frame.rgb, depth, state, ee, box, np.zeros((h, w), bool), time.monotonic())

    def wait_next(self) -> None:
        """Sleep until the next tick of the policy rate (absolute deadlines; a late tick is not made up)."""
        self._next = max(self._next + self.period_s, time.monotonic())
        time.sleep(max(0.0, self._next - time.monotonic()))

    def outcome(self) -> str:
        """Human demonstrations carry no verdict."""
        return "demonstration"

    def camera_view(self) -> CameraView | None:
        """The open camera's intrinsics with the calibration's `T_base_camera` (None without a calibration)."""
        if self.calibration is None:
            return None
        return CameraView(self.camera.intrinsics, self.calibration.T_base_camera)

    def end(self) -> None:
        """Leave freedrive and release every device, whatever fails on the way."""
        for step in (self.arm.end_teach_mode, self.arm.close, self.camera.close, self.gripper.close):
            try:
                step()
            except Exception:
                log.exception("record: %s failed while shutting down", getattr(step, "__qualname__", step))
