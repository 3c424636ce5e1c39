"""ACT head training: it learns a synthetic task, resumes exactly, and 2-process DDP (gloo) equals one process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import K, tiny_config
from live_server import free_port
from PIL import Image

from policy.act import PolicyInput
from policy.act_config import ACTConfig
from policy.checkpoint import load_policy
from policy.chunks import EpisodeArrays
from policy.train_head import HeadTrainConfig, train_head
from policy.train_loop import lr_at

torch.set_num_threads(1)


def tiny(**kw: object) -> ACTConfig:
    return tiny_config("pointer", 1, **kw)


def reach_episode(seed: int, length: int = 24) -> EpisodeArrays:
    """The arm moves 25% of the way to a goal set by the target's box each step: action_t = next state.

    The chunk at t is a deterministic function of state_t and the box in `extras`; tokens are noise.
    """
    rng = np.random.default_rng(seed)
    box = np.sort(rng.uniform(0.1, 0.9, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]]  # x0 y0 x1 y1
    score = rng.uniform(2, 6)
    extras = np.array([score, 1 / (1 + np.exp(-score)), *box, (box[2] - box[0]) * (box[3] - box[1])])
    cx, cy, w = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]
    goal = np.array([2 * cx - 1, 2 * cy - 1, cx - cy, 1.5 * w, -cx, cy, 0.02 + 0.06 * w])
    state = np.zeros((length, 7))
    state[0] = rng.normal(0, 0.3, 7)
    state[0, 6] = 0.085
    action = np.zeros((length, 7))
    for t in range(length):
        action[t] = state[t] + 0.25 * (goal - state[t])
        if t + 1 < length:
            state[t + 1] = action[t]
    return EpisodeArrays(
        tokens=rng.normal(size=(length, 1, 8)).astype(np.float16),
        extras=np.tile(extras, (length, 1)).astype(np.float32),
        state=state.astype(np.float32),
        action=action.astype(np.float32),
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def drop_key_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the key third of every attention in_proj_bias."""
    out = dict(state)
    for k, v in state.items():
        if k.endswith("in_proj_bias"):
            d = v.shape[0] // 3
            out[k] = torch.cat([v[:d], v[2 * d :]])
    return out


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = HeadTrainConfig(lr=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55e-3)
    assert lr_at(100, 100, cfg) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="device"):
        HeadTrainConfig(device="tpu")


def test_head_learns_synthetic_task(tmp_path: Path) -> None:
    train = [reach_episode(s, length=12) for s in range(48)]
    val = [reach_episode(100 + s, length=12) for s in range(6)]
    cfg = HeadTrainConfig(epochs=20, batch_size=32, lr=3e-3, warmup_steps=20, weight_decay=0.0)
    report = train_head(train, val, tiny(), cfg, tmp_path, log=None)
    assert report.steps == report.total_steps == 20 * (48 * 12 // 32)
    assert report.val_l1_mean_baseline is not None
    assert report.final_val_l1 is not None
    # well below predicting the mean action
    assert report.final_val_l1 < 0.3 * report.val_l1_mean_baseline, report  # 0.09-0.15 over 4 seeds
    assert report.best_val_l1 is not None
    assert report.best_val_l1 <= report.final_val_l1
    with Image.open(report.loss_curve) as img:
        assert img.format == "PNG"
        assert img.size[0] > 200
    policy = load_policy(report.policy_dir, expect_feature_spec="pointer", expect_action_mode="joint")
    info = json.loads((report.policy_dir / "config.json").read_text())["training"]
    assert info["steps"] == report.steps
    assert info["train_config"]["lr"] == 3e-3
    # physical units out: the policy's chunk for a validation frame is close to the truth
    ep = val[0]
    chunk = policy.predict_action_chunk(PolicyInput.from_numpy(ep.tokens[3], ep.extras[3], ep.state[3]))[0]
    err = (chunk - torch.from_numpy(ep.action[3 : 3 + K])).abs().mean()
    base = (torch.from_numpy(ep.action[3 : 3 + K]) - policy.normalizer.action_mean).abs().mean()
    assert err < 0.5 * base
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == report.steps


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    train = [reach_episode(s, length=10 + s) for s in range(4)]
    val = [reach_episode(50)]
    cfg = HeadTrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_steps=3)
    act = tiny(dropout=0.1, use_vae=True)  # dropout and CVAE sampling: the RNG state must resume too
    full = train_head(train, val, act, cfg, tmp_path / "full", log=None)
    part = train_head(train, val, act, cfg, tmp_path / "split", log=None, stop_after_steps=full.total_steps // 2 + 1)
    assert part.stopped_early
    assert part.steps == full.total_steps // 2 + 1
    assert (tmp_path / "split" / "resume" / "optimizer.pt").is_file()
    rest = train_head(train, val, act, cfg, tmp_path / "split", log=None)
    assert rest.steps == full.total_steps
    assert not rest.stopped_early
    assert max_diff(weights(full.policy_dir), weights(rest.policy_dir)) < 1e-6
    assert [h["val_l1"] for h in rest.history] == pytest.approx([h["val_l1"] for h in full.history], abs=1e-6)
    with pytest.raises(ValueError, match="another configuration"):
        train_head(train, val, act, HeadTrainConfig(epochs=3, batch_size=8, lr=2e-3), tmp_path / "split", log=None)
    # the same data with some labels kept out of the loss (undone closes) is another run, not a resume
    masked = [EpisodeArrays(e.tokens, e.extras, e.state, e.action, np.zeros(e.action.shape, bool)) for e in train]
    masked[0].ignore[2:4, 6] = True  # type: ignore[index]
    with pytest.raises(ValueError, match="another configuration"):
        train_head(masked, val, act, cfg, tmp_path / "split", log=None)


DDP_TRAIN = HeadTrainConfig(epochs=2, batch_size=8, lr=2e-3, warmup_steps=2)


def _ddp_data() -> tuple[list[EpisodeArrays], list[EpisodeArrays]]:
    # unequal lengths: ranks see different numbers of padded steps in a batch
    return [reach_episode(s, length=7 + 3 * s) for s in range(4)], [reach_episode(60, length=9)]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    )
    import torch.distributed as dist

    from policy.train_head import maybe_init_distributed

    if not maybe_init_distributed():
        raise RuntimeError("torch.distributed was not initialised")
    try:
        train, val = _ddp_data()
        report = train_head(train, val, tiny(), DDP_TRAIN, Path(out), log=None)
        if rank == 0:
            Path(out, "ddp_history.json").write_text(json.dumps(report.history))
        dist.barrier()  # both ranks done before either tears the group down
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    from torch.multiprocessing.spawn import spawn

    train, val = _ddp_data()
    single = train_head(train, val, tiny(), DDP_TRAIN, tmp_path / "single", log=None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)  # type: ignore[no-untyped-call]
    ddp = weights(tmp_path / "ddp" / "policy")
    ref = weights(single.policy_dir)
    # Attention key biases get a gradient that is zero in exact arithmetic (softmax ignores a constant shift of the
    # keys), so Adam turns their rounding noise into updates of order lr * noise / eps: leave them out.
    assert max_diff(drop_key_bias(ref), drop_key_bias(ddp)) < 1e-5
    history = json.loads((tmp_path / "ddp" / "ddp_history.json").read_text())
    assert [h["val_l1"] for h in history] == pytest.approx([h["val_l1"] for h in single.history], abs=1e-5)
    # the bounds discriminate: a run of half the steps is far off
    half = train_head(train, val, tiny(), DDP_TRAIN, tmp_path / "half", log=None, stop_after_steps=single.steps // 2)
    assert max_diff(weights(half.policy_dir), ddp) > 1e-3
