"""`sam2grasp dagger`: a trained policy drives, the corrective expert takes over, and the takeover is recorded.

Demonstrations hold only the states the scripted expert passes through; a policy trained on them drifts off
those states and has never seen what brings it back (the DAgger argument: Ross, Gordon and Bagnell, 2011). Here the
SAM2Grasp agent drives the simulated cell as in `sam2grasp eval` (prompted with the simulator's first-frame box of
the target, every command through the safety layer) until the takeover: at a time drawn uniformly within
[`takeover_min_s`, `takeover_max_s`], or at once when the policy starts to close the gripper where
`CorrectiveExpert` would not close it. From there the expert drives to the end. The episode is appended to a
dataset in the `collect` format with every frame's label from the expert; the frames the policy drove are marked
`learn = False` (their labels continue into motion that never happened, so an action chunk gathered there would
contradict itself), so only the expert's recovery from the policy's own state is learned, while the tracker still
sees the whole episode from its first frame as at run time. Kept: episodes whose takeover ends in success.

A K-step action chunk is learned as a whole only where the following K labels were executed; relabelling every
frame a policy drove (classic DAgger) would teach, wherever the policy lags its labels, a chunk that moves one
step and stops.
Scene seeds must lie in the training range (below the evaluation seeds); resuming continues after the last seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.collect import episode_frame, object_records, recorded_episode, recording
from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode, Frame
from pipeline.evaluate import command_shape, eval_safety_layer
from policy.agent import SAM2GraspAgent, ee_to_joints
from robot.safety import SafetyLayer
from robot.sim.config import CellConfig
from robot.sim.corrective_expert import CorrectiveConfig, CorrectiveExpert
from robot.sim.env import PickEnv
from robot.sim.expert import Phase
from robot.sim.mjcf import GRIPPER_STROKE
from robot.sim.outcome import Outcome
from robot.sim.scene import EVAL_SEED_BASE


@dataclass(frozen=True)
class DaggerConfig:
    """What to record.

    out: dataset to append to (created if missing); episodes: episodes the dataset should hold in the end;
    seed: first scene seed (episode i of this run uses seed + i, resumed after the dataset's last seed);
    cell: the simulated cell (rendering on; its rules' max_episode_s bounds a rollout); corrective: the labelling
    expert; takeover_min_s, takeover_max_s: seconds, the window of the drawn takeover time.
    """

    out: Path
    episodes: int
    seed: int
    cell: CellConfig = field(default_factory=CellConfig)
    corrective: CorrectiveConfig = field(default_factory=CorrectiveConfig)
    takeover_min_s: float = 0.5
    takeover_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {self.episodes}")
        if not 0 <= self.seed <= EVAL_SEED_BASE - self.episodes:
            raise ValueError(
                f"seed must be within 0..{EVAL_SEED_BASE - self.episodes} for {self.episodes} episodes, got "
                f"{self.seed}: seeds from {EVAL_SEED_BASE} on are kept for evaluation scenes"
            )
        limit = self.cell.rules.max_episode_s
        if not (math.isfinite(self.takeover_min_s) and 0 <= self.takeover_min_s <= self.takeover_max_s < limit):
            raise ValueError(
                f"the takeover window must satisfy 0 <= takeover_min_s <= takeover_max_s < {limit} s (the episode "
                f"limit), got [{self.takeover_min_s}, {self.takeover_max_s}] s"
            )
        if not (self.cell.render and self.cell.depth):
            raise ValueError("rollouts are recorded as a dataset: CellConfig.render and depth must be on")


@dataclass(frozen=True)
class DaggerReport:
    """Summary: episodes and frames in the dataset; this run's rollouts, the policy's successes before any
    takeover, the takeovers by reason ("close": the policy began a close the expert would not make; "time": the
    drawn time came), the episodes kept (takeover ended in success), their learned frames; wall-clock seconds."""

    episodes: int
    frames: int
    rollouts: int
    policy_successes: int
    takeovers: dict[str, int]
    kept: int
    learned_frames: int
    outcomes_after_takeover: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class Rollout:
    """One rollout: the recorded episode, the takeover reason ("close", "time", or "" when the policy's episode
    ended first) and the step it happened at (the episode's length when it did not)."""

    episode: Episode
    takeover: str
    takeover_step: int


def run_rollout(
    env: PickEnv,
    agent: SAM2GraspAgent,
    expert: CorrectiveExpert,
    safety: SafetyLayer,
    seed: int,
    takeover_s: float,
) -> Rollout:
    """One rollout of `agent` on scene `seed`, handed to `expert` at `takeover_s` seconds or at a close the
    expert would not make, whichever comes first."""
    obs, info = env.reset(seed)
    expert.reset()
    safety.reset(obs.joints, obs.time)
    objects = object_records(info, obs)
    frames: list[Frame] = []
    takeover, takeover_step = "", -1
    shape = command_shape(info.command)  # the shape the scene's command names, as eval gives it
    action, _ = agent.start(obs.rgb, obs.target_box, obs.state, camera=env.camera_view(), shape=shape)
    outcome: Outcome | None = None
    while outcome is None:
        label = expert.label()
        if not takeover:
            wrong_close = action[6] < 0.5 * GRIPPER_STROKE and expert.phase not in (Phase.CLOSE, Phase.LIFT)
            if wrong_close or obs.time >= takeover_s - 1e-9:
                takeover, takeover_step = ("close" if wrong_close else "time"), len(frames)
        frames.append(dataclasses.replace(episode_frame(obs, label), learn=bool(takeover)))
        chosen = label.astype(np.float64) if takeover else action
        if agent.action_mode == "ee" and not takeover:
            chosen, _ = ee_to_joints(action, env.joint_command)
        cmd = safety.check(chosen[:6], float(chosen[6]), now_s=float(obs.time))
        obs, _, terminated, truncated, step_info = env.step(np.append(cmd.q, cmd.gripper_width))
        if terminated or truncated:
            outcome = step_info.outcome
            break
        if not takeover:
            action, _ = agent.act(obs.rgb, obs.state)
    episode = recorded_episode(env, info, seed, outcome, objects, frames)
    return Rollout(episode, takeover, takeover_step if takeover else len(frames))


def dagger(config: DaggerConfig, agent: SAM2GraspAgent, *, progress: bool | None = None) -> DaggerReport:
    """Append kept takeover episodes to `config.out` until it holds `config.episodes` episodes."""
    t0 = time.monotonic()
    takeovers: Counter[str] = Counter()
    after: Counter[str] = Counter()
    rollouts = successes = kept = learned = 0
    max_rollouts = 5 * config.episodes + 10
    with recording(
        config.out, config.cell, total=config.episodes, first_seed=config.seed, desc="dagger", progress=progress
    ) as rec:
        expert = CorrectiveExpert(rec.env, config.corrective)
        safety = eval_safety_layer(config.cell.control_dt)
        while rec.have < config.episodes:
            if rec.seed >= EVAL_SEED_BASE:
                raise ValueError(f"ran into the evaluation seeds ({EVAL_SEED_BASE}+): start from a lower --seed")
            if rollouts >= max_rollouts:
                raise RuntimeError(
                    f"{rollouts} rollouts kept only {kept} episodes (policy successes before takeover "
                    f"{successes}, outcomes after takeover {dict(after)}); stopped at {rec.have} of {config.episodes}"
                )
            rng = np.random.default_rng([rec.seed, 7])
            takeover_s = float(rng.uniform(config.takeover_min_s, config.takeover_max_s))
            result = run_rollout(rec.env, agent, expert, safety, rec.seed, takeover_s)
            rollouts += 1
            rec.seed += 1
            if not result.takeover:
                successes += int(result.episode.outcome == Outcome.SUCCESS.value)
            else:
                takeovers[result.takeover] += 1
                after[result.episode.outcome] += 1
                if result.episode.outcome == Outcome.SUCCESS.value:
                    rec.writer.add_episode(result.episode)
                    rec.added()
                    kept += 1
                    learned += len(result.episode.frames) - result.takeover_step
            rec.bar.set_postfix(kept=f"{kept}/{rollouts}")
    ds = Dataset(config.out)
    return DaggerReport(
        episodes=len(ds),
        frames=ds.total_frames,
        rollouts=rollouts,
        policy_successes=successes,
        takeovers=dict(takeovers),
        kept=kept,
        learned_frames=learned,
        outcomes_after_takeover=dict(after),
        seconds=time.monotonic() - t0,
    )
