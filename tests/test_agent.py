"""The SAM2Grasp agent: tracker → F_t → ACT head, its checks, checkpoint round trip and the runtime adapter.

Small on purpose: the compact tracker at 64 px with seeded random weights and a tiny head (dim 32, K 5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_HEAD, K

from policy.act import ACTPolicy
from policy.act_config import ACTConfig
from policy.agent import (
    TRACKER_INFO_FILE,
    AgentChunkPredictor,
    AgentError,
    SAM2GraspAgent,
    ee_to_joints,
    load_agent,
)
from policy.cache import load_tracker, weights_sha256
from policy.checkpoint import save_policy
from policy.features import parse_feature_spec
from policy.sam2_build import save_safetensors, tracker_metadata, tracker_spec
from policy.tracker import SAM2Tracker

torch.set_num_threads(1)

BOX = (10.0, 12.0, 30.0, 30.0)


def tiny_head(spec: str = "pooled2", token_dim: int = 64, **kw: object) -> ACTPolicy:
    fields: dict[str, object] = {
        "feature_spec": spec,
        "token_dim": token_dim,
        "n_tokens": parse_feature_spec(spec).num_tokens(),
        **TINY_HEAD,
    }
    fields.update(kw)
    torch.manual_seed(0)
    return ACTPolicy(ACTConfig(**fields)).eval()  # type: ignore[arg-type]


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A bright square drifting over noise, 48x64."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        img = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        img[12 + t : 30 + t, 10 + t : 30 + t] = (220, 40, 40)
        out.append(img)
    return out


STATE = np.array([-0.3, -1.7, 1.8, -1.65, -1.57, -0.3, 0.085], dtype=np.float32)


@pytest.fixture(scope="module")
def tracker() -> SAM2Tracker:
    return load_tracker("compact", image_size=64, allow_random=True, seed=0)


def test_start_and_act_give_actions_and_tracker_steps(tracker: SAM2Tracker) -> None:
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), tiny_head())
    fs = frames(4)
    action, step = agent.start(fs[0], BOX, STATE)
    assert action.shape == (7,)
    assert action.dtype == np.float64
    assert np.all(np.isfinite(action))
    assert step.index == 0
    assert step.mask.shape == (48, 64)
    for t in range(1, 4):
        action, step = agent.act(fs[t], STATE)
        assert action.shape == (7,)
        assert step.index == t
    chunk, step = agent.chunk(fs[0], STATE)
    assert chunk.shape == (K, 7)


def test_start_resets_the_head_so_episodes_repeat(tracker: SAM2Tracker) -> None:
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pointer"), tiny_head("pointer"))
    fs = frames(3)

    def episode() -> np.ndarray:
        first, _ = agent.start(fs[0], BOX, STATE)
        return np.stack([first] + [agent.act(f, STATE)[0] for f in fs[1:]])

    np.testing.assert_allclose(episode(), episode(), rtol=1e-5, atol=1e-6)


def test_spec_and_token_shape_mismatch_are_clear_errors(tracker: SAM2Tracker) -> None:
    with pytest.raises(ValueError, match=r"feature spec 'pooled2'.*extracts 'pointer'"):
        SAM2GraspAgent(tracker, parse_feature_spec("pointer"), tiny_head("pooled2"))
    with pytest.raises(ValueError, match=r"tokens of shape \(5, 256\).*\(5, 64\)"):
        SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), tiny_head("pooled2", token_dim=256))


def test_bad_inputs_and_nan_outputs_raise_agent_errors(tracker: SAM2Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    head = tiny_head()
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head)
    fs = frames(2)
    with pytest.raises(AgentError, match="state must be 7 finite"):
        agent.start(fs[0], BOX, np.full(7, np.nan))
    with pytest.raises(ValueError, match="box"):
        agent.start(fs[0], (0, 0, 1, 1), STATE)
    agent.start(fs[0], BOX, STATE)
    with pytest.raises(ValueError, match="frame"):
        agent.act(np.zeros((48, 64), np.uint8), STATE)
    monkeypatch.setattr(head, "predict_action_chunk", lambda inp: torch.full((1, K, 7), float("nan")))
    with pytest.raises(AgentError, match="NaN/inf"):
        agent.start(fs[0], BOX, STATE)


def test_load_agent_round_trip(tmp_path: Path, tracker: SAM2Tracker) -> None:
    head = tiny_head()
    save_policy(tmp_path / "policy", head)
    ckpt = tmp_path / "tracker.safetensors"
    save_safetensors(tracker.model, ckpt, tracker_metadata(tracker_spec("compact", 64)))
    original = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head)
    loaded = load_agent(tmp_path / "policy", ckpt, "compact", 64)
    assert loaded.spec.name == "pooled2"
    assert loaded.action_mode == "joint"
    fs = frames(3)
    for agent_out in (original, loaded):
        agent_out.start(fs[0], BOX, STATE)
    a = np.stack([original.act(f, STATE)[0] for f in fs[1:]])
    b = np.stack([loaded.act(f, STATE)[0] for f in fs[1:]])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # a training record pins the tracker: defaults come from it, other weights are refused
    record = {"tracker": "compact", "image_size": 64, "memory_frames": 15, "score_threshold": 0.0}
    record |= {"dtype": "float32", "weights_sha256": weights_sha256(tracker.model)}
    (tmp_path / "policy" / TRACKER_INFO_FILE).write_text(json.dumps(record))
    assert load_agent(tmp_path / "policy", ckpt).tracker.image_size == 64
    with pytest.raises(ValueError, match=r"image_size=64.*image_size=96"):
        load_agent(tmp_path / "policy", ckpt, image_size=96)
    other = load_tracker("compact", image_size=64, allow_random=True, seed=1)
    other_ckpt = tmp_path / "other.safetensors"
    save_safetensors(other.model, other_ckpt, tracker_metadata(tracker_spec("compact", 64)))
    with pytest.raises(ValueError, match="other weights"):
        load_agent(tmp_path / "policy", other_ckpt)


def test_chunk_predictor_prompts_once_then_tracks(tracker: SAM2Tracker) -> None:
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), tiny_head())
    predictor = AgentChunkPredictor(agent, BOX)
    fs = frames(3)
    for t, f in enumerate(fs):
        chunk = predictor.predict(f, STATE)
        assert chunk.shape == (K, 7)
        assert predictor.last_step is not None
        assert predictor.last_step.index == t
    predictor.reprompt(BOX)
    predictor.predict(fs[0], STATE)
    assert predictor.last_step is not None
    assert predictor.last_step.index == 0


def test_ee_actions_become_joint_targets_by_ik() -> None:
    from robot.kinematics import forward, pose_to_vector
    from robot.sim.config import HOME_Q
    from robot.sim.mjcf import TCP_OFFSET

    q_home = np.asarray(HOME_Q)
    pose = pose_to_vector(forward(q_home, TCP_OFFSET))
    target = pose + np.array([0.02, -0.01, 0.03, 0, 0, 0])
    q, ok = ee_to_joints(np.append(target, 0.04), q_home)
    assert ok
    assert q[6] == pytest.approx(0.04)
    np.testing.assert_allclose(pose_to_vector(forward(q[:6], TCP_OFFSET))[:3], target[:3], atol=1e-3)
    q_far, ok_far = ee_to_joints(np.append([5.0, 5.0, 5.0, 0, 0, 0], 0.0), q_home)
    assert not ok_far
    np.testing.assert_allclose(q_far[:6], q_home)


def test_chunk_predictor_drives_the_lockstep_runtime(tracker: SAM2Tracker) -> None:
    """The adapter in the runtime's own loop: observation objects in, joint chunks out, safety-checked ticks."""
    from pipeline.runtime.lockstep import LockstepConfig, run_lockstep
    from robot.sim.config import CellConfig
    from robot.sim.env import PickEnv
    from robot.sim.scene import SceneRequest
    from robot.sim.sim_robot import SimRobot

    env = PickEnv(CellConfig(image_width=64, image_height=48, depth=False, scene=SceneRequest(n_objects=(3, 3))))
    try:
        obs, _ = env.reset(10_000_000)
        head = tiny_head()
        # a head fitted to "hold the current joints" keeps the test's motion small and inside the limits
        head.normalizer.action_mean.copy_(torch.as_tensor(obs.state, dtype=torch.float32))
        head.normalizer.action_std.fill_(1e-6)
        predictor = AgentChunkPredictor(SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head), obs.target_box)
        result = run_lockstep(SimRobot(env, obs), predictor, LockstepConfig(max_ticks=6, replan_ticks=3))
    finally:
        env.close()
    assert result.loop.reason.value == "max_ticks", result.loop.detail
    assert result.chunks == 2
    assert predictor.last_step is not None
    assert predictor.last_step.index == 1


def test_unseen_frames_coast_on_earlier_chunks(tracker: SAM2Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame whose tracker step is not visible takes its action from the chunks already predicted (the head is
    not asked); with coast_unseen False, or once no chunk reaches the step, the head predicts as on any frame."""
    head = tiny_head(temporal_ensemble_coeff=0.01)
    agent = SAM2GraspAgent(tracker, parse_feature_spec("pooled2"), head)
    fs = frames(K + 3)
    calls: list[int] = []
    original = head.predict_action_chunk

    def counting(inp: object) -> torch.Tensor:
        calls.append(1)
        return original(inp)  # type: ignore[arg-type]

    monkeypatch.setattr(head, "predict_action_chunk", counting)
    agent.start(fs[0], BOX, STATE)
    step_fn = tracker.step

    def unseen(frame: np.ndarray, mask: object = None) -> object:
        out = step_fn(frame, mask)  # type: ignore[arg-type]
        return type(out)(out.index, out.mask, out.box, -5.0, False, out.raw)

    monkeypatch.setattr(tracker, "step", unseen)
    expected = head._chunks[0][1]  # the chunk of the prompt frame, the only one to coast on
    for t in range(1, K):
        action, step = agent.act(fs[t], STATE)
        assert not step.visible
        np.testing.assert_allclose(action, expected[t].numpy(), rtol=1e-6)
    assert (len(calls), agent.coasted) == (1, K - 1)
    agent.act(fs[K], STATE)  # no chunk reaches step K: the head predicts
    assert len(calls) == 2
    agent.coast_unseen = False
    agent.act(fs[K + 1], STATE)
    assert (len(calls), agent.coasted) == (3, K - 1)
    agent.start(fs[0], BOX, STATE)
    assert agent.coasted == 0
