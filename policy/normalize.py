"""Per-feature mean/std normalisation of the ACT head's inputs and actions.

Where it applies: the `Normalizer` is a submodule of `ACTPolicy` (policy/act.py). Every public method of the
policy takes physical units (radians, metres, raw F_t) and returns physical units; the policy normalises on the
way in and un-normalises actions on the way out. The statistics are buffers, so they are saved and loaded with the
weights (model.safetensors) and can never be separated from the model they were trained with.

Statistics come from the training episodes (`compute_stats`); std is floored at `STD_FLOOR` so that a
near-constant feature (the gripper, a mask area that hardly changes) is not blown up into noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

if TYPE_CHECKING:
    from policy.chunks import EpisodeArrays

#: Smallest std used for any feature.
STD_FLOOR = 1e-2

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class NormStats:
    """Mean and std (floored) per feature; token stats are per channel (C,)."""

    state_mean: Array
    state_std: Array
    extras_mean: Array
    extras_std: Array
    action_mean: Array
    action_std: Array
    token_mean: Array
    token_std: Array


def _mean_std(x: npt.NDArray[np.floating], axes: tuple[int, ...]) -> tuple[Array, Array]:
    mean = x.mean(axis=axes, dtype=np.float64)
    var = np.square(x.astype(np.float64) - mean).mean(axis=axes)
    return mean, np.maximum(np.sqrt(var), STD_FLOOR)


def compute_stats(
    episodes: Sequence[EpisodeArrays],
    as_predicted: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> NormStats:
    """Statistics over every frame of `episodes` (at least one frame). as_predicted(state (T, S), extras (T, E),
    actions (T, 1, A)): the actions as the network predicts them (`ACTPolicy.model_actions`), whose statistics
    the action normaliser then takes; None: the actions as they are."""
    if not episodes:
        raise ValueError("compute_stats needs at least one episode, got none")
    state = np.concatenate([e.state for e in episodes])
    extras = np.concatenate([e.extras for e in episodes])
    action = np.concatenate([e.action for e in episodes])
    if as_predicted is not None:
        with torch.no_grad():
            shifted = as_predicted(
                torch.from_numpy(state.astype(np.float32)),
                torch.from_numpy(extras.astype(np.float32)),
                torch.from_numpy(action.astype(np.float32))[:, None],
            )
        action = shifted[:, 0].numpy()
    channels = episodes[0].tokens.shape[-1]
    # tokens can be large: accumulate per episode in float64
    count = 0
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for e in episodes:
        t = e.tokens.reshape(-1, channels).astype(np.float64)
        count += t.shape[0]
        total += t.sum(axis=0)
        total_sq += np.square(t).sum(axis=0)
    token_mean = total / count
    token_std = np.maximum(np.sqrt(np.maximum(total_sq / count - np.square(token_mean), 0.0)), STD_FLOOR)
    s_mean, s_std = _mean_std(state, (0,))
    e_mean, e_std = _mean_std(extras, (0,))
    a_mean, a_std = _mean_std(action, (0,))
    return NormStats(s_mean, s_std, e_mean, e_std, a_mean, a_std, token_mean, token_std)


class Normalizer(nn.Module):
    """Mean/std buffers for state, extras, actions and (optionally) token channels; identity until `set_stats`."""

    state_mean: torch.Tensor
    state_std: torch.Tensor
    extras_mean: torch.Tensor
    extras_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    token_mean: torch.Tensor
    token_std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, state_dim: int, extras_dim: int, action_dim: int, token_dim: int, normalize_tokens: bool):
        super().__init__()
        self.normalize_tokens = normalize_tokens
        for name, dim in (("state", state_dim), ("extras", extras_dim), ("action", action_dim), ("token", token_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_stats(self, stats: NormStats) -> None:
        """Load statistics (shapes must match the buffers); token stats are kept only with normalize_tokens."""
        for name in ("state", "extras", "action", "token"):
            if name == "token" and not self.normalize_tokens:
                continue
            for kind in ("mean", "std"):
                key = f"{name}_{kind}"
                value = np.asarray(getattr(stats, key), dtype=np.float64)
                buf: torch.Tensor = getattr(self, key)
                if value.shape != tuple(buf.shape):
                    raise ValueError(f"stats {key} has shape {value.shape}; this normaliser expects {tuple(buf.shape)}")
                if not np.isfinite(value).all():
                    raise ValueError(f"stats {key} holds NaN or inf")
                if kind == "std":
                    value = np.maximum(value, STD_FLOOR)
                buf.copy_(torch.from_numpy(value).to(buf.dtype))
        self.fitted.fill_(True)

    def state(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.state_mean) / self.state_std

    def extras(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.extras_mean) / self.extras_std

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalize_tokens:
            return x
        return (x - self.token_mean) / self.token_std

    def action(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.action_mean) / self.action_std

    def unnormalize_action(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.action_std + self.action_mean
