"""ACT head: shapes, decoder depth, CVAE, padding, validation, normaliser, checkpoints, select_action, chunks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import K, tiny_config

from policy.act import ACTPolicy, PolicyInput, PolicyTarget, temporal_ensemble
from policy.act_config import ACTConfig
from policy.checkpoint import PolicyCheckpointError, load_policy, save_policy
from policy.chunks import ChunkDataset, EpisodeArrays, collate, split_by_episode
from policy.normalize import STD_FLOOR, compute_stats

torch.set_num_threads(1)


def tiny(**kw: object) -> ACTConfig:
    return tiny_config("masked", 3, **kw)


def batch(b: int = 3, seed: int = 0, cfg: ACTConfig | None = None) -> tuple[PolicyInput, PolicyTarget]:
    cfg = cfg or tiny()
    g = torch.Generator().manual_seed(seed)
    inp = PolicyInput(
        tokens=torch.randn(b, cfg.n_tokens, cfg.token_dim, generator=g),
        extras=torch.rand(b, 7, generator=g),
        state=torch.randn(b, 7, generator=g),
    )
    pad = torch.zeros(b, cfg.chunk_size, dtype=torch.bool)
    pad[0, 3:] = True
    return inp, PolicyTarget(torch.randn(b, cfg.chunk_size, 7, generator=g), pad)


def episode(t: int, seed: int, n: int = 3, c: int = 8) -> EpisodeArrays:
    rng = np.random.default_rng(seed)
    action = rng.normal(size=(t, 7)).astype(np.float32)
    action[:, 6] = 0.04  # a constant gripper: its std is floored
    return EpisodeArrays(
        tokens=rng.normal(size=(t, n, c)).astype(np.float16),
        extras=rng.random((t, 7)).astype(np.float32),
        state=rng.normal(size=(t, 7)).astype(np.float32) * 2 + 1,
        action=action,
    )


def test_predict_chunk_shape_and_units() -> None:
    torch.manual_seed(0)
    policy = ACTPolicy(tiny()).eval()
    policy.normalizer.set_stats(compute_stats([episode(20, 1), episode(15, 2)]))
    inp, _ = batch(4)
    out = policy.predict_action_chunk(inp)
    assert out.shape == (4, K, 7)
    assert torch.isfinite(out).all()
    norm = policy.normalizer
    raw = policy.model(norm.tokens(inp.tokens), norm.extras(inp.extras), norm.state(inp.state), torch.zeros(4, 4))
    torch.testing.assert_close(out, raw * norm.action_std + norm.action_mean)


def test_decoder_depth_is_used() -> None:
    torch.manual_seed(0)
    deep = ACTPolicy(tiny(n_decoder_layers=2))
    assert len(deep.model.decoder_layers) == 2
    inp, target = batch()
    loss, _ = deep(inp, target)
    loss.backward()
    for layer in deep.model.decoder_layers:
        for name in ("cross_attn", "ff", "norm3"):
            part: torch.nn.Module = getattr(layer, name)
            grad = sum((float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None), 0.0)
            assert grad > 0
    # the same weights without the second layer give another output: the second layer takes part
    shallow = ACTPolicy(tiny(n_decoder_layers=1)).eval()
    result = shallow.load_state_dict(deep.state_dict(), strict=False)
    assert result.missing_keys == []
    assert all(k.startswith("model.decoder_layers.1.") for k in result.unexpected_keys)
    deep.eval()
    assert not torch.allclose(deep.predict_action_chunk(inp), shallow.predict_action_chunk(inp))


def test_vae_kl_and_latent() -> None:
    torch.manual_seed(0)
    cfg = tiny(use_vae=True, kl_weight=10.0)
    policy = ACTPolicy(cfg).train()
    inp, target = batch()
    loss, info = policy(inp, target)
    assert info.kl is not None
    assert info.kl > 0
    assert loss.item() == pytest.approx(info.l1 + 10.0 * info.kl, rel=1e-5)
    loss.backward()
    assert policy.model.vae_latent.weight.grad is not None
    assert policy.model.vae_latent.weight.grad.abs().sum() > 0
    # training samples a latent: two draws give two losses; the posterior depends on the target chunk
    loss2, _ = policy(inp, target)
    assert loss2.item() != pytest.approx(loss.item(), rel=1e-7)
    mu1, _ = policy.model.encode_latent(inp.state, target.actions, target.is_pad)
    mu2, _ = policy.model.encode_latent(inp.state, target.actions + 1, target.is_pad)
    assert not torch.allclose(mu1, mu2)
    # inference: zero latent, deterministic
    policy.eval()
    a, b = policy.predict_action_chunk(inp), policy.predict_action_chunk(inp)
    torch.testing.assert_close(a, b)
    raw = policy.model(inp.tokens, inp.extras, inp.state, torch.zeros(3, cfg.latent_dim))
    torch.testing.assert_close(a, raw)
    # no VAE: no KL term
    _, plain = ACTPolicy(tiny())(inp, target)
    assert plain.kl is None


def test_loss_ignores_padded_steps() -> None:
    torch.manual_seed(0)
    policy = ACTPolicy(tiny())
    inp, target = batch()
    loss, _ = policy(inp, target)
    changed = target.actions.clone()
    changed[0, 3:] += 100.0  # padded steps of row 0
    loss_pad, _ = policy(inp, PolicyTarget(changed, target.is_pad))
    assert loss_pad.item() == pytest.approx(loss.item(), abs=1e-6)
    changed[0, 2] += 1.0  # a real step
    loss_real, _ = policy(inp, PolicyTarget(changed, target.is_pad))
    assert loss_real.item() != pytest.approx(loss.item(), abs=1e-6)


def test_config_validation_and_json() -> None:
    cfg = tiny(temporal_ensemble_coeff=0.01, use_vae=True)
    assert ACTConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="valid: joint, ee"):
        tiny(action_mode="cartesian")
    with pytest.raises(ValueError, match="gives 3 tokens"):
        tiny(n_tokens=17)
    with pytest.raises(ValueError, match="unknown feature spec"):
        tiny(feature_spec="pooledX")
    with pytest.raises(ValueError, match=r"extras_dim=7 does not match feature spec 'masked\+shape', which gives 11"):
        tiny(feature_spec="masked+shape")
    assert tiny(feature_spec="masked+shape", extras_dim=11).extras_dim == 11
    with pytest.raises(ValueError, match="plus 5 shape values, which gives 12"):
        tiny(shape_input=True)
    named = tiny(shape_input=True, extras_dim=12)
    assert ACTConfig.from_json(named.to_json()) == named
    assert named.state_extras_from is None  # no place values: nothing is recomputed from a lagged state
    with pytest.raises(ValueError, match="shape_input must be true or false"):
        tiny(shape_input=1, extras_dim=12)
    old = {k: v for k, v in cfg.to_dict().items() if k != "shape_input"}
    assert ACTConfig.from_dict(old).shape_input is False  # a head saved before the option reads no shape
    with pytest.raises(ValueError, match="divisible by n_heads"):
        tiny(n_heads=5)
    with pytest.raises(ValueError, match="n_action_steps"):
        tiny(n_action_steps=K + 1)
    with pytest.raises(ValueError, match="n_decoder_layers must be an integer >= 1"):
        tiny(n_decoder_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        tiny(dropout=1.5)
    with pytest.raises(ValueError, match="kl_weight"):
        tiny(kl_weight=-1.0)
    with pytest.raises(ValueError, match="temporal_ensemble_coeff"):
        tiny(temporal_ensemble_coeff=float("nan"))
    with pytest.raises(ValueError, match="valid keys"):
        ACTConfig.from_json(json.dumps({**cfg.to_dict(), "chunk": 3}))
    assert ACTConfig(feature_spec="pooled4", token_dim=64, n_tokens=17).n_decoder_layers == 1


def test_bad_inputs_raise_value_error() -> None:
    policy = ACTPolicy(tiny()).eval()
    inp, target = batch()
    bad_state = inp.state.clone()
    bad_state[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"state holds 1 NaN or inf"):
        policy.predict_action_chunk(replace(inp, state=bad_state))
    bad_tokens = inp.tokens.clone()
    bad_tokens[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="tokens"):
        policy(replace(inp, tokens=bad_tokens), target)
    with pytest.raises(ValueError, match=r"tokens.*shape \(3, 17, 8\); valid: \(B, 3, 8\)"):
        policy.predict_action_chunk(replace(inp, tokens=torch.zeros(3, 17, 8)))
    with pytest.raises(ValueError, match=r"valid: \(B, 3, 8\)"):
        policy.predict_action_chunk(replace(inp, tokens=torch.zeros(3, 3, 256)))
    with pytest.raises(ValueError, match=r"extras has shape \(3, 6\); valid: \(B, 7\)"):
        policy.predict_action_chunk(replace(inp, extras=torch.zeros(3, 6)))
    with pytest.raises(ValueError, match="batch sizes differ"):
        policy.predict_action_chunk(replace(inp, state=torch.zeros(2, 7)))
    with pytest.raises(ValueError, match="is_pad"):
        policy(inp, PolicyTarget(target.actions, target.is_pad.float()))
    policy.reset()
    with pytest.raises(ValueError, match="state"):
        policy.select_action(PolicyInput.from_numpy(np.zeros((3, 8)), np.zeros(7), np.full(7, np.nan)))


def test_normalizer_round_trip_and_floor() -> None:
    eps = [episode(30, 1), episode(20, 2)]
    stats = compute_stats(eps)
    assert stats.action_std[6] == pytest.approx(STD_FLOOR)
    policy = ACTPolicy(tiny())
    policy.normalizer.set_stats(stats)
    norm = policy.normalizer
    state = torch.from_numpy(np.concatenate([e.state for e in eps]))
    z = norm.state(state)
    torch.testing.assert_close(z.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(7), atol=1e-4, rtol=0)
    tokens = torch.from_numpy(np.concatenate([e.tokens for e in eps]).astype(np.float32))
    torch.testing.assert_close(norm.tokens(tokens).mean((0, 1)), torch.zeros(8), atol=1e-4, rtol=0)
    actions = torch.randn(4, K, 7)
    torch.testing.assert_close(norm.unnormalize_action(norm.action(actions)), actions)
    plain = ACTPolicy(tiny(normalize_tokens=False))
    plain.normalizer.set_stats(stats)
    torch.testing.assert_close(plain.normalizer.tokens(tokens), tokens)


def test_checkpoint_round_trip_and_strict_errors(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    policy = ACTPolicy(tiny(use_vae=True, action_mode="ee")).eval()
    policy.normalizer.set_stats(compute_stats([episode(20, 1)]))
    save_policy(tmp_path / "ck", policy, training={"epochs": 3})
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {"model.safetensors", "config.json"}
    loaded = load_policy(tmp_path / "ck", expect_feature_spec="masked", expect_action_mode="ee")
    assert loaded.config == policy.config
    assert not loaded.training
    inp, _ = batch()
    torch.testing.assert_close(loaded.predict_action_chunk(inp), policy.predict_action_chunk(inp))
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["training"] == {"epochs": 3}

    with pytest.raises(PolicyCheckpointError, match=r"feature spec 'masked', expected 'pooled4'"):
        load_policy(tmp_path / "ck", expect_feature_spec="pooled4")
    with pytest.raises(PolicyCheckpointError, match=r"action mode 'ee', expected 'joint'"):
        load_policy(tmp_path / "ck", expect_action_mode="joint")

    state = load_file(str(tmp_path / "ck" / "model.safetensors"))
    renamed = dict(state)
    renamed["model.action_head.weightX"] = renamed.pop("model.action_head.weight")
    save_file(renamed, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(PolicyCheckpointError, match=r"missing \['model.action_head.weight'\].*weightX"):
        load_policy(tmp_path / "ck")
    reshaped = dict(state)
    reshaped["model.action_head.weight"] = torch.zeros(6, 32)
    save_file(reshaped, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(PolicyCheckpointError, match=r"action_head.weight has shape \(6, 32\)"):
        load_policy(tmp_path / "ck")
    doc = json.loads((tmp_path / "ck" / "config.json").read_text())
    doc["config"]["n_decoder_layers"] = 2  # weights of a 1-layer decoder under a 2-layer config
    (tmp_path / "ck" / "config.json").write_text(json.dumps(doc))
    save_file(state, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(PolicyCheckpointError, match="missing"):
        load_policy(tmp_path / "ck")
    with pytest.raises(PolicyCheckpointError, match="not found"):
        load_policy(tmp_path / "nowhere")


def test_select_action_queue() -> None:
    torch.manual_seed(0)
    policy = ACTPolicy(tiny()).eval()
    calls: list[torch.Tensor] = []
    original = policy.predict_action_chunk

    def counting(inp: PolicyInput) -> torch.Tensor:
        out = original(inp)
        calls.append(out)
        return out

    policy.predict_action_chunk = counting  # type: ignore[method-assign]
    obs = [batch(1, seed=s)[0] for s in range(2 * K)]
    actions = [policy.select_action(o) for o in obs]
    assert len(calls) == 2
    assert actions[0].shape == (7,)
    for i, a in enumerate(actions):
        torch.testing.assert_close(a, calls[i // K][0, i % K])
    policy.reset()
    policy.select_action(obs[0])
    assert len(calls) == 3
    stepped = ACTPolicy(tiny(n_action_steps=2)).eval()
    stepped.predict_action_chunk = counting  # type: ignore[method-assign]
    calls.clear()
    for o in obs[:6]:
        stepped.select_action(o)
    assert len(calls) == 3


def test_select_action_temporal_ensemble_matches_offline() -> None:
    torch.manual_seed(0)
    m = 0.3
    policy = ACTPolicy(tiny(temporal_ensemble_coeff=m)).eval()
    obs = [batch(1, seed=s)[0] for s in range(3 * K)]
    chunks = [policy.predict_action_chunk(o)[0] for o in obs]
    online = [policy.select_action(o) for o in obs]
    for t, got in enumerate(online):
        preds = [chunks[s][t - s] for s in range(max(0, t - K + 1), t + 1)]  # oldest first
        w = np.exp(-m * np.arange(len(preds)))
        want = sum(wi * p for wi, p in zip(w, preds, strict=True)) / w.sum()
        torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(temporal_ensemble(torch.tensor([[1.0], [3.0]]), 0.0), torch.tensor([2.0]))
    policy.reset()
    torch.testing.assert_close(policy.select_action(obs[0]), chunks[0][0])


def test_chunk_dataset_padding_collate_and_split() -> None:
    eps = [episode(7, 1), episode(4, 2)]
    data = ChunkDataset(eps, K)
    assert len(data) == 11
    inp, tgt = data[5]
    assert inp.tokens.shape == (3, 8)
    assert inp.tokens.dtype == torch.float32
    a = torch.from_numpy(eps[0].action)
    torch.testing.assert_close(tgt.actions, torch.stack([a[5], a[6], a[6], a[6], a[6]]))
    assert tgt.is_pad.tolist() == [False, False, True, True, True]
    inp, tgt = data[7]  # episode 1, t = 0: no bleed into another episode
    torch.testing.assert_close(tgt.actions[3], torch.from_numpy(eps[1].action[3]))
    assert tgt.is_pad.tolist() == [False, False, False, False, True]
    b_inp, b_tgt = collate([data[i] for i in (0, 5, 10)])
    g_inp, g_tgt = data.batch([0, 5, 10])
    torch.testing.assert_close(b_inp.tokens, g_inp.tokens)
    torch.testing.assert_close(b_tgt.actions, g_tgt.actions)
    assert torch.equal(b_tgt.is_pad, g_tgt.is_pad)
    train, val = split_by_episode([episode(5, s) for s in range(10)], 0.2, seed=0)
    assert len(train) == 8
    assert len(val) == 2
    with pytest.raises(ValueError, match="tokens must be"):
        EpisodeArrays(np.zeros((3, 8)), np.zeros((3, 7)), np.zeros((3, 7)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"state must be \(T=3"):
        EpisodeArrays(np.zeros((3, 3, 8), np.float32), np.zeros((3, 7)), np.zeros((2, 7)), np.zeros((3, 7)))


def test_coast_ensembles_earlier_chunks_without_a_new_observation() -> None:
    """Steps 0-2 observe, steps 3.. coast: each coasted action is the weighted mean of the chunks of steps 0-2 for
    that step, until none reaches it (step K + 2): then None, and the next observation predicts again."""
    torch.manual_seed(0)
    m = 0.3
    policy = ACTPolicy(tiny(temporal_ensemble_coeff=m)).eval()
    assert policy.coast() is None  # nothing predicted yet
    obs = [batch(1, seed=s)[0] for s in range(3)]
    chunks = [policy.predict_action_chunk(o)[0] for o in obs]
    for o in obs:
        policy.select_action(o)
    for t in range(3, K + 2):
        preds = [chunks[s][t - s] for s in range(3) if t - s < K]
        w = np.exp(-m * np.arange(len(preds)))
        want = sum(wi * p for wi, p in zip(w, preds, strict=True)) / w.sum()
        got = policy.coast()
        assert got is not None
        torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=1e-5)
    assert policy.coast() is None
    fresh = batch(1, seed=9)[0]
    torch.testing.assert_close(policy.select_action(fresh), policy.predict_action_chunk(fresh)[0, 0])


def test_coast_without_ensembling_pops_the_queue() -> None:
    torch.manual_seed(0)
    policy = ACTPolicy(tiny()).eval()
    o = batch(1, seed=0)[0]
    chunk = policy.predict_action_chunk(o)[0]
    torch.testing.assert_close(policy.select_action(o), chunk[0])
    for i in range(1, K):
        got = policy.coast()
        assert got is not None
        torch.testing.assert_close(got, chunk[i])
    assert policy.coast() is None


def test_set_inference_changes_how_chunks_become_actions_and_keeps_the_weights() -> None:
    torch.manual_seed(0)
    policy = ACTPolicy(tiny(temporal_ensemble_coeff=0.3)).eval()
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    obs = [batch(1, seed=s)[0] for s in range(4)]
    chunks = [policy.predict_action_chunk(o)[0] for o in obs]
    policy.select_action(obs[0])
    policy.set_inference(None, 2)  # the first 2 actions of each chunk; past chunks are forgotten
    got = [policy.select_action(o) for o in obs]
    for t, want in enumerate((chunks[0][0], chunks[0][1], chunks[2][0], chunks[2][1])):
        torch.testing.assert_close(got[t], want)
    policy.set_inference(-0.5, None)  # newer predictions weigh more
    policy.select_action(obs[0])
    second = policy.select_action(obs[1])
    w = np.exp(0.5 * np.arange(2))
    torch.testing.assert_close(second, ((w[0] * chunks[0][1] + w[1] * chunks[1][0]) / w.sum()).float())
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, weights[k])
    with pytest.raises(ValueError, match="n_action_steps"):
        policy.set_inference(None, K + 1)
    with pytest.raises(ValueError, match="temporal_ensemble_coeff"):
        policy.set_inference(float("nan"), None)
    assert policy.config.temporal_ensemble_coeff == -0.5  # a refused change leaves the settings as they were


@pytest.mark.parametrize(
    ("ensemble", "steps", "want"),
    [
        (None, None, None),
        ("0.1", None, (0.1, None)),
        ("-0.2", None, (-0.2, None)),
        ("none", 5, (None, 5)),
        (None, 4, (None, 4)),
        ("none", None, (None, None)),
    ],
)
def test_eval_chunk_execution_options(ensemble: str | None, steps: int | None, want: object) -> None:
    from pipeline.cli_policy import _chunk_execution

    assert _chunk_execution(ensemble, steps) == want


@pytest.mark.parametrize(
    ("ensemble", "steps", "match"),
    [("fast", None, "a number"), ("inf", None, "finite"), ("0.1", 5, "without ensembling"), (None, 0, ">= 1")],
)
def test_eval_chunk_execution_options_are_checked(ensemble: str | None, steps: int | None, match: str) -> None:
    from pipeline.cli_policy import _chunk_execution

    with pytest.raises(ValueError, match=match):
        _chunk_execution(ensemble, steps)
