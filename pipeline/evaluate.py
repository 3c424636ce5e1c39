"""`sam2grasp eval`: closed-loop success of a policy in the simulated cell, per test-time occlusion level.

Protocol (after the SAM2Grasp paper): for every occlusion level p and trial i, scene seed 10_000_000 + seed + i
(training data uses seeds below 10_000_000, so test scenes are never training scenes; the same seeds at every
level), a `PickEnv` wrapped in `OcclusionWrapper(env, p)` that blacks out a share p of the frames after the first.
The agent is prompted with the simulator's ground-truth box of the target on the first frame: this measures the
policy given a correct prompt; grounding the box from the text command is a separate stage (and benchmark) still
to be wired in here. Every step: `agent.act(rgb, state)` → (ee mode: IK) → `SafetyLayer.check` (clamp mode, period =
control_dt) → `env.step`, until the episode terminates or is truncated.

Timing: lockstep by default (the simulation waits for the policy). With `latency`, before each new action takes
effect the previous safe command keeps executing for ceil(inference seconds / control_dt) − 1 extra control steps,
so the simulation advances by the measured inference time and the policy acts on a stale frame, as on the robot.

An agent error (bad input, NaN/inf output, tracker failure) ends the trial as `failed_input` after sending the
previous safe command once (the arm holds still); it never ends the run.

The image baselines (`policy.image_agent.ImageACTAgent`: act, act-cvae, act-cvae-condition) run the same protocol,
seeds and safety layer; `act` and `act-cvae` do not use the prompt box, `act-cvae-condition` draws the box of the
tracker prompted with it. The report records which policy type ran (`policy_type`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.atomic_file import write_json
from pipeline.empty_closes import EmptyCloseWatch, table_footprints
from pipeline.eval_report import FAILED_INPUT, EvalReport, LevelResult, TrialResult, level_result
from policy.agent import SAM2GraspAgent, ee_to_joints
from policy.image_agent import ImageACTAgent
from robot.safety import SafetyLayer, SafetyLimits
from robot.sim.env import Observation
from robot.sim.outcome import Outcome
from robot.sim.scene import EVAL_SEED_BASE

F64 = npt.NDArray[np.float64]
#: Test scene seeds start here; training seeds are below it.
SEED_BASE = EVAL_SEED_BASE
#: What `evaluate` runs: SAM2Grasp, or an image baseline (act, act-cvae, act-cvae-condition) on the same protocol.
EvalAgent = SAM2GraspAgent | ImageACTAgent


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate.

    trials: trials per level; objects: (min, max) objects per scene; occlusion: shares p of blacked-out frames;
    seed: offset of the test seeds (>= 0); width, height: camera pixels; max_seconds: simulated seconds per trial;
    videos: trials per level written as videos; latency: asynchrony by measured inference time (else lockstep);
    control_dt: seconds per control step; out: directory for results.json, the plot and videos.
    """

    trials: int
    out: Path
    objects: tuple[int, int] = (3, 6)
    occlusion: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
    seed: int = 0
    width: int = 320
    height: int = 240
    max_seconds: float = 15.0
    videos: int = 0
    latency: bool = False
    control_dt: float = 0.05

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.seed < 0:
            raise ValueError(
                f"seed must be >= 0, got {self.seed}: test scenes use seeds {SEED_BASE} + seed + i, and seeds below "
                f"{SEED_BASE} are training scenes"
            )
        if not self.occlusion or any(not 0.0 <= p <= 1.0 for p in self.occlusion):
            raise ValueError(f"occlusion levels must be shares within [0, 1], got {list(self.occlusion)}")
        if len(set(self.occlusion)) != len(self.occlusion):
            raise ValueError(f"occlusion levels repeat: {list(self.occlusion)}")
        if not (math.isfinite(self.max_seconds) and 0 < self.max_seconds <= 600):
            raise ValueError(f"max_seconds must be within (0, 600] s, got {self.max_seconds}")
        if self.videos < 0:
            raise ValueError(f"videos must be >= 0, got {self.videos}")

    @property
    def seeds(self) -> list[int]:
        """The scene seeds, the same at every level."""
        return [SEED_BASE + self.seed + i for i in range(self.trials)]


def parse_levels(text: str) -> tuple[float, ...]:
    """ "0,0.2,0.4" as occlusion levels, or a ValueError saying what is valid."""
    try:
        levels = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"occlusion must be comma-separated shares within [0, 1] (e.g. 0,0.2,0.4), got {text!r}"
        ) from None
    if not levels:
        raise ValueError(f"occlusion must list at least one share within [0, 1], got {text!r}")
    return levels


class _AgentFailedError(Exception):
    """Internal: the agent (or the safety check of its action) failed; the trial ends as failed_input."""


class _Trial:
    """The state of one running trial: environment, safety layer, last safe command, counters."""

    def __init__(self, env: Any, agent: EvalAgent, safety: SafetyLayer, obs: Any) -> None:
        self.env, self.agent, self.safety, self.obs = env, agent, safety, obs
        self.safety.reset(obs.joints, obs.time)
        q = self.safety.last_q
        if q is None:
            raise RuntimeError("safety layer not seeded")
        self.last_cmd: F64 = np.append(q, obs.gripper_width)  # hold where the arm is
        self.steps = self.clamped = self.ik_failures = self.latency_steps = 0
        self.step_times: list[float] = []
        self.visible: list[bool] = []
        self.outcome: Outcome | None = None
        self.done = False
        self.closes = EmptyCloseWatch()

    def agent_call(self, call: Callable[[], tuple[F64, Any]]) -> tuple[F64, Any]:
        t0 = time.perf_counter()
        try:
            return call()
        finally:
            self.step_times.append(time.perf_counter() - t0)

    def safe_command(self, action: F64) -> F64:
        """The safety-checked joint command (7,) for an action of the agent's mode."""
        if self.agent.action_mode == "ee":
            action, ok = ee_to_joints(action, self.last_cmd[:6])
            self.ik_failures += int(not ok)
        cmd = self.safety.check(action[:6], float(action[6]), now_s=float(self.obs.time))
        self.clamped += int(cmd.clamped)
        return np.append(cmd.q, cmd.gripper_width)

    def send(self, command: F64) -> None:
        """Step the environment with a command that already passed the safety layer."""
        obs, _, terminated, truncated, info = self.env.step(command)
        self.obs = obs
        self.last_cmd = command
        self.steps += 1
        self.closes.update(obs.gripper_width, obs.tcp_pose[:2], lambda: table_footprints(self.env))
        if terminated or truncated:
            self.outcome, self.done = info.outcome, True

    def hold(self) -> None:
        """Send the previous safe command once more (re-checked: a command is never sent unchecked)."""
        cmd = self.safety.check(self.last_cmd[:6], float(self.last_cmd[6]), now_s=float(self.obs.time))
        self.send(np.append(cmd.q, cmd.gripper_width))


def eval_safety_layer(control_dt: float) -> SafetyLayer:
    """The safety layer of evaluation: default limits, clamp mode, one check per control step."""
    from robot.sim.mjcf import TCP_OFFSET

    return SafetyLayer(SafetyLimits(violation_mode="clamp"), tcp_offset=TCP_OFFSET, period_s=control_dt)


def command_shape(command: str) -> str | None:
    """The catalogue shape a pick command names for its (first) target, read as grounding reads it ("pick the left
    red cup" -> "cup"; None when it names no shape)."""
    from grounding.commands import parse_command

    said = parse_command(command)[0].target.shape
    return None if said is None else said.value


def run_trial(
    agent: EvalAgent,
    env: Any,
    seed: int,
    cfg: EvalConfig,
    frames: list[npt.NDArray[np.uint8]] | None = None,
    caption: str = "",
    safety: SafetyLayer | None = None,
    prompt_box: npt.NDArray[np.float32] | None = None,
    command: str | None = None,
) -> TrialResult:
    """One closed-loop trial on `env` (an `OcclusionWrapper`); tracked frames go to `frames` when given.

    safety: the layer every command passes (re-seeded here with the measured joints; default a new one);
    prompt_box: the tracker's first-frame box, pixels x0, y0, x1, y1 (default: the simulator's target box);
    command: the text that asked for the pick, whose target's shape a SAM2Grasp agent is given (default: the
    scene's own command naming its target)."""
    from pipeline.overlay import draw_overlay

    obs, info = env.reset(seed)
    if isinstance(agent, SAM2GraspAgent) and agent.needs_camera:
        agent.camera = env.camera_view()  # this scene's camera calibration, for a head that reads place values
    shape = command_shape(info.command if command is None else command)
    trial = _Trial(env, agent, safety or eval_safety_layer(cfg.control_dt), obs)
    max_steps = math.ceil(cfg.max_seconds / cfg.control_dt) + 2
    error: str | None = None

    def record(step: Any) -> None:
        trial.visible.append(bool(step.visible))
        if frames is not None and trial.obs.rgb is not None:
            text = f"{caption} t={trial.obs.time:.2f}s {'seen' if step.visible else 'lost'}"
            frames.append(draw_overlay(trial.obs.rgb, box=step.box, mask=step.mask, caption=text))

    def guarded(call: Callable[[], Any]) -> Any:
        nonlocal error
        try:
            return call()
        except Exception as exc:  # an agent failure ends this trial, never the run
            error = f"{type(exc).__name__}: {exc}"
            raise _AgentFailedError from exc

    oracle = agent.tracker is not None and agent.tracker.config.oracle

    def prompt(box: npt.NDArray[np.float32]) -> tuple[F64, Any]:
        """The agent's first action and step; a SAM2Grasp agent is also given the shape the command names, part of
        the prompt as in the product."""
        if isinstance(agent, SAM2GraspAgent):
            return agent.start(obs.rgb, box, obs.state, true_mask(), shape=shape)
        return agent.start(obs.rgb, box, obs.state, true_mask())

    def true_mask() -> npt.NDArray[np.bool_] | None:
        """The simulator's target mask for an oracle tracker (empty on a blacked-out frame: the camera saw nothing)."""
        if not oracle:
            return None
        current: Observation = trial.obs
        if current.target_mask is None:
            raise RuntimeError("an oracle tracker needs the simulator's segmentation, and this cell renders none")
        hidden = bool(getattr(env, "last_occluded", False))
        return np.zeros_like(current.target_mask) if hidden else current.target_mask

    try:
        action, step = guarded(
            lambda: trial.agent_call(lambda: prompt(obs.target_box if prompt_box is None else prompt_box))
        )
        record(step)
        while not trial.done and trial.steps < max_steps:
            if cfg.latency:
                waited = math.ceil(trial.step_times[-1] / cfg.control_dt - 1e-9) - 1
                for _ in range(max(0, waited)):
                    if trial.done:
                        break
                    trial.hold()
                    trial.latency_steps += 1
                if trial.done:
                    break
            trial.send(guarded(functools.partial(trial.safe_command, action)))
            if trial.done:
                break
            action, step = guarded(
                lambda: trial.agent_call(lambda: agent.act(trial.obs.rgb, trial.obs.state, true_mask()))
            )
            record(step)
    except _AgentFailedError:
        if not trial.done:
            trial.hold()  # the arm holds still: the previous safe command, once
    if error is not None:
        outcome = FAILED_INPUT
    elif trial.outcome is not None:
        outcome = trial.outcome.value
    else:
        outcome = Outcome.TIMEOUT.value
    wrapper_frames = getattr(env, "frames", 0)
    return TrialResult(
        seed=seed,
        outcome=outcome,
        steps=trial.steps,
        sim_seconds=float(trial.obs.time),
        step_ms=1000.0 * float(np.mean(trial.step_times)) if trial.step_times else float("nan"),
        visible_share=float(np.mean(trial.visible)) if trial.visible else 0.0,
        occluded_share=float(getattr(env, "rate", 0.0)) if wrapper_frames else 0.0,
        clamped_steps=trial.clamped,
        ik_failures=trial.ik_failures,
        latency_steps=trial.latency_steps,
        error=error,
        coasted_steps=int(getattr(agent, "coasted", 0)),
        empty_close_sites=list(trial.closes.sites),
    )


def _describe(agent: EvalAgent) -> dict[str, str]:
    """How the report names the agent: policy type, display name, input features, prompt and perception."""
    prompt = "ground-truth target box on the first frame (simulator)"
    if isinstance(agent, SAM2GraspAgent):
        perception = agent.tracker.config.mask_source
        if agent.head.config.grasp_yaw_named or agent.head.config.shape_input:
            prompt += " and the target's shape as its command names it"
        return {
            "policy_type": "sam2grasp",
            "name": "SAM2Grasp",
            "features": agent.spec.name,
            "prompt": prompt,
            "perception": perception,
        }
    if agent.tracker is None:
        prompt = "none: the image baseline reads the frame alone (the ground-truth box is not used)"
    else:
        prompt += ", tracked by SAM2 and drawn on every frame"
    perception = "none" if agent.tracker is None else agent.tracker.config.mask_source
    return {
        "policy_type": agent.policy_type,
        "name": agent.policy_type.upper(),
        "features": agent.input_name,
        "prompt": prompt,
        "perception": perception,
    }


def chunk_execution(agent: object) -> str:
    """How `agent`'s head turns chunks into actions, in words ("" when it has no ACT head config)."""
    head = getattr(agent, "head", None) or getattr(agent, "policy", None)
    cfg = getattr(head, "config", None)
    if cfg is None or not hasattr(cfg, "temporal_ensemble_coeff"):
        return ""
    m = cfg.temporal_ensemble_coeff
    if m is not None:
        return f"ensemble m={m:g}"
    return f"first {cfg.action_steps} of each chunk of {cfg.chunk_size}"


def evaluate(
    agent: EvalAgent,
    cfg: EvalConfig,
    *,
    policy: str = "",
    tracker_checkpoint: str = "",
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run every trial of every level (see the module doc); write results.json, success_vs_occlusion.png, the
    videos and trials.jsonl (one line per trial as it ends) into `cfg.out`; return the report."""
    from pipeline.dataset.video import write_rgb_video
    from pipeline.eval_report import draw_success_plot
    from robot.sim.config import CellConfig
    from robot.sim.env import PickEnv
    from robot.sim.occlusion import OcclusionWrapper
    from robot.sim.outcome import OutcomeRules
    from robot.sim.scene import SceneRequest

    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.jsonl").unlink(missing_ok=True)
    cell = CellConfig(
        control_dt=cfg.control_dt,
        image_width=cfg.width,
        image_height=cfg.height,
        depth=False,
        scene=SceneRequest(n_objects=cfg.objects),
        rules=OutcomeRules(max_episode_s=cfg.max_seconds),
    )
    env = PickEnv(cell)
    safety = eval_safety_layer(cfg.control_dt)  # re-seeded every trial; one, so each kind of clamp logs once
    levels: list[LevelResult] = []
    try:
        for p in cfg.occlusion:
            wrapper = OcclusionWrapper(env, p)
            results: list[TrialResult] = []
            videos: list[str] = []
            for i, seed in enumerate(cfg.seeds):
                frames: list[npt.NDArray[np.uint8]] | None = [] if i < cfg.videos else None
                wrapper.frames = wrapper.occluded = 0
                result = run_trial(agent, wrapper, seed, cfg, frames, f"p={p:g} seed={seed}", safety)
                if frames:
                    path = out / f"video_p{p:g}_seed{seed}.mp4"
                    write_rgb_video(path, frames, fps=1.0 / cfg.control_dt)
                    result = dataclasses.replace(result, video=str(path))
                    videos.append(str(path))
                results.append(result)
                line = json.dumps({"occlusion": p, "trial": i, **asdict(result)})
                with open(out / "trials.jsonl", "a") as log:  # survives a run that dies before results.json
                    log.write(line + "\n")
                if progress is not None:
                    progress(line)
            levels.append(level_result(p, results, videos))
    finally:
        env.close()
    desc = _describe(agent)
    plot = draw_success_plot(
        [lv.occlusion for lv in levels],
        [lv.rate for lv in levels],
        [(lv.wilson_low, lv.wilson_high) for lv in levels],
        out / "success_vs_occlusion.png",
        title=f"{desc['name']} ({desc['features']}, {agent.action_mode}"
        + (", ORACLE masks" if agent.tracker is not None and agent.tracker.config.oracle else "")
        + "): success vs occlusion, Wilson 95% bars",
        trials=[lv.trials for lv in levels],
    )
    total = sum(lv.trials for lv in levels)
    report = EvalReport(
        policy=policy,
        tracker_checkpoint=tracker_checkpoint,
        feature_spec=desc["features"],
        action_mode=agent.action_mode,
        mode="latency" if cfg.latency else "lockstep",
        trials=cfg.trials,
        objects=list(cfg.objects),
        seed=cfg.seed,
        width=cfg.width,
        height=cfg.height,
        max_seconds=cfg.max_seconds,
        control_dt=cfg.control_dt,
        prompt=desc["prompt"],
        perception=desc["perception"],
        levels=levels,
        empty_grasp_share=sum(lv.outcomes[Outcome.EMPTY_GRASP.value] for lv in levels) / total,
        safety_violations=dict(safety.violation_counts),
        results=str(out / "results.json"),
        plot=str(plot),
        seconds=time.perf_counter() - start,
        policy_type=desc["policy_type"],
        coast_unseen=bool(getattr(agent, "coast_unseen", False)),
        chunk_execution=chunk_execution(agent),
        between_objects_share=sum(lv.between_objects_share * lv.trials for lv in levels) / total,
    )
    write_json(out / "results.json", asdict(report), default=str)
    return report
