"""The image-based ACT baselines: a vision backbone trained from scratch + policy/act.py's ACT transformer.

`ImageACTPolicy` = the config's backbone (`ConvEncoder` or `ResNet18Encoder`: frames -> one token per feature-map
cell) + `ACTPolicy` (configured by the config's `TokenMapACTConfig`): the transformer, its optional CVAE, the L1
(+ KL) loss, the normaliser of state and actions and `select_action`'s queue / temporal ensembling are all
policy/act.py's. The extras slot of the transformer holds one constant zero. Frames are uint8 (B, h, w, 3) at
the config's image size, already prepared by `policy.frame_prep.prepare_frame` (box drawn for the condition
variant); state (B, 7) and actions in physical units (radians, metres).
"""

from __future__ import annotations

import torch
from torch import nn

from policy.act import ACTPolicy, LossInfo, PolicyInput, PolicyTarget
from policy.image_act_config import ImageACTConfig
from policy.image_encoder import ConvEncoder
from policy.normalize import Normalizer
from policy.resnet_encoder import ResNet18Encoder


def build_backbone(config: ImageACTConfig) -> ConvEncoder | ResNet18Encoder:
    """The vision backbone `config.backbone` names, freshly initialised."""
    if config.backbone == "resnet18":
        return ResNet18Encoder()
    return ConvEncoder(config.channels)


class ImageACTPolicy(nn.Module):
    """Vision backbone + ACT transformer; call `eval()` before inference and `reset()` at every episode start."""

    def __init__(self, config: ImageACTConfig) -> None:
        super().__init__()
        if not isinstance(config, ImageACTConfig):
            raise ValueError(f"ImageACTPolicy needs an ImageACTConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = build_backbone(config)
        self.head = ACTPolicy(config.head)

    @property
    def normalizer(self) -> Normalizer:
        """State and action statistics (buffers saved with the weights)."""
        return self.head.normalizer

    def reset(self) -> None:
        """Forget queued actions and past chunks."""
        self.head.reset()

    def _device(self) -> torch.device:
        return self.head.model.action_head.weight.device

    def validate_frames(self, frames: object) -> torch.Tensor:
        """`frames` as a uint8 tensor (B, h, w, 3) on the policy's device; ValueError naming what is valid."""
        w, h = self.config.image_size
        valid = f"a uint8 tensor (B, {h}, {w}, 3): RGB frames at the policy's image size {w}x{h}"
        if not isinstance(frames, torch.Tensor):
            raise ValueError(f"frames must be {valid}, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"frames have dtype {frames.dtype}; valid: {valid}")
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (h, w, 3) or frames.shape[0] < 1:
            raise ValueError(f"frames have shape {tuple(frames.shape)}; valid: {valid}")
        return frames.to(self._device())

    def policy_input(self, frames: torch.Tensor, state: torch.Tensor) -> PolicyInput:
        """The transformer's input: one token per backbone map cell, a zero extras value, the state."""
        tokens = self.encoder.tokens(self.validate_frames(frames))
        extras = torch.zeros(tokens.shape[0], 1, device=tokens.device)
        return PolicyInput(tokens=tokens, extras=extras, state=state)

    def forward(self, frames: torch.Tensor, state: torch.Tensor, target: PolicyTarget) -> tuple[torch.Tensor, LossInfo]:
        """Training loss: masked L1 in normalised action units, + kl_weight * KL for the CVAE variants."""
        loss: tuple[torch.Tensor, LossInfo] = self.head(self.policy_input(frames, state), target)
        return loss

    def normalized_chunk(self, frames: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Action chunks (B, K, A) in normalised units with a zero latent, no gradients (validation)."""
        with torch.no_grad():
            inp = self.head.validate_input(self.policy_input(frames, state))
            norm = self.normalizer
            latent = torch.zeros(inp.tokens.shape[0], self.config.head.latent_dim, device=inp.tokens.device)
            out: torch.Tensor = self.head.model(inp.tokens, norm.extras(inp.extras), norm.state(inp.state), latent)
            return out

    def predict_action_chunk(self, frames: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Action chunks (B, K, A) in physical units (zero latent); gradients are not tracked."""
        with torch.no_grad():
            return self.head.predict_action_chunk(self.policy_input(frames, state))

    def select_action(self, frames: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The next action (A,) for one observation (a batch of one), as `ACTPolicy.select_action`."""
        with torch.no_grad():
            return self.head.select_action(self.policy_input(frames, state))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
