"""`make demo`: the simulated cell picks an object named by a text command, and a video of it is written.

The default runs the method on the shipped compact models: the command is parsed and grounded to a box by the
compact grounder on the first camera frame; the compact SAM2 tracker is prompted with that box and tracks the
object; the ACT head reads its features and the arm's joints and drives the arm; every command passes the safety
layer. A command that cannot be grounded to exactly one object (unknown words, ambiguity, nothing matching) ends
the demo before anything moves. `--expert` replaces tracker and head by the scripted expert (privileged simulator
state), still grounded from the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grounding.commands import TargetQuery, parse_command
from grounding.errors import GroundingError
from grounding.service import load_grounding_service
from pipeline.dataset.video import write_rgb_video
from pipeline.jobs.sim_view import match_instance
from pipeline.overlay import draw_overlay
from robot.camera_view import CameraView
from robot.sim.catalogue import ObjectKind, all_kinds
from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv, ResetInfo, ResetOptions
from robot.sim.expert import ScriptedExpert
from robot.sim.scene import MAX_OBJECTS, MIN_OBJECTS, SceneRequest, SceneSpec, sample_scene

#: The shipped compact models (trained by the commands in models/README.md).
MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_HEAD = MODELS / "sam2grasp_head"
DEFAULT_TRACKER = MODELS / "tracker_compact.safetensors"
METHOD = "SAM2Grasp (compact grounder + compact tracker + ACT head)"


@dataclass(frozen=True)
class DemoResult:
    """Outcome of the demo episode, the command, the method, frames written, seconds simulated, the video (None
    when nothing ran), the grounded target (`target` the parsed pick, `box` pixels, `score` 0..1, `iou` with the
    simulator's box of the object it was taken for) and the grounding error (`type`, `message`) when refused."""

    outcome: str
    command: str
    method: str
    frames: int
    sim_seconds: float
    video: Path | None
    target: str = ""
    box: tuple[float, float, float, float] | None = None
    score: float = 0.0
    iou: float = 0.0
    error: dict[str, object] | None = None


def demo_scene(kind: ObjectKind, seed: int, n_objects: int, camera_jitter: float) -> SceneSpec:
    """A scene of `n_objects` holding one object of `kind` and others of different names."""
    if not MIN_OBJECTS <= n_objects <= MAX_OBJECTS:
        raise ValueError(
            f"the demo scene holds at least {MIN_OBJECTS} and at most {MAX_OBJECTS} objects, got {n_objects}"
        )
    rng = np.random.default_rng(seed)
    others = [k for k in all_kinds() if k != kind]
    picks = rng.choice(len(others), size=n_objects - 1, replace=False)
    names = (kind.name, *(others[int(i)].name for i in picks))
    return sample_scene(seed, SceneRequest(names=names, camera_jitter=camera_jitter))


class _FixedScene:
    """A PickEnv whose reset always builds the given scene and target (what `run_trial` drives)."""

    def __init__(self, env: PickEnv, options: ResetOptions) -> None:
        self.env, self.options = env, options

    def reset(self, seed: int) -> tuple[Observation, ResetInfo]:
        return self.env.reset(seed, self.options)

    def step(self, action: npt.ArrayLike) -> Any:
        return self.env.step(action)

    def camera_view(self) -> CameraView:
        """The scene's camera calibration (for a head that reads place values)."""
        return self.env.camera_view()


def _run_expert(
    env: PickEnv, options: ResetOptions, seed: int, frames: list[npt.NDArray[np.uint8]]
) -> tuple[str, float]:
    expert = ScriptedExpert(env)
    obs, info = env.reset(seed, options)
    expert.reset(seed)
    while True:
        if obs.rgb is None:
            raise RuntimeError("the demo needs rendering")
        caption = f"'{info.command}'  scripted expert (privileged state)  t={obs.time:4.2f}s"
        frames.append(draw_overlay(obs.rgb, box=obs.target_box, mask=obs.target_mask, caption=caption))
        obs, _, terminated, truncated, step = env.step(expert.act().executed)
        if terminated or truncated:
            return str(step.outcome.value) if step.outcome else "timeout", step.time


def _scene_for(query: TargetQuery, seed: int, n_objects: int, camera_jitter: float) -> SceneSpec:
    """A scene holding the named object when colour and shape are both said, else a random one."""
    colour, shape = query.target.colour, query.target.shape
    if colour is not None and shape is not None:
        return demo_scene(ObjectKind(colour, shape), seed, n_objects, camera_jitter)
    if not MIN_OBJECTS <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"the demo scene holds {MIN_OBJECTS}..{MAX_OBJECTS} objects, got {n_objects}")
    return sample_scene(seed, SceneRequest(n_objects=(n_objects, n_objects), camera_jitter=camera_jitter))


def _instance_of(obs: Observation, scene: SceneSpec, box: tuple[float, float, float, float]) -> tuple[str, float]:
    """The scene object whose visible box overlaps `box` most, and that overlap (IoU); the first object when
    none overlaps (the trial then measures a pick of an object the grounding did not name)."""
    if obs.instance_map is None:
        raise RuntimeError("the demo needs the simulator's segmentation to score the grounding")
    best, best_iou = match_instance(obs.instance_map, scene, box)
    return best or scene.objects[0].instance, best_iou


def run_demo(
    command: str,
    out: Path,
    *,
    seed: int = 0,
    n_objects: int = 4,
    expert: bool = False,
    head: Path = DEFAULT_HEAD,
    tracker: Path = DEFAULT_TRACKER,
    grounder: Path | None = None,
    width: int = 320,
    height: int = 240,
    max_seconds: float = 15.0,
) -> DemoResult:
    """Ground `command` ("pick the red cube") in a scene of `n_objects`, pick it, write the video `out` (mp4).

    Only the command's first pick runs (`sam2grasp sequence` runs several). Raises UnsupportedCommand (a
    ValueError) for a command that cannot be read; a grounding refusal is returned as the result's `error`.
    """
    query = parse_command(command)[0]
    cell = CellConfig(image_width=width, image_height=height, depth=False)
    scene = _scene_for(query, seed, n_objects, cell.scene.camera_jitter)
    method = "scripted expert (privileged state), grounded from text" if expert else METHOD
    service = load_grounding_service("compact", model=grounder)
    env = PickEnv(cell)
    frames: list[npt.NDArray[np.uint8]] = []
    try:
        obs, _ = env.reset(seed, ResetOptions(scene=scene))
        if obs.rgb is None:
            raise RuntimeError("the demo needs rendering")
        try:
            det = service.locate(obs.rgb, query)
        except GroundingError as e:
            return DemoResult("refused", command, method, 0, 0.0, None, query.describe(), error=e.to_json())
        instance, iou = _instance_of(obs, scene, det.box_xyxy_px)
        options = ResetOptions(scene=scene, target=instance)
        if expert:
            outcome, sim_s = _run_expert(env, options, seed, frames)
        else:
            from pipeline.evaluate import EvalConfig, run_trial
            from policy.agent import load_agent

            for path in (head, tracker):
                if not path.exists():
                    raise FileNotFoundError(f"{path} is missing: the shipped models live in {MODELS}")
            agent = load_agent(head, tracker)
            cfg = EvalConfig(trials=1, out=out.parent, width=width, height=height, max_seconds=max_seconds)
            caption = f"'{command}'  SAM2Grasp"
            prompt = np.asarray(det.box_xyxy_px, np.float32)
            trial = run_trial(
                agent,
                _FixedScene(env, options),
                seed,
                cfg,
                frames=frames,
                caption=caption,
                prompt_box=prompt,
                command=command,
            )
            outcome, sim_s = trial.outcome, trial.sim_seconds
    finally:
        env.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_rgb_video(out, np.stack(frames), fps=1.0 / cell.control_dt)
    return DemoResult(
        outcome, command, method, len(frames), sim_s, out, query.describe(), det.box_xyxy_px, det.score, iou
    )
