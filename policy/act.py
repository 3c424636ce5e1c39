"""The ACT head: F_t tokens + extras + proprioception -> a chunk of K future actions.

Design (after ACT, Zhao et al. 2023, and LeRobot's implementation; written for this project):
- encoder input tokens: [latent, state, extras, F_t tokens...], each projected to dim_model, plus learned position
  embeddings added to queries and keys in every layer (DETR style); a post-norm transformer encoder;
- decoder: K learned query embeddings (the decoder input itself starts at zero) attend to themselves and to the
  encoder memory; `n_decoder_layers` layers, all of them run, then a LayerNorm and a linear action head;
- optional CVAE (`use_vae`): in training an encoder over [CLS, state, action chunk] gives mu/logvar and a sampled
  latent; the loss adds kl_weight * KL. At inference the latent is zeros.

Normalisation lives in one place: `ACTPolicy` holds a `Normalizer` (buffers saved with the weights). Callers pass
physical units everywhere and get physical actions back; the loss is L1 in normalised action units.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from policy.act_config import ACTConfig
from policy.grasp_yaw import WRIST_3, GraspYawConfig, GraspYawNet, wrist_anchor
from policy.normalize import Normalizer


@dataclass(frozen=True)
class PolicyInput:
    """One observation per row: tokens (B, n, C), extras (B, E), state (B, S), physical units."""

    tokens: torch.Tensor
    extras: torch.Tensor
    state: torch.Tensor

    @classmethod
    def from_numpy(
        cls, tokens: npt.NDArray[np.floating], extras: npt.NDArray[np.floating], state: npt.NDArray[np.floating]
    ) -> PolicyInput:
        """A batch of one from one frame's arrays: tokens (n, C), extras (E,), state (S,); copied, so read-only
        arrays (memory-mapped caches, Arrow columns) are fine."""
        return cls(
            tokens=torch.from_numpy(np.array(tokens, dtype=np.float32))[None],
            extras=torch.from_numpy(np.array(extras, dtype=np.float32))[None],
            state=torch.from_numpy(np.array(state, dtype=np.float32))[None],
        )

    def to(self, device: torch.device | str) -> PolicyInput:
        return PolicyInput(self.tokens.to(device), self.extras.to(device), self.state.to(device))


@dataclass(frozen=True)
class PolicyTarget:
    """Action chunks (B, K, A) in physical units, their padding mask is_pad (B, K) bool, and ignore (B, K, A)
    bool: single labels kept out of the loss (None: none; see `policy.undone_closes`)."""

    actions: torch.Tensor
    is_pad: torch.Tensor
    ignore: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PolicyTarget:
        ignore = None if self.ignore is None else self.ignore.to(device)
        return PolicyTarget(self.actions.to(device), self.is_pad.to(device), ignore)

    def valid(self) -> torch.Tensor:
        """(B, K, A) bool: the label elements the loss counts (not padded, not ignored)."""
        keep = (~self.is_pad).unsqueeze(-1).expand(self.actions.shape)
        return keep if self.ignore is None else keep & ~self.ignore


@dataclass(frozen=True)
class LossInfo:
    """Loss terms of one batch: total, masked-mean L1 (normalised units), KL (None without the CVAE)."""

    loss: float
    l1: float
    kl: float | None


def temporal_ensemble(predictions: torch.Tensor, coeff: float) -> torch.Tensor:
    """Weighted average of the predictions (N, A) for one step, oldest first, weights exp(-coeff * i)."""
    if predictions.ndim != 2 or predictions.shape[0] < 1:
        raise ValueError(f"predictions must be (N >= 1, action_dim), got shape {tuple(predictions.shape)}")
    i = torch.arange(predictions.shape[0], dtype=predictions.dtype, device=predictions.device)
    w = torch.exp(-coeff * i)
    return (w[:, None] * predictions).sum(dim=0) / w.sum()


class _EncoderLayer(nn.Module):
    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.dim_model
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.dim_feedforward), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.dim_feedforward, d)
        )
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        qk = x + pos
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, key_padding_mask=pad, need_weights=False)[0]))
        out: torch.Tensor = self.norm2(x + self.drop2(self.ff(x)))
        return out


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.dim_model
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.dim_feedforward), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.dim_feedforward, d)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        qk = x + query_pos
        x = self.norm1(x + self.drop1(self.self_attn(qk, qk, x, need_weights=False)[0]))
        cross = self.cross_attn(x + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        x = self.norm2(x + self.drop2(cross))
        out: torch.Tensor = self.norm3(x + self.drop3(self.ff(x)))
        return out


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class ACTModel(nn.Module):
    """The network on normalised tensors; `ACTPolicy` wraps it with normalisation, validation and the queue."""

    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.dim_model
        self.cfg = cfg
        self.latent_proj = nn.Linear(cfg.latent_dim, d)
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.extras_proj = nn.Linear(cfg.extras_dim, d)
        self.token_proj = nn.Linear(cfg.token_dim, d)
        self.encoder_pos = nn.Parameter(torch.randn(3 + cfg.n_tokens, d) * 0.02)
        self.encoder_layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.query_pos = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
        self.decoder_layers = nn.ModuleList(_DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, cfg.action_dim)
        _xavier(self.encoder_layers)
        _xavier(self.decoder_layers)
        if cfg.use_vae:
            self.vae_cls = nn.Parameter(torch.randn(1, d) * 0.02)
            self.vae_state_proj = nn.Linear(cfg.state_dim, d)
            self.vae_action_proj = nn.Linear(cfg.action_dim, d)
            self.vae_pos = nn.Parameter(torch.randn(2 + cfg.chunk_size, d) * 0.02)
            self.vae_layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.n_vae_encoder_layers))
            self.vae_latent = nn.Linear(d, 2 * cfg.latent_dim)
            _xavier(self.vae_layers)

    def encode_latent(
        self, state: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CVAE posterior (mu, logvar), each (B, latent_dim), from normalised state (B, S) and actions (B, K, A)."""
        if not self.cfg.use_vae:
            raise ValueError("encode_latent needs a model built with use_vae=True")
        b = state.shape[0]
        x = torch.cat(
            [
                self.vae_cls[None].expand(b, 1, -1),
                self.vae_state_proj(state)[:, None],
                self.vae_action_proj(actions),
            ],
            dim=1,
        )
        pad = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=state.device), is_pad], dim=1)
        for layer in self.vae_layers:
            x = layer(x, self.vae_pos[None], pad)
        mu, logvar = self.vae_latent(x[:, 0]).chunk(2, dim=-1)
        return mu, logvar

    def forward(
        self, tokens: torch.Tensor, extras: torch.Tensor, state: torch.Tensor, latent: torch.Tensor
    ) -> torch.Tensor:
        """Normalised action chunk (B, K, A) from normalised inputs and a latent (B, latent_dim)."""
        b = tokens.shape[0]
        x = torch.cat(
            [
                self.latent_proj(latent)[:, None],
                self.state_proj(state)[:, None],
                self.extras_proj(extras)[:, None],
                self.token_proj(tokens),
            ],
            dim=1,
        )
        pos = self.encoder_pos[None]
        for enc in self.encoder_layers:
            x = enc(x, pos)
        query_pos = self.query_pos[None].expand(b, -1, -1)
        q = torch.zeros_like(query_pos)
        for dec in self.decoder_layers:
            q = dec(q, query_pos, x, pos)
        out: torch.Tensor = self.action_head(self.decoder_norm(q))
        return out


def _check_tensor(name: str, x: object, shape: tuple[int | str, ...]) -> torch.Tensor:
    """`x` as a float tensor of `shape` ("B" any batch size >= 1), finite; ValueError naming what is valid."""
    valid = "(" + ", ".join(str(s) for s in shape) + ")"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {valid}, got {type(x).__name__}")
    if x.ndim != len(shape) or any(isinstance(s, int) and x.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; valid: {valid}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} has an empty batch; valid: {valid} with B >= 1")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN or inf values; valid: finite values only")
    return x


class ACTPolicy(nn.Module):
    """Normaliser + `ACTModel` + the action queue / temporal ensembler of `select_action`.

    All inputs and outputs are in physical units; call `eval()` before inference (dropout), `reset()` at the
    start of every episode.
    """

    def __init__(self, config: ACTConfig):
        super().__init__()
        self.config = config
        self.normalizer = Normalizer(
            config.state_dim, config.extras_dim, config.action_dim, config.token_dim, config.normalize_tokens
        )
        self.model = ACTModel(config)
        # the prompt-frame grasp-yaw estimator whose estimates the extras carry (config.grasp_yaw): fitted before
        # the head, frozen, saved and loaded with it so that a head never meets another estimator's values
        self.grasp_yaw: GraspYawNet | None = None
        if config.grasp_yaw:
            self.grasp_yaw = GraspYawNet(
                GraspYawConfig(named=config.grasp_yaw_named, mask=config.grasp_yaw_mask)
            ).requires_grad_(False)
        self._queue: deque[torch.Tensor] = deque()
        self._chunks: list[tuple[int, torch.Tensor]] = []
        self._step = 0

    def set_inference(self, temporal_ensemble_coeff: float | None, n_action_steps: int | None) -> None:
        """Change how `select_action` turns chunks into actions, leaving the weights alone: ensembling with
        coefficient m (a new chunk every step, weights exp(-m * i), i = 0 for the oldest: m > 0 favours older
        predictions, m < 0 newer ones), or, with None, taking `n_action_steps` actions of each chunk (None: all
        K). Validated as `ACTConfig` validates them (ValueError naming the valid range); forgets past chunks."""
        self.config = replace(
            self.config, temporal_ensemble_coeff=temporal_ensemble_coeff, n_action_steps=n_action_steps
        )
        self.reset()

    def reset(self) -> None:
        """Forget queued actions and past chunks (call at every episode start)."""
        self._queue.clear()
        self._chunks = []
        self._step = 0

    def _device(self) -> torch.device:
        return self.model.action_head.weight.device

    def validate_input(self, inp: PolicyInput) -> PolicyInput:
        """`inp` as float32 on the policy's device; ValueError naming the bad input and what is valid."""
        cfg = self.config
        if not isinstance(inp, PolicyInput):
            raise ValueError(f"expected a PolicyInput, got {type(inp).__name__}")
        tokens = _check_tensor(
            f"tokens (feature spec {cfg.feature_spec!r})", inp.tokens, ("B", cfg.n_tokens, cfg.token_dim)
        )
        extras = _check_tensor("extras", inp.extras, ("B", cfg.extras_dim))
        state = _check_tensor("state", inp.state, ("B", cfg.state_dim))
        if not tokens.shape[0] == extras.shape[0] == state.shape[0]:
            raise ValueError(
                f"batch sizes differ: tokens {tokens.shape[0]}, extras {extras.shape[0]}, state {state.shape[0]}; "
                "valid: one batch size B for all inputs"
            )
        dev = self._device()
        return PolicyInput(tokens.to(dev, torch.float32), extras.to(dev, torch.float32), state.to(dev, torch.float32))

    def validate_target(self, target: PolicyTarget, batch: int) -> PolicyTarget:
        cfg = self.config
        if not isinstance(target, PolicyTarget):
            raise ValueError(f"expected a PolicyTarget, got {type(target).__name__}")
        actions = _check_tensor("target actions", target.actions, (batch, cfg.chunk_size, cfg.action_dim))
        pad = target.is_pad
        if not isinstance(pad, torch.Tensor) or pad.dtype != torch.bool or tuple(pad.shape) != (batch, cfg.chunk_size):
            got = tuple(pad.shape) if isinstance(pad, torch.Tensor) else type(pad).__name__
            raise ValueError(f"target is_pad must be a bool tensor of shape ({batch}, {cfg.chunk_size}), got {got}")
        ignore = target.ignore
        if ignore is not None and (
            not isinstance(ignore, torch.Tensor) or ignore.dtype != torch.bool or ignore.shape != actions.shape
        ):
            got = tuple(ignore.shape) if isinstance(ignore, torch.Tensor) else type(ignore).__name__
            raise ValueError(f"target ignore must be None or a bool tensor shaped like the actions, got {got}")
        dev = self._device()
        return PolicyTarget(actions.to(dev, torch.float32), pad.to(dev), None if ignore is None else ignore.to(dev))

    def forward(
        self, inp: PolicyInput, target: PolicyTarget, l1_count: float | None = None
    ) -> tuple[torch.Tensor, LossInfo]:
        """Training loss: L1 over the counted action elements (`PolicyTarget.valid`: not padded, not ignored;
        normalised units) + kl_weight * KL with the CVAE.

        l1_count: what the L1 sum is divided by; default the number of counted elements in this batch.
        Distributed training passes (global count / world size) so that DDP's gradient average equals the
        masked mean over the global batch.
        """
        inp = self.validate_input(inp)
        target = self.validate_target(target, inp.tokens.shape[0])
        norm = self.normalizer
        tokens, extras, state = norm.tokens(inp.tokens), norm.extras(inp.extras), norm.state(inp.state)
        actions = norm.action(self.model_actions(inp.state, inp.extras, target.actions))
        b = tokens.shape[0]
        kl: torch.Tensor | None = None
        if self.config.use_vae:
            mu, logvar = self.model.encode_latent(state, actions, target.is_pad)
            latent = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).sum(dim=-1).mean()
        else:
            latent = torch.zeros(b, self.config.latent_dim, device=tokens.device)
        pred = self.model(tokens, extras, state, latent)
        valid = target.valid().to(pred.dtype)
        l1_sum = ((pred - actions).abs() * valid).sum()
        local_count = valid.sum()
        l1 = l1_sum / (local_count.clamp_min(1) if l1_count is None else l1_count)
        loss = l1 if kl is None else l1 + self.config.kl_weight * kl
        info = LossInfo(
            loss=float(loss.detach()),
            l1=float(l1_sum.detach() / local_count.clamp_min(1)),
            kl=None if kl is None else float(kl.detach()),
        )
        return loss, info

    def predict_action_chunk(self, inp: PolicyInput) -> torch.Tensor:
        """Action chunks (B, K, A) in physical units (zero latent); gradients are not tracked."""
        inp = self.validate_input(inp)
        norm = self.normalizer
        with torch.no_grad():
            latent = torch.zeros(inp.tokens.shape[0], self.config.latent_dim, device=inp.tokens.device)
            pred = self.model(norm.tokens(inp.tokens), norm.extras(inp.extras), norm.state(inp.state), latent)
            return self.model_actions(inp.state, inp.extras, norm.unnormalize_action(pred), inverse=True)

    def model_actions(
        self, state: torch.Tensor, extras: torch.Tensor, actions: torch.Tensor, inverse: bool = False
    ) -> torch.Tensor:
        """Actions (B, K, A) in physical units as the network predicts them for inputs `state` (B, S) and `extras`
        (B, E) (`inverse`: back): unchanged, except that a wrist_anchor head's wrist_3 is relative to
        `policy.grasp_yaw.wrist_anchor` of each input."""
        if not self.config.wrist_anchor:
            return actions
        anchor = wrist_anchor(state, extras[:, self.config.yaw_columns])
        out = actions.clone()
        out[:, :, WRIST_3] += anchor[:, None] if inverse else -anchor[:, None]
        return out

    def select_action(self, obs: PolicyInput) -> torch.Tensor:
        """The next action (A,) for one observation (batch of one).

        Without ensembling: pop from the queue filled by the last chunk's first `action_steps` actions, and predict
        a new chunk when it is empty. With temporal_ensemble_coeff m: predict a chunk every call and average every
        chunk's prediction for this step, weights exp(-m * i), i = 0 for the oldest.
        The observation is validated on every call, also when the queue still holds actions.
        """
        checked = self.validate_input(obs)
        if checked.tokens.shape[0] != 1:
            raise ValueError(f"select_action takes a batch of one observation, got {checked.tokens.shape[0]}")
        m = self.config.temporal_ensemble_coeff
        if m is None:
            if not self._queue:
                chunk = self.predict_action_chunk(checked)[0]
                self._queue.extend(chunk[: self.config.action_steps])
            return self._queue.popleft()
        chunk = self.predict_action_chunk(checked)[0]
        self._drop_passed_chunks()
        self._chunks.append((self._step, chunk))
        return self._ensembled_step(m)

    def coast(self) -> torch.Tensor | None:
        """The next action (A,) from the chunks already predicted, without a new observation, or None when none of
        them reaches this step: with ensembling, the weighted mean of every earlier chunk's prediction for this
        step; without, the next queued action. For frames on which the target is not seen (occlusion), whose
        features the head was not trained on."""
        m = self.config.temporal_ensemble_coeff
        if m is None:
            return self._queue.popleft() if self._queue else None
        self._drop_passed_chunks()
        return self._ensembled_step(m) if self._chunks else None

    def _drop_passed_chunks(self) -> None:
        """Forget chunks that end before the current step."""
        self._chunks = [(s, c) for s, c in self._chunks if self._step - s < self.config.chunk_size]

    def _ensembled_step(self, m: float) -> torch.Tensor:
        """The weighted mean of every kept chunk's prediction for the current step; advances the step."""
        preds = torch.stack([c[self._step - s] for s, c in self._chunks])  # oldest first
        self._step += 1
        return temporal_ensemble(preds, m)

    def num_parameters(self) -> int:
        """Parameters of the head's network (the frozen grasp-yaw estimator not counted)."""
        return sum(p.numel() for p in self.model.parameters())
