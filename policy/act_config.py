"""Configuration of the ACT head: a frozen dataclass, validated on construction, stored as JSON in checkpoints.

The head reads F_t tokens (n, C) of one feature spec plus `extras` and proprioception, and predicts a chunk of
`chunk_size` future actions in one action mode ("joint": 6 joint targets + gripper opening; "ee": TCP x y z +
axis-angle + gripper opening). A checkpoint is only valid for the spec and mode it was trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from policy.features import parse_feature_spec
from policy.grasp_yaw import MASK_SOURCES, SHAPE_NAMES, YAW_DIM
from policy.place import PLACE_DIM, PLACE_SOURCES
from robot.sim.mjcf import TCP_OFFSET

#: Action modes and what their 7 values are.
ACTION_MODES: tuple[str, ...] = ("joint", "ee")
#: Frames an ee-mode head's TCP x, y are predicted in: the robot's base, or the target's position on the table.
ACTION_FRAMES: tuple[str, ...] = ("base", "target")


def head_extras_dim(spec_extras: int, *, place: bool, grasp_yaw: bool, shape_input: bool) -> int:
    """Extras per frame of a head: the feature spec's `spec_extras`, then the place values, the grasp-yaw values
    and the shape one-hot of the options that are on."""
    return (
        spec_extras
        + (PLACE_DIM if place else 0)
        + (YAW_DIM if grasp_yaw else 0)
        + (len(SHAPE_NAMES) if shape_input else 0)
    )


@dataclass(frozen=True)
class ACTConfig:
    """Sizes and options of the ACT head.

    feature_spec: the F_t spec name ("pooled4", "masked", "pointer", "pooled4+shape", ...); `n_tokens` and
        `extras_dim` must match it.
    token_dim: channels C of each token (64 for the compact tracker, 256 for official SAM2).
    chunk_size: K, actions predicted per call.
    n_action_steps: actions `select_action` takes from each chunk before predicting the next one
        (None: all K). Ignored with temporal ensembling, which predicts a new chunk every call.
    n_decoder_layers: decoder depth; every layer is used (LeRobot's original ACT built N and ran 1).
    use_vae: train with the CVAE encoder over [CLS, state, action chunk]; inference uses a zero latent.
    temporal_ensemble_coeff: m in the weights exp(-m * i), i = 0 for the oldest prediction of a step;
        None: no ensembling in `select_action` (action queue).
    normalize_tokens: normalise tokens per channel with training statistics (state, extras and actions are
        always normalised).
    place: the extras end with the target's base-frame position from the camera's calibration
        (`policy.place`, PLACE_DIM more values): the agent then needs a `CameraView`.
    place_tcp_offset: metres from the flange to the TCP along the flange z axis, for those values (default: the
        simulated cell's gripper, whose demonstrations the shipped heads learn from).
    place_source: where those values take the target's image position from: "tracked" (every frame's tracked
        box) or "prompt" (the box the tracker was prompted with, for the whole pick); see `policy.place`.
    action_frame: "base" (actions as the action mode says) or "target": an ee-mode head predicts the TCP's x and
        y relative to the target's table position that the prompt box places (metres; needs action_mode "ee",
        place and place_source "prompt"), so that where the arm goes follows the target by construction and the
        head learns only the offsets of approach, grasp and lift. The agent adds the position back.
    grasp_yaw: the extras end (after the place values) with the target's grasp axis estimated on the prompt frame
        and the wrist turn left to reach it (`policy.grasp_yaw.yaw_values`, YAW_DIM more values); the policy then
        holds the estimator's weights (`ACTPolicy.grasp_yaw`). Needs place (the estimator reads the target's table
        position) and a "+shape" feature spec (it reads the mask's orientation moments).
    grasp_yaw_named: the grasp_yaw estimator also reads the target's catalogue shape as the command names it
        (`policy.grasp_yaw.GraspYawConfig.named`); the agent is then given the shape at start (the name's shape,
        or none). Heads saved before this option read the mask alone (False).
    grasp_yaw_mask: where the grasp_yaw estimator's orientation moments come from, one of
        `policy.grasp_yaw.MASK_SOURCES`: "tracked" (the tracker's prompt-frame mask; heads saved before this option)
        or "refined" (the full-resolution mask segmented from the prompt box, `policy.prompt_mask`).
    shape_input: the extras end (after the place and grasp-yaw values) with the target's catalogue shape as the
        command names it, a one-hot over `policy.grasp_yaw.SHAPE_NAMES` (`shape_code`; zeros when the command names
        none), constant over a pick: which object is meant says how tall it is and so how low to close. The agent
        is then given the shape at start. Heads saved before this option read no shape (False).
    wrist_anchor: a joint-mode grasp_yaw head predicts wrist_3 relative to where the estimated grasp axis puts it:
        the state's wrist_3 less the expected turn left (`policy.grasp_yaw.expected_turn`; turning the wrist of a
        downward tool by +d turns its yaw by -d), so that a head predicting zero offsets turns the wrist by the
        estimate and learns only the corrections (the base's turn, the estimate's error). `ACTPolicy` adds the
        anchor back to every predicted chunk.
    """

    feature_spec: str
    token_dim: int
    n_tokens: int
    extras_dim: int = 7
    state_dim: int = 7
    action_dim: int = 7
    action_mode: str = "joint"
    chunk_size: int = 20
    n_action_steps: int | None = None
    dim_model: int = 256
    n_heads: int = 8
    dim_feedforward: int = 1024
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    dropout: float = 0.1
    use_vae: bool = False
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    kl_weight: float = 10.0
    temporal_ensemble_coeff: float | None = None
    normalize_tokens: bool = True
    place: bool = False
    place_tcp_offset: float = TCP_OFFSET
    place_source: str = "tracked"
    action_frame: str = "base"
    grasp_yaw: bool = False
    wrist_anchor: bool = False
    grasp_yaw_named: bool = False
    grasp_yaw_mask: str = "tracked"
    shape_input: bool = False

    def __post_init__(self) -> None:
        try:
            spec = parse_feature_spec(self.feature_spec)
        except ValueError as e:
            raise ValueError(f"ACTConfig.feature_spec: {e}") from None
        if self.n_tokens != spec.num_tokens():
            raise ValueError(
                f"ACTConfig.n_tokens={self.n_tokens} does not match feature spec {self.feature_spec!r}, "
                f"which gives {spec.num_tokens()} tokens per frame"
            )
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"ACTConfig.action_mode={self.action_mode!r}; valid: {', '.join(ACTION_MODES)}")
        positive = (
            "token_dim",
            "n_tokens",
            "extras_dim",
            "state_dim",
            "action_dim",
            "chunk_size",
            "dim_model",
            "n_heads",
            "dim_feedforward",
            "n_encoder_layers",
            "n_decoder_layers",
            "latent_dim",
            "n_vae_encoder_layers",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ACTConfig.{name} must be an integer >= 1, got {value!r}")
        flags = ("use_vae", "normalize_tokens", "place", "grasp_yaw", "wrist_anchor", "grasp_yaw_named", "shape_input")
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ACTConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.grasp_yaw and (not self.place or not spec.shape):
            raise ValueError(
                f"ACTConfig.grasp_yaw needs place=True and a '+shape' feature spec (got place={self.place}, "
                f"{self.feature_spec!r}): the estimator reads the target's table position and the mask's moments"
            )
        if self.grasp_yaw_mask not in MASK_SOURCES:
            raise ValueError(f"ACTConfig.grasp_yaw_mask must be one of {MASK_SOURCES}, got {self.grasp_yaw_mask!r}")
        if self.grasp_yaw_mask != "tracked" and not self.grasp_yaw:
            raise ValueError(
                "ACTConfig.grasp_yaw_mask needs grasp_yaw=True: it is an option of the grasp-yaw estimator"
            )
        if self.grasp_yaw_named and not self.grasp_yaw:
            raise ValueError(
                "ACTConfig.grasp_yaw_named needs grasp_yaw=True: it is an option of the grasp-yaw estimator"
            )
        if self.wrist_anchor and (not self.grasp_yaw or self.action_mode != "joint"):
            raise ValueError(
                f"ACTConfig.wrist_anchor needs grasp_yaw=True and action_mode='joint' (got {self.grasp_yaw}, "
                f"{self.action_mode!r}): the anchor is a wrist_3 angle from the estimated turn"
            )
        expected = head_extras_dim(
            spec.extras_dim, place=self.place, grasp_yaw=self.grasp_yaw, shape_input=self.shape_input
        )
        if self.extras_dim != expected:
            with_place = f" plus {PLACE_DIM} place values" if self.place else ""
            with_place += f" plus {YAW_DIM} grasp-yaw values" if self.grasp_yaw else ""
            with_place += f" plus {len(SHAPE_NAMES)} shape values" if self.shape_input else ""
            raise ValueError(
                f"ACTConfig.extras_dim={self.extras_dim} does not match feature spec {self.feature_spec!r}"
                f"{with_place}, which gives {expected} extras per frame"
            )
        if self.place_source not in PLACE_SOURCES:
            raise ValueError(f"ACTConfig.place_source={self.place_source!r}; valid: {', '.join(PLACE_SOURCES)}")
        if self.action_frame not in ACTION_FRAMES:
            raise ValueError(f"ACTConfig.action_frame={self.action_frame!r}; valid: {', '.join(ACTION_FRAMES)}")
        if self.action_frame == "target" and (
            self.action_mode != "ee" or not self.place or self.place_source != "prompt"
        ):
            raise ValueError(
                "ACTConfig.action_frame='target' needs action_mode='ee', place=True and place_source='prompt' "
                f"(got {self.action_mode!r}, {self.place}, {self.place_source!r}): the target's position comes from "
                "the prompt box and only TCP positions can be moved by it"
            )
        off = self.place_tcp_offset
        if isinstance(off, bool) or not (isinstance(off, float | int) and 0.0 <= off <= 0.5):
            raise ValueError(f"ACTConfig.place_tcp_offset must be metres within [0, 0.5], got {off!r}")
        if self.dim_model % self.n_heads:
            raise ValueError(
                f"ACTConfig.dim_model={self.dim_model} must be divisible by n_heads={self.n_heads}; "
                f"valid n_heads: {[h for h in range(1, self.dim_model + 1) if self.dim_model % h == 0]}"
            )
        if self.n_action_steps is not None and not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(
                f"ACTConfig.n_action_steps={self.n_action_steps} must be None or within 1..chunk_size "
                f"({self.chunk_size})"
            )
        if not (isinstance(self.dropout, float | int) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"ACTConfig.dropout must be within [0, 1), got {self.dropout!r}")
        if not (isinstance(self.kl_weight, float | int) and math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"ACTConfig.kl_weight must be a finite number >= 0, got {self.kl_weight!r}")
        m = self.temporal_ensemble_coeff
        if m is not None and not (isinstance(m, float | int) and not isinstance(m, bool) and math.isfinite(m)):
            raise ValueError(f"ACTConfig.temporal_ensemble_coeff must be None or a finite number, got {m!r}")

    @property
    def state_extras_from(self) -> int | None:
        """Index of the first extras column computed from the arm's state and the prompt (the place values, then
        the grasp-yaw values and the shape, constant over a pick): a lagged training sample takes these from its
        lagged frame (`policy.state_lag`); None without place values."""
        return parse_feature_spec(self.feature_spec).extras_dim if self.place else None

    @property
    def yaw_columns(self) -> slice:
        """Where a grasp_yaw head's grasp-yaw values (`policy.grasp_yaw.YAW_VALUE_NAMES`) lie in its extras: just
        before the shape one-hot of a shape_input head, else at the end."""
        end = self.extras_dim - (len(SHAPE_NAMES) if self.shape_input else 0)
        return slice(end - YAW_DIM, end)

    @property
    def action_steps(self) -> int:
        """Actions taken from each chunk by `select_action` without ensembling."""
        return self.chunk_size if self.n_action_steps is None else self.n_action_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ACTConfig:
        """A config from its dict; unknown or missing keys are errors naming the valid ones."""
        if not isinstance(data, dict):
            raise ValueError(f"ACTConfig must be a JSON object, got {type(data).__name__}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown ACTConfig keys {unknown}; valid keys: {sorted(valid)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"ACTConfig: {e}; required keys: feature_spec, token_dim, n_tokens") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ACTConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ACTConfig JSON is not valid JSON: {e}") from None
        return cls.from_dict(data)
