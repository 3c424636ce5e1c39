"""`sam2grasp train` and `sam2grasp eval` end to end, as a user runs them.

A 2-episode expert dataset at 64x48, cached with the compact tracker at 64 px (seeded random weights, saved as a
checkpoint so that eval loads it like a trained one), a tiny head trained for one epoch, then closed-loop trials
in the simulated cell: 2 trials, occlusion 0 and 0.5, 1-2 simulated seconds. Success rates of such a policy are
meaningless; the tests check the protocol (seeds, levels, intervals, files, failure handling).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_world import tiny_world

from pipeline.cli import main
from pipeline.dataset.reader import Dataset
from pipeline.dataset.video import probe_video
from pipeline.evaluate import SEED_BASE, EvalConfig, evaluate, run_trial
from pipeline.train_policy import canonical_rotvec, episode_arrays, find_cache
from policy.act import ACTPolicy
from policy.agent import TRACKER_INFO_FILE, SAM2GraspAgent, load_agent
from policy.cache import build_cache, cache_key, load_tracker, weights_sha256
from policy.cache_store import CacheError
from policy.checkpoint import load_policy, read_checkpoint_info
from policy.features import parse_feature_spec
from policy.sam2_build import save_safetensors, tracker_metadata, tracker_spec
from robot.kinematics import axis_angle_to_matrix, forward
from robot.sim.config import CellConfig
from robot.sim.mjcf import TCP_OFFSET
from robot.sim.scene import SceneRequest

torch.set_num_threads(1)

TINY = ["--chunk", "5", "--dim-model", "32", "--heads", "2", "--ff-dim", "64", "--encoder-layers", "1"]
TINY += ["--batch-size", "16", "--threads", "1"]
SMALL_EVAL = ["--trials", "2", "--objects", "3", "--occlusion", "0,0.5", "--width", "64", "--height", "48"]
SMALL_EVAL += ["--threads", "1"]


def small_config(out: Path, **kw: Any) -> EvalConfig:
    """An evaluation at 64x48 with 3 objects."""
    return EvalConfig(out=out, objects=(3, 3), width=64, height=48, **kw)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset + pooled2 cache + the tracker checkpoint it was cached with."""
    root = tmp_path_factory.mktemp("train_eval")
    data, ckpt, tracker = tiny_world(root)
    build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec("pooled2")), progress=False)
    return {"root": root, "data": data, "tracker": ckpt}


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path]) -> Path:
    """`sam2grasp train` in joint mode; the run directory."""
    out = workspace["root"] / "run"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out)]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    return out


def test_train_writes_a_loadable_policy_and_reports(
    workspace: dict[str, Path], trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(trained)]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0  # a rerun resumes: nothing left to do
    report = json.loads(capsys.readouterr().out)
    assert report["features"] == "pooled2"
    assert report["action_mode"] == "joint"
    assert (report["train_episodes"], report["val_episodes"]) == (1, 1)
    for key in ("final_train_l1", "final_val_l1", "val_l1_mean_baseline", "seconds"):
        assert math.isfinite(report[key]), key
    policy = load_policy(report["policy_dir"], expect_feature_spec="pooled2", expect_action_mode="joint")
    assert policy.config.chunk_size == 5
    assert policy.config.token_dim == 64
    assert policy.config.n_tokens == 5
    assert Path(report["loss_curve"]).is_file()
    record = json.loads((Path(report["policy_dir"]) / TRACKER_INFO_FILE).read_text())
    assert record["tracker"] == "compact"
    assert record["image_size"] == 64
    assert record["features"] == "pooled2"


def test_train_ee_mode_targets_are_continuous(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = workspace["root"] / "run_ee"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out)]
    assert main([*args, "--epochs", "1", "--action-mode", "ee", *TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    config, _ = read_checkpoint_info(report["policy_dir"])
    assert config.action_mode == "ee"
    episodes = episode_arrays(workspace["data"], find_cache(workspace["data"]), "ee")
    dataset = Dataset(workspace["data"])
    for i, ep in enumerate(episodes):
        # position and rotation move by small amounts per step; no axis-angle sign flips
        assert np.abs(np.diff(ep.action[:, :6], axis=0)).max() < 0.3
        recorded = dataset.load_episode(i)
        # the TCP position the joint targets command: the recorded pose, one control period later, is near it
        commanded = np.array([forward(q, TCP_OFFSET)[:3, 3] for q in recorded.action[:, :6].astype(np.float64)])
        np.testing.assert_allclose(ep.action[:, :3], commanded, atol=1e-5)
        assert np.abs(ep.action[:-1, :3] - recorded.ee_pose[1:, :3]).max() < 0.05
        np.testing.assert_array_equal(ep.action[:, 6], recorded.action[:, 6])  # the commanded opening


def test_canonical_rotvec_keeps_the_rotation_and_removes_flips() -> None:
    axis = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    rot = np.stack([axis * (np.pi - 0.01), -axis * (np.pi - 0.02), axis * (np.pi - 0.03)])  # flips at |r| ≈ π
    ref = axis * np.pi
    out = canonical_rotvec(rot, ref)
    assert np.abs(np.diff(out, axis=0)).max() < 0.1
    for r, c in zip(rot, out, strict=True):
        np.testing.assert_allclose(axis_angle_to_matrix(r), axis_angle_to_matrix(c), atol=1e-9)


def test_train_refuses_unknown_policies(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--policy", "foo", "--data", str(workspace["data"])]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'foo'" in err
    assert "valid: sam2grasp, act, act-cvae, act-cvae-condition" in err  # the baselines: tests/test_baselines.py


def test_train_without_a_matching_cache_lists_the_caches(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--features", "masked"]
    assert main([*args, "--out", str(workspace["root"] / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no complete feature cache with features 'masked'" in err
    assert "features pooled2" in err


def test_two_trackers_caches_are_told_apart_by_the_weights_a_head_names(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "ds"
    shutil.copytree(workspace["data"], data, ignore=shutil.ignore_patterns("cache"))
    spec = parse_feature_spec("pooled2")
    trackers = [load_tracker("compact", image_size=64, allow_random=True, seed=s) for s in (0, 1)]
    for t in trackers:
        build_cache(data, t, cache_key("compact", t, spec), progress=False)
    with pytest.raises(CacheError, match=r"2 complete caches with features 'pooled2'.*weights [0-9a-f]{12}"):
        find_cache(data, "pooled2")
    for t in trackers:
        weights = weights_sha256(t.model)
        assert find_cache(data, "pooled2", tracker_weights=weights).key.weights_sha256 == weights
    with pytest.raises(CacheError, match="no complete feature cache with features 'pooled2' from tracker weights 0000"):
        find_cache(data, "pooled2", tracker_weights="0" * 64)


def test_eval_reports_levels_with_wilson_bounds_and_writes_files(
    workspace: dict[str, Path], trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workspace["root"] / "eval"
    args = ["eval", "--policy", str(trained / "policy"), "--tracker-checkpoint", str(workspace["tracker"])]
    assert main([*args, *SMALL_EVAL, "--max-seconds", "1", "--videos", "1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "results.json").read_text())
    assert len((out / "trials.jsonl").read_text().splitlines()) == 4  # written as trials end
    assert report["mode"] == "lockstep"
    assert report["prompt"].startswith("ground-truth target box")
    assert report["coast_unseen"] is True  # the default: unseen frames take their actions from earlier chunks
    assert isinstance(report["safety_violations"], dict)
    assert [lv["occlusion"] for lv in report["levels"]] == [0.0, 0.5]
    seeds = [lv["seeds"] for lv in report["levels"]]
    assert seeds[0] == seeds[1] == [SEED_BASE, SEED_BASE + 1]
    for lv in report["levels"]:
        assert lv["trials"] == 2
        assert lv["wilson_low"] <= lv["rate"] <= lv["wilson_high"]
        assert sum(lv["outcomes"].values()) == 2
        assert lv["failed_input"] == 0
        assert 0.0 <= lv["empty_grasp_share"] <= 1.0
        closes = [len(ep["empty_close_sites"]) for ep in lv["episodes"]]
        assert sum(lv["empty_close_sites"].values()) == sum(closes)
        assert lv["between_objects_share"] <= sum(c > 0 for c in closes) / 2
        assert lv["mean_step_ms"] > 0
        assert len(lv["videos"]) == 1
        info = probe_video(Path(lv["videos"][0]))
        assert (info.width, info.height) == (64, 48)
        assert info.frames == lv["episodes"][0]["steps"]  # one overlay frame per observation the agent acted on
        for ep in lv["episodes"]:
            assert ep["sim_seconds"] == pytest.approx(1.0, abs=0.06)
            unseen = round(ep["steps"] * (1.0 - ep["visible_share"]))
            assert 0 <= ep["coasted_steps"] <= unseen  # only frames where the tracker did not see the target coast
    # the same scenes at both levels: only the blackouts differ
    assert report["levels"][0]["episodes"][0]["occluded_share"] == 0.0
    with Image.open(report["plot"]) as png:
        assert png.format == "PNG"
        assert png.size[0] > 300


def test_eval_latency_mode_executes_the_previous_action_while_inferring(
    workspace: dict[str, Path], trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    agent = load_agent(trained / "policy", workspace["tracker"])
    act = agent.act

    def slow_act(frame: np.ndarray, state: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, object]:
        time.sleep(0.06)  # longer than one control step (0.05 s): one extra step of the previous action
        return act(frame, state, mask)

    monkeypatch.setattr(agent, "act", slow_act)
    cfg = small_config(workspace["root"] / "lat", trials=1, occlusion=(0.0,), max_seconds=0.5, latency=True)
    report = evaluate(agent, cfg)
    ep = report.levels[0].episodes[0]
    assert report.mode == "latency"
    assert ep.latency_steps >= 3
    assert ep.steps == pytest.approx(10, abs=1)  # simulated time still ends at max_seconds


def test_nan_head_ends_trials_as_failed_input_without_moving_the_arm(
    workspace: dict[str, Path], trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robot.sim.env import PickEnv
    from robot.sim.occlusion import OcclusionWrapper
    from robot.sim.outcome import OutcomeRules

    monkeypatch.setattr(ACTPolicy, "predict_action_chunk", lambda self, inp: torch.full((1, 5, 7), float("nan")))
    agent = load_agent(trained / "policy", workspace["tracker"])
    cfg = small_config(workspace["root"] / "nan", trials=2, occlusion=(0.0, 0.5), max_seconds=1.0)
    report = evaluate(agent, cfg)
    for lv in report.levels:
        assert lv.failed_input == 2
        assert lv.rate == 0.0
        assert all(ep.error is not None and "NaN" in ep.error for ep in lv.episodes)
    scene = SceneRequest(n_objects=(3, 3))
    env = PickEnv(
        CellConfig(image_width=64, image_height=48, depth=False, scene=scene, rules=OutcomeRules(max_episode_s=1.0))
    )
    try:
        wrapper = OcclusionWrapper(env, 0.0)
        q0 = wrapper.reset(SEED_BASE)[0].joints
        result = run_trial(agent, wrapper, SEED_BASE, cfg)
        assert result.outcome == "failed_input"
        assert result.steps == 1  # the previous safe command (the start pose), once
        np.testing.assert_allclose(env.joint_command, q0, atol=1e-9)
        np.testing.assert_allclose(env.joints, q0, atol=2e-3)
    finally:
        env.close()


def test_eval_refuses_overlapping_seeds_and_other_trackers(
    workspace: dict[str, Path], trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--policy", str(trained / "policy"), "--tracker-checkpoint", str(workspace["tracker"])]
    assert main([*args, *SMALL_EVAL, "--seed", "-1", "--out", str(workspace["root"] / "x")]) == 2
    assert "training scenes" in capsys.readouterr().err
    other = load_tracker("compact", image_size=64, allow_random=True, seed=1)
    other_ckpt = workspace["root"] / "other.safetensors"
    save_safetensors(other.model, other_ckpt, tracker_metadata(tracker_spec("compact", 64)))
    args[4] = str(other_ckpt)
    assert main([*args, *SMALL_EVAL, "--out", str(workspace["root"] / "x")]) == 2
    assert "other weights" in capsys.readouterr().err


def test_eval_runs_an_ee_mode_policy_through_ik(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = workspace["root"] / "run_ee2"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out)]
    assert main([*args, "--epochs", "1", "--action-mode", "ee", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    agent = load_agent(policy_dir, workspace["tracker"])
    assert agent.action_mode == "ee"
    report = evaluate(agent, small_config(workspace["root"] / "ee_eval", trials=1, occlusion=(0.0,), max_seconds=0.5))
    ep = report.levels[0].episodes[0]
    assert ep.error is None
    assert ep.steps == pytest.approx(10, abs=1)
    assert report.action_mode == "ee"


def test_place_head_trains_on_recorded_cameras_and_runs_in_eval(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--place`: the extras gain the target's base-frame place values from each episode's recorded camera, and
    eval hands every trial's scene camera to the agent."""
    from policy.place import PLACE_DIM, place_values

    out = workspace["root"] / "run_place"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out), "--place"]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    config, _ = read_checkpoint_info(policy_dir)
    assert config.place
    assert config.extras_dim == 7 + PLACE_DIM
    cache = find_cache(workspace["data"])
    plain = episode_arrays(workspace["data"], cache, "joint")
    placed = episode_arrays(workspace["data"], cache, "joint", place_tcp_offset=TCP_OFFSET)
    dataset = Dataset(workspace["data"])
    for i, (a, b) in enumerate(zip(plain, placed, strict=True)):
        np.testing.assert_array_equal(b.extras[:, :7], a.extras)
        view = dataset.episode_meta(i).camera
        assert view is not None
        np.testing.assert_allclose(b.extras[:, 7:], place_values(a.extras, a.state, view, TCP_OFFSET), atol=1e-6)
        assert np.abs(b.extras[:, 7:9]).max() > 0.1  # real table positions, not the zeros of unseen frames
    agent = load_agent(policy_dir, workspace["tracker"])
    assert agent.needs_camera
    report = evaluate(
        agent, small_config(workspace["root"] / "place_eval", trials=1, occlusion=(0.0,), max_seconds=0.5)
    )
    assert report.levels[0].episodes[0].error is None
    assert agent.camera is not None
    assert agent.camera.intrinsics.width == 64


def wrist_probe() -> Any:
    """`bench/wrist_probe.py` as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "wrist_probe.py"
    spec = importlib.util.spec_from_file_location("wrist_probe", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_trial(policy_dir: str, workspace: dict[str, Path], name: str) -> SAM2GraspAgent:
    """Run one short evaluation trial of the policy at `policy_dir`; the agent, which must not have failed."""
    agent = load_agent(policy_dir, workspace["tracker"])
    report = evaluate(agent, small_config(workspace["root"] / name, trials=1, occlusion=(0.0,), max_seconds=0.5))
    assert report.levels[0].episodes[0].error is None
    return agent


def test_prompt_place_head_takes_the_target_from_each_episodes_first_box(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--place --place-source prompt`: every frame's place values put the target where the episode's first-frame
    box (the tracker's prompt) says, and the trained head runs in eval."""
    from policy.place import normalised_box, place_values

    out = workspace["root"] / "run_place_prompt"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out), "--place"]
    assert main([*args, "--place-source", "prompt", "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    config, _ = read_checkpoint_info(policy_dir)
    assert (config.place, config.place_source) == (True, "prompt")
    cache = find_cache(workspace["data"])
    plain = episode_arrays(workspace["data"], cache, "joint")
    placed = episode_arrays(workspace["data"], cache, "joint", place_tcp_offset=TCP_OFFSET, place_source="prompt")
    dataset = Dataset(workspace["data"])
    for i, (a, b) in enumerate(zip(plain, placed, strict=True)):
        view = dataset.episode_meta(i).camera
        assert view is not None
        first = dataset.load_episode(i, images=False).target_box[0]
        prompt = normalised_box(first, view.intrinsics.width, view.intrinsics.height)
        expected = place_values(a.extras, a.state, view, TCP_OFFSET, prompt)
        np.testing.assert_allclose(b.extras[:, 7:], expected, atol=1e-6)
        assert np.ptp(b.extras[:, 7:9], axis=0).max() < 1e-6  # one target position for the whole episode
    with pytest.raises(ValueError, match="valid: tracked, prompt"):
        episode_arrays(workspace["data"], cache, "joint", place_tcp_offset=TCP_OFFSET, place_source="grounder")
    assert main([*args[:-1], "--place-source", "prompt", "--epochs", "1", *TINY]) != 0  # needs --place
    assert "needs --place" in capsys.readouterr().err
    agent = one_trial(policy_dir, workspace, "place_prompt_eval")
    assert agent.prompt_box is not None


def test_target_frame_head_learns_offsets_from_the_prompted_target_and_runs_in_eval(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--action-mode ee --place --place-source prompt --action-frame target`: the learned TCP x, y are the ee
    targets less the target's table position from the first-frame box, and the agent adds it back in eval."""
    from pipeline.train_policy import ee_targets
    from policy.place import normalised_box, prompt_target

    out = workspace["root"] / "run_target_frame"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out), "--place"]
    args += ["--place-source", "prompt", "--action-mode", "ee", "--action-frame", "target"]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    config, _ = read_checkpoint_info(policy_dir)
    assert (config.action_mode, config.action_frame) == ("ee", "target")
    cache = find_cache(workspace["data"])
    framed = episode_arrays(
        workspace["data"], cache, "ee", place_tcp_offset=TCP_OFFSET, place_source="prompt", action_frame="target"
    )
    dataset = Dataset(workspace["data"])
    for i, b in enumerate(framed):
        view = dataset.episode_meta(i).camera
        assert view is not None
        ep = dataset.load_episode(i, images=False)
        prompt = normalised_box(ep.target_box[0], view.intrinsics.width, view.intrinsics.height)
        anchor = prompt_target(prompt, view)
        absolute = ee_targets(ep.action)
        np.testing.assert_allclose(b.action[:, :2], absolute[:, :2] - anchor, atol=1e-5)
        np.testing.assert_allclose(b.action[:, 2:], absolute[:, 2:], atol=1e-6)
    with pytest.raises(ValueError, match="needs ee actions and place values from the prompt box"):
        episode_arrays(workspace["data"], cache, "joint", place_tcp_offset=TCP_OFFSET, action_frame="target")
    agent = one_trial(policy_dir, workspace, "target_frame_eval")
    assert agent.anchor_xy is not None


def test_oracle_masks_run_from_cache_to_eval(
    workspace: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The perception upper bound as a user runs it: `cache --mask-source oracle`, `train`, `eval`; the trained
    head's record makes eval feed the simulator's masks, and a blacked-out frame gives an empty (not visible) one."""
    import shutil

    data = Path(shutil.copytree(workspace["data"], tmp_path / "ds", ignore=shutil.ignore_patterns("cache")))
    cache = ["cache", "--data", str(data), "--tracker", "compact", "--image-size", "64"]
    cache += ["--checkpoint", str(workspace["tracker"]), "--features", "pooled2", "--mask-source", "oracle"]
    assert main([*cache, "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    out = tmp_path / "run"
    args = ["train", "--policy", "sam2grasp", "--data", str(data), "--out", str(out)]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    assert json.loads((Path(policy_dir) / TRACKER_INFO_FILE).read_text())["mask_source"] == "oracle"
    agent = load_agent(policy_dir, workspace["tracker"])
    assert agent.tracker.config.oracle
    cfg = small_config(tmp_path / "eval", trials=1, occlusion=(0.0, 0.6), max_seconds=1.0)
    report = evaluate(agent, cfg)
    assert report.perception == "oracle"
    clear, dark = (lv.episodes[0] for lv in report.levels)
    assert clear.error is None
    assert dark.error is None
    assert clear.visible_share == 1.0
    assert dark.visible_share < 1.0  # blacked-out frames carry an empty true mask


def test_state_lag_head_trains_runs_in_eval_and_the_wrist_probe_reads_it(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --state-lag` on a prompt-place head records the lag in its resume fingerprint and the head runs in
    eval; `bench/wrist_probe.py` probes exactly the episodes whose wrist turns at least --min-turn and refuses ee
    heads."""
    out = workspace["root"] / "run_lag"
    args = ["train", "--policy", "sam2grasp", "--data", str(workspace["data"]), "--out", str(out), "--place"]
    args += ["--place-source", "prompt", "--state-lag", "0.5", "--state-lag-frames", "3"]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = json.loads(capsys.readouterr().out)["policy_dir"]
    progress = json.loads((out / "resume" / "progress.json").read_text())
    assert progress["fingerprint"]["state_lag"] == {"prob": 0.5, "max_frames": 3}
    one_trial(policy_dir, workspace, "lag_eval")

    probe_mod = wrist_probe()
    dataset = Dataset(workspace["data"])
    turns = []
    for i in range(len(dataset)):
        ep = dataset.load_episode(i, images=False)
        turns.append(abs(math.degrees(float(ep.action[-1, 5] - ep.state[0, 5]))))
    min_turn = float(np.median(turns))
    row = probe_mod.probe(Path(policy_dir), workspace["data"], min_turn)
    assert row["episodes"] == sum(t >= min_turn for t in turns) > 0
    assert all(math.isfinite(row[k]) for k in ("start", "half", "half_lagging"))
    none = probe_mod.probe(Path(policy_dir), workspace["data"], max(turns) + 1.0)
    assert none["episodes"] == 0
    assert none["start"] is None


def test_train_grasp_yaw_reads_prompt_frames_of_a_shape_cache(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`train-grasp-yaw` refuses a cache without shape moments, and on a '+shape' cache fits one sample per episode
    whose target shows on its first frame, writing weights that load."""
    import shutil

    from policy.grasp_yaw import load_grasp_yaw

    data = workspace["root"] / "ds_shape"  # a copy, so the module's dataset keeps its single cache
    shutil.copytree(workspace["data"], data, ignore=shutil.ignore_patterns("cache"))
    out = workspace["root"] / "grasp_yaw.safetensors"
    args = ["train-grasp-yaw", "--data", str(data), "--out", str(out), "--steps", "50", "--threads", "1"]
    args += ["--val-fraction", "0"]  # 2 episodes: both fit
    tracker = load_tracker("compact", image_size=64, checkpoint=workspace["tracker"])
    build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec("pooled2")), progress=False)
    assert main(args) == 2
    assert "has no shape moments" in capsys.readouterr().err
    build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec("pooled2+shape")), progress=False)
    assert main([*args, "--features", "pooled2+shape", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    dataset = Dataset(data)
    shown = sum(bool(dataset.load_episode(i, images=False).target_visible[0]) for i in range(len(dataset)))
    assert report["train_samples"] + report["val_samples"] == shown
    assert load_grasp_yaw(out).config.hidden == 128


@pytest.fixture(scope="module")
def yaw_data(workspace: dict[str, Path]) -> Path:
    """4 collected episodes (64 x 48, 3 objects, seed 20) with a 'pooled2+shape' cache: enough prompt frames for
    the grasp-yaw estimator's cross-fit."""
    from pipeline.collect import CollectConfig, collect

    data = workspace["root"] / "ds_yaw"
    cell = CellConfig(image_width=64, image_height=48, scene=SceneRequest(n_objects=(3, 3)))
    collect(CollectConfig(out=data, episodes=4, seed=20, cell=cell), progress=False)
    tracker = load_tracker("compact", image_size=64, checkpoint=workspace["tracker"])
    build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec("pooled2+shape")), progress=False)
    return data


def test_grasp_yaw_head_trains_on_out_of_fold_estimates_and_the_agent_estimates_as_training_did(
    workspace: dict[str, Path], yaw_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --place --place-source prompt --grasp-yaw` on a 4-episode '+shape' cache: the extras end with the
    yaw values of each episode's out-of-fold estimate, the head holds the estimator fitted on all episodes, and the
    agent estimates on its prompt frame what that estimator gives for the cached prompt frame, feeds the values
    from its own arm state, and runs in eval. Fewer than 4 usable episodes, or no --place, is refused."""
    from pipeline.train_grasp_yaw import cross_fit, grasp_yaw_samples
    from policy.features import extract
    from policy.grasp_yaw import YAW_DIM, yaw_inputs, yaw_values

    data = yaw_data
    tracker = load_tracker("compact", image_size=64, checkpoint=workspace["tracker"])
    out = workspace["root"] / "run_yaw"
    args = ["train", "--policy", "sam2grasp", "--data", str(data), "--out", str(out), "--place"]
    args += ["--place-source", "prompt", "--epochs", "1", *TINY]
    assert main([*args[:7], "--epochs", "1", *TINY, "--grasp-yaw"]) != 0  # without --place
    assert "--grasp-yaw needs --place" in capsys.readouterr().err
    assert main([*args, "--grasp-yaw", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cache = find_cache(data)
    samples = grasp_yaw_samples(data, cache=cache)
    if len(samples.orders) < 4:
        pytest.skip("the random tracker saw fewer than 4 prompt-frame targets")  # pragma: no cover
    assert report["grasp_yaw"]["samples"] == len(samples.orders)
    assert report["grasp_yaw"]["folds"] == 2
    fit = cross_fit(samples, folds=2, seed=0)  # as train did: the run's seed, 2 folds for 4 samples
    config, _ = read_checkpoint_info(report["policy_dir"])
    assert config.grasp_yaw
    head = load_policy(report["policy_dir"])
    assert head.grasp_yaw is not None
    for k, v in fit.final.state_dict().items():
        assert torch.equal(head.grasp_yaw.state_dict()[k], v), k

    arrays = episode_arrays(data, cache, "joint", place_tcp_offset=TCP_OFFSET, place_source="prompt")
    yawed = episode_arrays(
        data, cache, "joint", place_tcp_offset=TCP_OFFSET, place_source="prompt", grasp_yaw=fit.estimates
    )
    for e, (a, b) in enumerate(zip(arrays, yawed, strict=True)):
        np.testing.assert_array_equal(b.extras[:, :-YAW_DIM], a.extras)
        np.testing.assert_allclose(b.extras[:, -YAW_DIM:], yaw_values(fit.estimates.get(e), a.state, TCP_OFFSET))
    with pytest.raises(ValueError, match="give place_tcp_offset with grasp_yaw"):
        episode_arrays(data, cache, "joint", grasp_yaw=fit.estimates)

    agent = load_agent(report["policy_dir"], workspace["tracker"])
    dataset = Dataset(data)
    e = int(samples.episodes[0])
    ep = dataset.load_episode(e)
    view = dataset.episode_meta(e).camera
    assert ep.rgb is not None
    assert view is not None
    _, step = agent.start(ep.rgb[0], ep.target_box[0], ep.state[0], camera=view)
    assert agent.grasp_yaw is not None
    live = head.grasp_yaw.estimate(yaw_inputs(extract(step, agent.spec).extras, view))
    np.testing.assert_allclose(agent.grasp_yaw.embedding, live.embedding, atol=1e-6)
    cached = head.grasp_yaw.estimate(samples.inputs[0])  # the cache's float16 prompt frame of the same episode
    np.testing.assert_allclose(agent.grasp_yaw.embedding, cached.embedding, atol=0.05)
    inp = agent._input(step, ep.state[0])
    expected = yaw_values(agent.grasp_yaw, ep.state[:1], TCP_OFFSET)[0]
    np.testing.assert_allclose(inp.extras.numpy()[0, -YAW_DIM:], expected, atol=1e-6)

    few = workspace["root"] / "ds_yaw_few"  # the module's 2-episode dataset, with a '+shape' cache
    import shutil

    shutil.copytree(workspace["data"], few, ignore=shutil.ignore_patterns("cache"))
    build_cache(few, tracker, cache_key("compact", tracker, parse_feature_spec("pooled2+shape")), progress=False)
    few_args = ["train", "--policy", "sam2grasp", "--data", str(few), "--out", str(workspace["root"] / "run_few")]
    assert main([*few_args, "--place", "--grasp-yaw", "--epochs", "1", *TINY]) != 0
    assert "needs at least 4 episodes" in capsys.readouterr().err
    one_trial(report["policy_dir"], workspace, "yaw_eval")

    probe_mod = wrist_probe()
    row = probe_mod.probe(Path(report["policy_dir"]), data, 0.0)  # the head's own estimator on each prompt frame
    assert row["episodes"] > 0
    assert all(math.isfinite(row[k]) for k in ("start", "half", "half_lagging"))


def test_named_refined_grasp_yaw_head_reads_the_commands_shape_and_the_prompt_boxs_mask(
    workspace: dict[str, Path], yaw_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train ... --grasp-yaw --grasp-yaw-named --grasp-yaw-mask refined`: the estimator's samples carry the moments
    of the mask segmented from each episode's first frame and box, and its targets' shapes; the head holds the
    estimator fitted on them; the agent estimates from its prompt frame's refined mask and the shape it is given
    (eval gives the shape its command names), and refuses a shape outside the catalogue."""
    from pipeline.dataset.layout import FRONT_KEY, VIDEO_PATH, episode_path
    from pipeline.dataset.video import iter_rgb_video
    from pipeline.train_grasp_yaw import cross_fit, grasp_yaw_samples
    from policy.agent import AgentError
    from policy.features import extract, shape_moments
    from policy.grasp_yaw import GraspYawConfig, prompt_yaw_inputs
    from policy.prompt_mask import refine_prompt_mask

    data = yaw_data
    out = workspace["root"] / "run_yaw_named"
    args = ["train", "--policy", "sam2grasp", "--data", str(data), "--out", str(out), "--place"]
    args += ["--place-source", "prompt", "--epochs", "1", *TINY, "--grasp-yaw"]
    assert main([*args[:7], "--epochs", "1", *TINY, "--grasp-yaw-named"]) != 0
    assert "--grasp-yaw-named needs --grasp-yaw" in capsys.readouterr().err
    assert main([*args, "--grasp-yaw-named", "--grasp-yaw-mask", "refined", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cache = find_cache(data)
    samples = grasp_yaw_samples(data, cache=cache, mask="refined")
    if len(samples.orders) < 4:
        pytest.skip("the random tracker saw fewer than 4 prompt-frame targets")  # pragma: no cover
    assert report["grasp_yaw"]["named"] is True
    assert 0.0 <= report["grasp_yaw"]["out_of_fold_unnamed_order_accuracy"] <= 1.0
    dataset = Dataset(data)
    tracked = grasp_yaw_samples(data, cache=cache)
    refined = 0
    for i, e in enumerate(samples.episodes):
        first = next(iter(iter_rgb_video(episode_path(data, VIDEO_PATH, int(e), FRONT_KEY))))
        mask = refine_prompt_mask(first, dataset.load_episode(int(e), images=False).target_box[0])
        meta = dataset.episode_meta(int(e))
        assert samples.shapes[i] == next(o.shape for o in meta.objects if o.instance == meta.target)
        if mask.sum() >= 2:
            np.testing.assert_allclose(samples.inputs[i, :4], shape_moments(mask), atol=1e-6)
            refined += 1
        np.testing.assert_array_equal(samples.inputs[i, 4:], tracked.inputs[i, 4:])  # box, area, table: tracked
    assert refined > 0
    estimator = GraspYawConfig(named=True, mask="refined")
    fit = cross_fit(samples, folds=2, seed=0, config=estimator)
    head = load_policy(report["policy_dir"])
    assert head.grasp_yaw is not None
    assert head.grasp_yaw.config == estimator
    for k, v in fit.final.state_dict().items():
        assert torch.equal(head.grasp_yaw.state_dict()[k], v), k

    agent = load_agent(report["policy_dir"], workspace["tracker"])
    e = int(samples.episodes[0])
    ep = dataset.load_episode(e)
    view = dataset.episode_meta(e).camera
    assert ep.rgb is not None
    assert view is not None
    net = agent.head.grasp_yaw
    assert net is not None
    seen: list[str | None] = []
    estimate = net.estimate

    def recording(inputs: Any, shape: str | None = None) -> Any:
        seen.append(shape)
        return estimate(inputs, shape)

    monkeypatch.setattr(net, "estimate", recording)
    _, step = agent.start(ep.rgb[0], ep.target_box[0], ep.state[0], camera=view, shape=samples.shapes[0])
    assert seen == [samples.shapes[0]]
    assert agent.grasp_yaw is not None
    inputs = prompt_yaw_inputs(estimator, extract(step, agent.spec).extras, view, ep.rgb[0], ep.target_box[0])
    np.testing.assert_allclose(agent.grasp_yaw.order_probs, estimate(inputs, samples.shapes[0]).order_probs, atol=1e-6)
    with pytest.raises(AgentError, match="valid shapes"):
        agent.start(ep.rgb[0], ep.target_box[0], ep.state[0], camera=view, shape="banana")
    one_trial(report["policy_dir"], workspace, "yaw_named_eval")
    results = json.loads((workspace["root"] / "yaw_named_eval" / "results.json").read_text())
    assert "the target's shape as its command names it" in results["prompt"]


def test_wrist_probe_gives_a_shape_input_head_its_shape_and_the_yaw_values_before_it(
    workspace: dict[str, Path], yaw_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench/wrist_probe.py` on a head with both grasp-yaw values and the shape input: every input it feeds ends
    with the one-hot of the episode's target shape, and the yaw values (three probabilities first) sit just
    before it, where training put them."""
    from policy.grasp_yaw import SHAPE_NAMES, YAW_DIM, shape_code

    out = workspace["root"] / "run_yaw_shape"
    args = ["train", "--policy", "sam2grasp", "--data", str(yaw_data), "--out", str(out), "--place"]
    args += ["--place-source", "prompt", "--grasp-yaw", "--grasp-yaw-named", "--shape-input"]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    policy_dir = Path(json.loads(capsys.readouterr().out)["policy_dir"])
    fed: list[np.ndarray] = []
    chunk_of = ACTPolicy.predict_action_chunk

    def recording(self: ACTPolicy, inp: Any) -> Any:
        fed.append(inp.extras.detach().cpu().numpy().reshape(-1).copy())
        return chunk_of(self, inp)

    monkeypatch.setattr(ACTPolicy, "predict_action_chunk", recording)
    row = wrist_probe().probe(policy_dir, yaw_data, 0.0)
    assert row["episodes"] > 0
    assert len(fed) == 3 * row["episodes"]
    dataset = Dataset(yaw_data)
    shapes = {shape_code(o.shape).tobytes() for e in range(len(dataset)) for o in dataset.episode_meta(e).objects}
    n = len(SHAPE_NAMES)
    for extras in fed:
        assert extras[-n:].tobytes() in shapes  # one of the scenes' shapes, as one-hot
        assert extras[-n:].sum() == 1.0
        probs = extras[-n - YAW_DIM : -n - YAW_DIM + 3]
        assert np.all((probs >= 0) & (probs <= 1))
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_shape_input_head_reads_the_named_shape_as_extras_and_hides_a_quarter_in_training(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`train ... --shape-input`: every training frame's extras end with the one-hot of its episode's target shape
    (zeros for the seeded hidden share); the agent appends the one-hot of the shape it is given at start (zeros
    for none) and refuses a word outside the catalogue; eval runs it with its commands' shapes."""
    from pipeline.train_policy import SHAPE_NAME_DROPOUT, episode_shapes
    from policy.agent import AgentError
    from policy.grasp_yaw import SHAPE_NAMES, shape_code

    data = workspace["data"]
    out = workspace["root"] / "run_shape"
    args = ["train", "--policy", "sam2grasp", "--data", str(data), "--out", str(out), "--shape-input"]
    assert main([*args, "--epochs", "1", *TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    head = load_policy(report["policy_dir"])
    spec = parse_feature_spec(head.config.feature_spec)
    assert head.config.shape_input is True
    assert head.config.extras_dim == spec.extras_dim + len(SHAPE_NAMES)

    cache = find_cache(data)
    dataset = Dataset(data)
    shapes = episode_shapes(data, cache.episodes, hidden=0.5, seed=3)
    assert shapes == episode_shapes(data, cache.episodes, hidden=0.5, seed=3)  # seeded: the same episodes hidden
    for e, shape in shapes.items():
        meta = dataset.episode_meta(e)
        assert shape in (None, next(o.shape for o in meta.objects if o.instance == meta.target))
    assert set(episode_shapes(data, cache.episodes, hidden=0.0).values()) <= set(SHAPE_NAMES)
    arrays = episode_arrays(data, cache, "joint", shapes=shapes)
    plain = episode_arrays(data, cache, "joint")
    for e, with_shape, without in zip(cache.episodes, arrays, plain, strict=True):
        np.testing.assert_array_equal(with_shape.extras[:, : spec.extras_dim], without.extras)
        assert (with_shape.extras[:, spec.extras_dim :] == shape_code(shapes[e])).all()
    with pytest.raises(ValueError, match="hidden must be a share"):
        episode_shapes(data, cache.episodes, hidden=1.0)
    assert 0.0 < SHAPE_NAME_DROPOUT < 1.0

    agent = load_agent(report["policy_dir"], workspace["tracker"])
    ep = dataset.load_episode(cache.episodes[0])
    assert ep.rgb is not None
    seen: list[Any] = []
    forward_input = agent.head.select_action

    def recording(inp: Any) -> Any:
        seen.append(inp.extras.detach().cpu().numpy().reshape(-1)[-len(SHAPE_NAMES) :].copy())
        return forward_input(inp)

    agent.head.select_action = recording  # type: ignore[method-assign,assignment]
    agent.coast_unseen = False  # every step asks the head, whatever the random tracker sees
    agent.start(ep.rgb[0], ep.target_box[0], ep.state[0], shape="cup")
    agent.act(ep.rgb[1], ep.state[1])
    agent.start(ep.rgb[0], ep.target_box[0], ep.state[0])
    np.testing.assert_array_equal(seen[0], shape_code("cup"))
    np.testing.assert_array_equal(seen[1], shape_code("cup"))
    np.testing.assert_array_equal(seen[2], np.zeros(len(SHAPE_NAMES)))
    with pytest.raises(AgentError, match="valid shapes"):
        agent.start(ep.rgb[0], ep.target_box[0], ep.state[0], shape="banana")
    agent.head.select_action = forward_input  # type: ignore[method-assign]
    one_trial(report["policy_dir"], workspace, "shape_eval")
    results = json.loads((workspace["root"] / "shape_eval" / "results.json").read_text())
    assert "the target's shape as its command names it" in results["prompt"]
