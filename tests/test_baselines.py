"""The paper's image baselines (act, act-cvae, act-cvae-condition): config validation, checkpoints, box drawing,
the CVAE's KL term, resumable training, and `sam2grasp train` + `sam2grasp eval` end to end on a tiny dataset.

Small on purpose: 64x48 frames, a 2-episode expert dataset, a tiny transformer (dim 32, K 5), one epoch, one
closed-loop trial of half a simulated second. Success rates of such policies are meaningless; the tests check the
plumbing (shapes, files, errors, the report's policy type).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_HEAD, K, tiny_config
from tiny_world import tiny_world

from pipeline.cli import main
from policy.act import PolicyTarget
from policy.baseline_data import ImageChunkDataset, ImageEpisode
from policy.checkpoint import PolicyCheckpointError, load_policy, save_policy
from policy.frame_prep import draw_box, prepare_frame, resize_frame
from policy.image_act import ImageACTPolicy, build_backbone
from policy.image_act_config import ImageACTConfig, TokenMapACTConfig, parse_image_size
from policy.image_agent import ImageACTAgent, load_image_agent
from policy.image_checkpoint import checkpoint_policy_type, load_image_policy, save_image_policy
from policy.resnet_encoder import ResNet18Encoder
from policy.train_head import HeadTrainConfig
from policy.train_image import train_image_policy

torch.set_num_threads(1)

TINY = ["--chunk", "5", "--dim-model", "32", "--heads", "2", "--ff-dim", "64", "--encoder-layers", "1"]
TINY += ["--batch-size", "16", "--threads", "1", "--image-size", "64x48"]
SMALL_EVAL = ["--trials", "1", "--objects", "3", "--occlusion", "0", "--width", "64", "--height", "48"]
SMALL_EVAL += ["--max-seconds", "0.5", "--threads", "1"]
STATE = np.array([-0.3, -1.7, 1.8, -1.65, -1.57, -0.3, 0.085], dtype=np.float32)


def tiny_image_config(policy: str = "act-cvae", size: tuple[int, int] = (32, 24), **kw: Any) -> ImageACTConfig:
    head = {k: v for k, v in TINY_HEAD.items() if k != "chunk_size"}
    fields: dict[str, Any] = {**head, "latent_dim": 4, "n_vae_encoder_layers": 1, **kw}
    return ImageACTConfig.create(policy, size, channels=(8, 16), chunk_size=K, **fields)


def tiny_policy(policy: str = "act-cvae", seed: int = 0, **kw: Any) -> ImageACTPolicy:
    torch.manual_seed(seed)
    return ImageACTPolicy(tiny_image_config(policy, **kw))


def batch(n: int = 3, size: tuple[int, int] = (32, 24), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    w, h = size
    frames = torch.from_numpy(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
    return frames, torch.from_numpy(np.tile(STATE, (n, 1)))


def target(n: int = 3) -> PolicyTarget:
    return PolicyTarget(torch.randn(n, K, 7), torch.zeros(n, K, dtype=torch.bool))


# ---------------------------------------------------------------- config


def test_config_validation_errors() -> None:
    cfg = ImageACTConfig.create("act", (128, 96), chunk_size=K)
    assert cfg.map_cells == (8, 6)
    assert (cfg.head.n_tokens, cfg.head.token_dim, cfg.head.extras_dim) == (48, 128, 1)
    assert not cfg.head.use_vae
    assert ImageACTConfig.create("act-cvae").head.use_vae
    assert ImageACTConfig.create("act-cvae-condition").draws_box
    assert ImageACTConfig.from_json(cfg.to_json()) == cfg
    cases: list[tuple[Any, str]] = [
        (lambda: ImageACTConfig.create("sam2grasp"), "valid: act, act-cvae, act-cvae-condition"),
        (lambda: ImageACTConfig.create("act", (8, 96)), "image_width must be an integer within 16..1024"),
        (lambda: ImageACTConfig.create("act", (128, 96), use_vae=True), r"follow from the policy type"),
        (lambda: ImageACTConfig.create("act", channels=()), "channels must be 1 to 6"),
        (lambda: ImageACTConfig.create("act", channels=(32, 0)), "channels must be integers within 1..1024"),
        (lambda: ImageACTConfig.create("act", dim_model=30, n_heads=8), "divisible by n_heads"),
        (lambda: ImageACTConfig.create("act", chunk_size=0), "chunk_size must be an integer >= 1"),
        (lambda: ImageACTConfig(policy="act-cvae", head=cfg.head), r"needs \{'use_vae': True\}"),
        (lambda: ImageACTConfig(policy="act", head=cfg.head, image_width=64), "found {'n_tokens': 48}"),
        (lambda: ImageACTConfig(policy="act", head=cfg.head, box_colour=(0, 300, 0)), "box_colour"),
        (lambda: ImageACTConfig(policy="act", head=cfg.head, box_thickness=0), "box_thickness"),
        (lambda: TokenMapACTConfig(feature_spec="pooled4", token_dim=8, n_tokens=17), "must be 'cnn-map'"),
        (lambda: TokenMapACTConfig(feature_spec="cnn-map", token_dim=8, n_tokens=0), "n_tokens must be"),
        (lambda: ImageACTConfig.from_dict({**cfg.to_dict(), "colour": 1}), r"unknown \['colour'\]"),
        (lambda: ImageACTConfig.from_dict({"policy": "act"}), r"missing \['head'\]"),
        (lambda: ImageACTConfig.from_json("{"), "not valid JSON"),
        (lambda: ImageACTConfig.create("act", backbone="resnet50"), "unknown image backbone 'resnet50'; valid: cnn, "),
        (lambda: ImageACTConfig.create("act", backbone="resnet18", channels=(64, 128)), "fixed at \\(64, 128, 256"),
        (lambda: ImageACTConfig(policy="act", head=cfg.head, backbone="vit"), "valid: cnn, resnet18"),
        (lambda: parse_image_size("128*96"), "WIDTHxHEIGHT"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()
    assert parse_image_size(" 64x48 ") == (64, 48)


def test_resnet18_backbone_config_and_map() -> None:
    cfg = ImageACTConfig.create("act-cvae-condition", (320, 240), backbone="resnet18", chunk_size=K)
    assert cfg.channels == (64, 128, 256, 512)
    assert cfg.map_cells == (10, 8)  # stride 32: ACT's last ResNet stage
    assert (cfg.head.n_tokens, cfg.head.token_dim) == (80, 512)
    assert cfg.input_name == "rgb320x240+box-resnet18"
    assert ImageACTConfig.from_json(cfg.to_json()) == cfg
    # a config written before backbones were a setting reads as the small CNN
    old = ImageACTConfig.create("act", (128, 96), chunk_size=K).to_dict()
    del old["backbone"]
    assert ImageACTConfig.from_dict(old).backbone == "cnn"
    # the token count the config promises is the one each backbone's convolutions give, odd sizes included
    torch.manual_seed(0)
    for backbone, size in (("resnet18", (33, 17)), ("resnet18", (64, 48)), ("cnn", (33, 17))):
        c = ImageACTConfig.create(
            "act", size, backbone=backbone, **({} if backbone == "resnet18" else {"channels": (8, 16)})
        )
        encoder = build_backbone(c)
        w, h = size
        tokens = encoder.tokens(torch.zeros(2, h, w, 3, dtype=torch.uint8))
        assert tokens.shape == (2, c.head.n_tokens, c.head.token_dim), (backbone, size)


def test_resnet18_policy_trains_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head: dict[str, Any] = {k: v for k, v in TINY_HEAD.items() if k != "chunk_size"}
    cfg = ImageACTConfig.create("act", (64, 48), backbone="resnet18", chunk_size=K, **head)
    policy = ImageACTPolicy(cfg)
    # ResNet-18 less its classifier has 11,176,512 parameters (GroupNorm's affine pair per channel as BatchNorm's)
    assert sum(p.numel() for p in policy.encoder.parameters()) == 11_176_512
    frames, state = batch(4, (64, 48))
    loss, _ = policy.train()(frames, state, target(4))
    loss.backward()
    assert isinstance(policy.encoder, ResNet18Encoder)
    conv = policy.encoder.stem[0]
    assert isinstance(conv, torch.nn.Conv2d)
    stem = conv.weight.grad
    assert stem is not None
    assert float(stem.abs().sum()) > 0  # the loss reaches the first convolution
    policy.eval()
    save_image_policy(tmp_path / "r", policy)
    loaded = load_image_policy(tmp_path / "r", expect_image_size=(64, 48))
    assert loaded.config.backbone == "resnet18"
    torch.testing.assert_close(loaded.predict_action_chunk(frames, state), policy.predict_action_chunk(frames, state))
    # the small CNN's weights under a resnet18 config: refused with the keys named
    save_image_policy(tmp_path / "cnn", ImageACTPolicy(ImageACTConfig.create("act", (64, 48), chunk_size=K, **head)))
    (tmp_path / "cnn" / "config.json").write_text((tmp_path / "r" / "config.json").read_text())
    with pytest.raises(PolicyCheckpointError, match=r"missing \['encoder.stages"):
        load_image_policy(tmp_path / "cnn")


# ---------------------------------------------------------------- the policy and its checkpoints


def test_forward_shapes_and_input_errors() -> None:
    policy = tiny_policy("act")
    frames, state = batch()
    chunk = policy.eval().predict_action_chunk(frames, state)
    assert chunk.shape == (3, K, 7)
    assert policy.select_action(frames[:1], state[:1]).shape == (7,)
    with pytest.raises(ValueError, match=r"shape \(3, 48, 64, 3\); valid: a uint8 tensor \(B, 24, 32, 3\)"):
        policy.predict_action_chunk(torch.zeros(3, 48, 64, 3, dtype=torch.uint8), state)
    with pytest.raises(ValueError, match=r"dtype torch\.float32"):
        policy.predict_action_chunk(frames.float(), state)
    bad = state.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="state holds 1 NaN"):
        policy.predict_action_chunk(frames, bad)


def test_cvae_kl_term_is_used() -> None:
    frames, state = batch()
    tgt = target()
    plain = tiny_policy("act").train()
    _, info = plain(frames, state, tgt)
    assert info.kl is None
    assert info.loss == pytest.approx(info.l1)
    assert not hasattr(plain.head.model, "vae_layers")
    for kl_weight in (10.0, 0.5):
        policy = tiny_policy("act-cvae", kl_weight=kl_weight).train()
        loss, info = policy(frames, state, tgt)
        assert info.kl is not None
        assert info.kl > 0
        assert info.loss == pytest.approx(info.l1 + kl_weight * info.kl, rel=1e-5)
        loss.backward()
        grad = policy.head.model.vae_latent.weight.grad
        assert grad is not None
        assert float(grad.abs().sum()) > 0  # the CVAE encoder trains through the KL and the latent


def test_checkpoint_round_trip_and_strict_errors(tmp_path: Path) -> None:
    policy = tiny_policy("act-cvae-condition").eval()
    policy.normalizer.action_mean.fill_(0.3)  # normalisation travels with the weights
    save_image_policy(tmp_path / "p", policy, training={"epochs": 1})
    loaded = load_image_policy(tmp_path / "p", expect_policy="act-cvae-condition", expect_image_size=(32, 24))
    assert loaded.config == policy.config
    frames, state = batch()
    torch.testing.assert_close(loaded.predict_action_chunk(frames, state), policy.predict_action_chunk(frames, state))
    assert float(loaded.normalizer.action_mean[0]) == pytest.approx(0.3)
    assert checkpoint_policy_type(tmp_path / "p") == "act-cvae-condition"
    with pytest.raises(PolicyCheckpointError, match="is a 'act-cvae-condition' policy, expected 'act'"):
        load_image_policy(tmp_path / "p", expect_policy="act")
    with pytest.raises(PolicyCheckpointError, match="reads 32x24 frames, expected 128x96"):
        load_image_policy(tmp_path / "p", expect_image_size=(128, 96))
    with pytest.raises(PolicyCheckpointError, match="action mode 'joint', expected 'ee'"):
        load_image_policy(tmp_path / "p", expect_action_mode="ee")
    with pytest.raises(PolicyCheckpointError, match="format 'sam2grasp-image-act', expected 'sam2grasp-act'"):
        load_policy(tmp_path / "p")  # the SAM2Grasp loader refuses a baseline
    # a SAM2Grasp head is refused by the baseline loader, by name
    from policy.act import ACTPolicy

    save_policy(tmp_path / "head", ACTPolicy(tiny_config("pointer", 1)))
    assert checkpoint_policy_type(tmp_path / "head") == "sam2grasp"
    with pytest.raises(PolicyCheckpointError, match="holds a SAM2Grasp head"):
        load_image_policy(tmp_path / "head")
    # weights of another image size (another token count) under this config: shape mismatch, named
    other = tiny_policy("act-cvae-condition", size=(64, 48))
    save_image_policy(tmp_path / "big", other)
    (tmp_path / "big" / "config.json").write_text((tmp_path / "p" / "config.json").read_text())
    with pytest.raises(PolicyCheckpointError, match=r"head.model.encoder_pos has shape \(195, 32\)"):
        load_image_policy(tmp_path / "big")
    # weights of another type (no CVAE): missing keys, named
    save_image_policy(tmp_path / "plain", tiny_policy("act"))
    (tmp_path / "plain" / "config.json").write_text((tmp_path / "p" / "config.json").read_text())
    with pytest.raises(PolicyCheckpointError, match=r"missing \['head.model.vae_"):
        load_image_policy(tmp_path / "plain")
    with pytest.raises(PolicyCheckpointError, match="not found"):
        load_image_policy(tmp_path / "nothing")


# ---------------------------------------------------------------- frames and boxes


def test_box_drawing_for_the_condition_variant() -> None:
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    out = draw_box(image, [4, 6, 12, 14], (0, 255, 255), 2)
    cyan = np.all(out == (0, 255, 255), axis=-1)
    assert cyan[6:8, 4:12].all()
    assert cyan[12:14, 4:12].all()  # bottom edge: rows 12-13 (y1 = 14 exclusive)
    assert cyan[6:14, 4:6].all()
    assert cyan[6:14, 10:12].all()
    assert not cyan[8:12, 6:10].any()  # inside untouched
    assert cyan.sum() == 8 * 8 - 4 * 4
    assert not image.any()  # a copy
    np.testing.assert_array_equal(draw_box(image, np.zeros(4), (0, 255, 255), 2), image)  # no box: nothing drawn
    clipped = draw_box(image, [-5, -5, 50, 50], (255, 0, 0), 1)
    assert clipped[0, :, 0].all()
    assert clipped[-1, :, 0].all()
    # prepare_frame scales a 320x240 box to the policy's 32x24 and draws it; the other baselines draw nothing
    rgb = np.full((240, 320, 3), 90, dtype=np.uint8)
    cfg = tiny_image_config("act-cvae-condition")
    frame = prepare_frame(rgb, [40, 60, 120, 140], cfg)
    assert frame.shape == (24, 32, 3)
    drawn = np.argwhere(np.all(frame == cfg.box_colour, axis=-1))
    assert drawn.min(axis=0).tolist() == [6, 4]
    assert drawn.max(axis=0).tolist() == [13, 11]
    np.testing.assert_array_equal(prepare_frame(rgb, [40, 60, 120, 140], tiny_image_config("act")), frame * 0 + 90)
    with pytest.raises(ValueError, match="a box is required"):
        prepare_frame(rgb, None, cfg)
    assert resize_frame(rgb, (32, 24)).shape == (24, 32, 3)


def test_condition_agent_draws_the_tracked_box() -> None:
    from policy.cache import load_tracker

    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    policy = tiny_policy("act-cvae-condition")
    with pytest.raises(ValueError, match="needs a tracker"):
        ImageACTAgent(policy)
    agent = ImageACTAgent(policy, tracker)
    rgb = np.full((48, 64, 3), 40, dtype=np.uint8)
    rgb[10:30, 12:40] = (220, 40, 40)
    action, step = agent.start(rgb, [12, 10, 40, 30], STATE)
    assert action.shape == (7,)
    assert step.index == 0
    seen = agent._frames(rgb)[0].numpy()
    expected = prepare_frame(rgb, step.box, policy.config)
    np.testing.assert_array_equal(seen, expected)  # the tracker's box, as training drew the dataset's
    action, step = agent.act(rgb, STATE)
    assert step.index == 1
    plain = ImageACTAgent(tiny_policy("act"), tracker)
    assert plain.tracker is None  # act and act-cvae never use a tracker or the prompt box
    _, frame_step = plain.start(rgb, [0, 0, 0, 0], STATE)
    assert frame_step.mask is None
    assert not frame_step.visible


# ---------------------------------------------------------------- training


def synthetic_episode(seed: int, length: int) -> ImageEpisode:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length, 24, 32, 3), dtype=np.uint8)
    state = np.cumsum(rng.normal(0, 0.05, (length, 7)), axis=0).astype(np.float32)
    return ImageEpisode(frames, state, np.roll(state, -1, axis=0))


def test_image_training_resumes_exactly(tmp_path: Path) -> None:
    train = [synthetic_episode(s, 10 + s) for s in range(3)]
    val = [synthetic_episode(9, 8)]
    cfg = HeadTrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_steps=2)
    image_cfg = tiny_image_config("act-cvae", dropout=0.1)
    full = train_image_policy(train, val, image_cfg, cfg, tmp_path / "full", log=None)
    assert full.steps == full.total_steps == 2 * (33 // 8)
    assert all(h["train_kl"] is not None for h in full.history)
    part = train_image_policy(train, val, image_cfg, cfg, tmp_path / "split", log=None, stop_after_steps=5)
    assert part.stopped_early
    rest = train_image_policy(train, val, image_cfg, cfg, tmp_path / "split", log=None)
    assert rest.steps == full.total_steps
    a, b = load_image_policy(full.policy_dir), load_image_policy(rest.policy_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=name)
    assert (tmp_path / "full" / "loss_curve.png").is_file()
    with pytest.raises(ValueError, match="another configuration"):
        train_image_policy(train, val, image_cfg, HeadTrainConfig(epochs=3, batch_size=8), tmp_path / "split", log=None)
    with pytest.raises(ValueError, match="holds 32x24 frames; the policy reads 64x48"):
        train_image_policy(train, val, tiny_image_config("act", (64, 48)), cfg, tmp_path / "x", log=None)
    data = ImageChunkDataset(train, K)
    frames, _, tgt = data.batch([9, 0])
    assert frames.shape == (2, 24, 32, 3)
    assert tgt.is_pad[0].tolist() == [False, True, True, True, True]  # frame 9 is the first episode's last


# ---------------------------------------------------------------- end to end, as a user runs it


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-episode 64x48 dataset and a (random, seeded) compact tracker checkpoint."""
    root = tmp_path_factory.mktemp("baselines")
    data, ckpt, _ = tiny_world(root)
    return {"root": root, "data": data, "tracker": ckpt}


def test_train_and_eval_each_baseline_end_to_end(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = workspace["root"], str(workspace["data"])
    steps: dict[str, int] = {}
    # act-cvae runs on ACT's ResNet-18 layout: its 64x48 frames become a 2 x 2 map of 512-wide tokens
    for policy, backbone in (("act", []), ("act-cvae", ["--backbone", "resnet18"]), ("act-cvae-condition", [])):
        out = root / policy
        args = ["train", "--policy", policy, "--data", data, "--out", str(out), "--epochs", "1", *TINY, *backbone]
        assert main([*args, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["policy"] == policy
        suffix = ("+box" if policy.endswith("condition") else "") + ("-resnet18" if backbone else "")
        assert report["features"] == "rgb64x48" + suffix
        assert (report["train_episodes"], report["val_episodes"]) == (1, 1)
        assert report["epochs_done"] == 1
        steps[policy] = report["steps"]
        assert np.isfinite([report["final_train_l1"], report["final_val_l1"], report["val_l1_mean_baseline"]]).all()
        assert Path(report["loss_curve"]).is_file()
        loaded = load_image_policy(report["policy_dir"], expect_policy=policy, expect_image_size=(64, 48))
        assert loaded.config.head.chunk_size == 5
        assert loaded.config.backbone == ("resnet18" if backbone else "cnn")
        assert loaded.config.head.n_tokens == (4 if backbone else 12)
        ev = ["eval", "--policy", report["policy_dir"], *SMALL_EVAL, "--out", str(root / f"eval_{policy}")]
        if policy.endswith("condition"):
            assert main(ev) == 2  # the condition variant needs the tracker whose box it draws
            assert "--tracker-checkpoint" in capsys.readouterr().err
            ev += ["--tracker-checkpoint", str(workspace["tracker"])]
        assert main([*ev, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["policy_type"] == policy
        assert result["feature_spec"] == report["features"]
        assert result["perception"] == ("tracker" if policy.endswith("condition") else "none")
        level = result["levels"][0]
        assert level["trials"] == 1
        assert level["failed_input"] == 0, level["episodes"][0]["error"]
        assert level["wilson_low"] <= level["rate"] <= level["wilson_high"]
        assert sum(level["outcomes"].values()) == 1
        assert level["seeds"] == [10_000_000]  # the same test seeds as SAM2Grasp's
        assert level["episodes"][0]["steps"] == pytest.approx(10, abs=1)
    # a rerun resumes: nothing left to do
    args = ["train", "--policy", "act", "--data", data, "--out", str(root / "act"), "--epochs", "1", *TINY, "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == steps["act"]
    agent = load_image_agent(root / "act" / "policy")
    assert agent.tracker is None


def test_train_and_eval_refuse_options_of_the_other_kind(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(workspace["data"])
    out = str(workspace["root"] / "never")
    assert main(["train", "--policy", "act", "--data", data, "--features", "pooled4", "--out", out]) == 2
    assert "trains on frames" in capsys.readouterr().err
    assert main(["train", "--policy", "sam2grasp", "--data", data, "--image-size", "64x48", "--out", out]) == 2
    assert "sam2grasp reads cached features" in capsys.readouterr().err
    assert main(["train", "--policy", "act", "--data", data, "--image-size", "64by48", "--out", out]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["train", "--policy", "acts", "--data", data, "--out", out]) == 2
    assert "valid: sam2grasp, act, act-cvae, act-cvae-condition" in capsys.readouterr().err
    assert main(["train", "--policy", "sam2grasp", "--data", data, "--backbone", "resnet18", "--out", out]) == 2
    assert "--backbone sets the image baselines' vision backbone" in capsys.readouterr().err
    assert main(["train", "--policy", "act", "--data", data, "--backbone", "resnet50", "--out", out]) == 2
    assert "unknown image backbone 'resnet50'; valid: cnn, resnet18" in capsys.readouterr().err
    assert not Path(out).exists()
    head = workspace["root"] / "head"
    from policy.act import ACTPolicy

    save_policy(head, ACTPolicy(tiny_config("pooled2", 5, token_dim=64)))
    assert main(["eval", "--policy", str(head), *SMALL_EVAL, "--out", out]) == 2
    assert "a sam2grasp policy needs --tracker-checkpoint" in capsys.readouterr().err
