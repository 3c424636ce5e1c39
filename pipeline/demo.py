"""`make demo`: the simulated cell picks an object named by text, and a video of it is written.

The default runs the method on the shipped compact models: the compact SAM2 tracker is prompted with the named
object's box on the first frame and tracks it; the ACT head reads its features and the arm's joints and drives
the arm; every command passes the safety layer. Until language grounding lands, the prompt box of the named object
comes from the simulator's segmentation (ground truth), and the command names an object as "<colour> <shape>".
`--expert` runs the scripted expert instead (privileged simulator state, no learned model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.dataset.video import write_rgb_video
from pipeline.overlay import draw_overlay
from robot.sim.catalogue import ObjectKind, all_kinds, parse_object_name
from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv, ResetInfo, ResetOptions
from robot.sim.expert import ScriptedExpert
from robot.sim.scene import MAX_OBJECTS, MIN_OBJECTS, SceneRequest, SceneSpec, sample_scene

#: The shipped compact models (trained by the commands in models/README.md).
MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_HEAD = MODELS / "sam2grasp_head"
DEFAULT_TRACKER = MODELS / "tracker_compact.safetensors"


@dataclass(frozen=True)
class DemoResult:
    """Outcome of the demo episode, the command shown, the method, frames written, seconds simulated, the video."""

    outcome: str
    command: str
    method: str
    frames: int
    sim_seconds: float
    video: Path


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


def run_demo(
    target: str,
    out: Path,
    *,
    seed: int = 0,
    n_objects: int = 4,
    expert: bool = False,
    head: Path = DEFAULT_HEAD,
    tracker: Path = DEFAULT_TRACKER,
    width: int = 320,
    height: int = 240,
    max_seconds: float = 15.0,
) -> DemoResult:
    """Pick `target` ("red cube") in a scene of `n_objects`, write the video `out` (mp4) with the tracked mask."""
    kind = parse_object_name(target)
    cell = CellConfig(image_width=width, image_height=height, depth=False)
    scene = demo_scene(kind, seed, n_objects, cell.scene.camera_jitter)
    options = ResetOptions(scene=scene, target=kind.name)
    env = PickEnv(cell)
    frames: list[npt.NDArray[np.uint8]] = []
    command = f"pick the {kind.name}"
    try:
        if expert:
            method = "scripted expert"
            outcome, sim_s = _run_expert(env, options, seed, frames)
        else:
            from pipeline.evaluate import EvalConfig, run_trial
            from policy.agent import load_agent

            for path in (head, tracker):
                if not path.exists():
                    raise FileNotFoundError(f"{path} is missing: the shipped models live in {MODELS}")
            method = "SAM2Grasp (compact tracker + ACT head)"
            agent = load_agent(head, tracker)
            cfg = EvalConfig(trials=1, out=out.parent, width=width, height=height, max_seconds=max_seconds)
            caption = f"'{command}'  SAM2Grasp"
            trial = run_trial(agent, _FixedScene(env, options), seed, cfg, frames=frames, caption=caption)
            outcome, sim_s = trial.outcome, trial.sim_seconds
    finally:
        env.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_rgb_video(out, np.stack(frames), fps=1.0 / cell.control_dt)
    return DemoResult(outcome, command, method, len(frames), sim_s, out)
