"""Grasp-yaw estimator: turn-to-go wraps to the nearest symmetric equivalent, labels match the scripted expert's
grasp axis, the estimator learns axes of both symmetry orders from moments, and its weights load strictly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.train_grasp_yaw import axis_error, target_label
from policy.grasp_yaw import (
    ORDERS,
    YAW_INPUT_NAMES,
    GraspYawConfig,
    GraspYawError,
    GraspYawNet,
    embed_axis,
    fit_grasp_yaw,
    load_grasp_yaw,
    save_grasp_yaw,
    turn_to_go,
)

torch.set_num_threads(1)


def test_turn_to_go_is_the_shortest_turn_to_an_equivalent_axis() -> None:
    assert turn_to_go(math.radians(50), 2, 0.0) == pytest.approx(math.radians(50))
    assert turn_to_go(math.radians(100), 2, 0.0) == pytest.approx(math.radians(-80))  # the other end of the axis
    assert turn_to_go(math.radians(50), 4, 0.0) == pytest.approx(math.radians(-40))
    assert turn_to_go(math.radians(10), 4, math.radians(370)) == pytest.approx(0.0, abs=1e-9)
    assert turn_to_go(1.234, 0, -2.0) == 0.0
    rng = np.random.default_rng(0)
    for axis, tool, order in zip(
        rng.uniform(-7, 7, 200), rng.uniform(-7, 7, 200), rng.choice([2, 4], 200), strict=True
    ):
        turn = turn_to_go(axis, int(order), tool)
        period = 2 * math.pi / order
        assert -period / 2 <= turn < period / 2
        assert axis_error(tool + turn, axis, int(order)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(GraspYawError, match=r"one of \(0, 2, 4\)"):
        turn_to_go(0.0, 3, 0.0)


def test_labels_match_the_scripted_expert_on_simulated_scenes() -> None:
    from pipeline.collect import object_records
    from robot.kinematics import forward
    from robot.sim.config import CellConfig
    from robot.sim.env import PickEnv
    from robot.sim.expert import nearest_axis_yaw, tool_yaw
    from robot.sim.mjcf import TCP_OFFSET

    env = PickEnv(CellConfig(render=False, depth=False))
    seen = set()
    for seed in range(40):
        obs, info = env.reset(seed)
        record = next(r for r in object_records(info, obs) if r.instance == env.target)  # as `collect` records it
        order, axis = target_label(record.shape, record.quat)
        seen.add(order)
        tool = tool_yaw(forward(env.joints, TCP_OFFSET)[:3, :3])
        if order == 0:
            assert record.shape in ("ball", "can")
            continue
        # the expert's grasp axis is one of this label's equivalents
        assert axis_error(nearest_axis_yaw(env, tool), axis, order) == pytest.approx(0.0, abs=1e-6)
        assert tool + turn_to_go(axis, order, tool) == pytest.approx(nearest_axis_yaw(env, tool), abs=1e-6)
    assert seen == set(ORDERS)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of ideal shapes: order 2 as an ellipse's m2, order 4 as a square's m4, order 0 as a disc."""
    rng = np.random.default_rng(seed)
    orders = rng.choice(ORDERS, n)
    axes = rng.uniform(-math.pi, math.pi, n)
    x = np.zeros((n, len(YAW_INPUT_NAMES)), np.float32)
    x[:, 4:8] = [0.4, 0.4, 0.5, 0.5]
    x[:, 8] = 0.01
    x[:, 9:11] = rng.uniform(0.3, 0.6, (n, 2))
    for i, (o, a) in enumerate(zip(orders, axes, strict=True)):
        if o == 2:
            x[i, 0:2] = 0.6 * np.array([math.cos(2 * a), math.sin(2 * a)])
        elif o == 4:
            x[i, 2:4] = 0.3 * np.array([math.cos(4 * a), math.sin(4 * a)])
    return x, orders, axes


def test_estimator_learns_both_symmetry_orders_and_round_trips(tmp_path: Path) -> None:
    x, orders, axes = synthetic(600, 0)
    net, report = fit_grasp_yaw(x, orders, axes, GraspYawConfig(hidden=64), steps=1500)
    assert report.samples == 600
    xt, ot, at = synthetic(100, 1)
    errors: dict[int, list[float]] = {2: [], 4: []}
    right = 0
    for row, o, a in zip(xt, ot, at, strict=True):
        est = net.estimate(row)
        right += est.order == o
        if o in errors:
            errors[int(o)].append(math.degrees(axis_error(est.axis(int(o)), a, int(o))))
    assert right >= 95
    assert np.median(errors[2]) < 5.0
    assert np.median(errors[4]) < 5.0
    path = save_grasp_yaw(tmp_path / "yaw.safetensors", net)
    back = load_grasp_yaw(path)
    np.testing.assert_allclose(back.estimate(xt[0]).embedding, net.estimate(xt[0]).embedding, atol=1e-6)
    assert back.config == net.config


def test_bad_inputs_and_files_are_clear_errors(tmp_path: Path) -> None:
    net = GraspYawNet(GraspYawConfig(hidden=8, layers=1))
    with pytest.raises(GraspYawError, match="11 finite values"):
        net.estimate(np.zeros(10))
    with pytest.raises(GraspYawError, match="11 finite values"):
        net.estimate(np.full(11, np.nan))
    with pytest.raises(GraspYawError, match=r"within 1\.\.4"):
        GraspYawConfig(layers=0)
    with pytest.raises(GraspYawError, match="orders must be from"):
        fit_grasp_yaw(np.zeros((3, 11)), [0, 1, 2], [0.0, 0.0, 0.0], steps=1)
    with pytest.raises(GraspYawError, match=r"one of \(0, 2, 4\)"):
        embed_axis(6, 0.0)
    with pytest.raises(GraspYawError, match="no grasp-yaw estimator"):
        load_grasp_yaw(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(GraspYawError, match="not a safetensors file"):
        load_grasp_yaw(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(GraspYawError, match="not a grasp-yaw estimator"):
        load_grasp_yaw(tmp_path / "other.safetensors")
    path = save_grasp_yaw(tmp_path / "yaw.safetensors", net)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    weights = load_file(str(path))
    weights["extra"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(GraspYawError, match="unexpected \\['extra'\\]"):
        load_grasp_yaw(tmp_path / "extra.safetensors")
