"""An image baseline as an agent of the closed-loop evaluation: camera frame (+ tracked box) -> action.

`ImageACTAgent` has the interface `pipeline.evaluate` drives (`start(frame, box, state, mask)`, `act(frame,
state, mask)`, `action_mode`, `tracker`), so that the baselines run the same protocol, seeds and safety layer as
SAM2Grasp. `act` and `act-cvae` read the frame alone: the prompt box is not used (they have no notion of which
object is meant, which is the multi-modality the paper shows). `act-cvae-condition` prompts the SAM2 tracker with
the first frame's box and draws the tracker's box (its mask's box; nothing when the mask is empty) on every
frame, the first included. Units: frames (H, W, 3) uint8, boxes pixels x0, y0, x1, y1, state and actions physical
(radians, metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from policy.agent import AgentError, _rgb, _state
from policy.frame_prep import prepare_frame
from policy.image_act import ImageACTPolicy
from policy.tracker import SAM2Tracker, TrackStep

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FrameStep:
    """What a baseline without a tracker saw at one step: no mask, no box and no notion of the target, so
    `visible` is False (evaluation reports its perception as "none")."""

    index: int
    box: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(4, dtype=np.float32))
    mask: npt.NDArray[np.bool_] | None = None
    visible: bool = False


class ImageACTAgent:
    """An image baseline and, for the condition variant, the tracker whose box it draws on every frame."""

    def __init__(self, policy: ImageACTPolicy, tracker: SAM2Tracker | None = None) -> None:
        cfg = policy.config
        if cfg.draws_box and tracker is None:
            raise ValueError(f"policy {cfg.policy!r} draws the tracked box on every frame: it needs a tracker")
        self.policy = policy.eval()
        self.tracker = tracker if cfg.draws_box else None
        self.last_step: TrackStep | FrameStep | None = None
        self._index = 0

    @property
    def policy_type(self) -> str:
        """ "act", "act-cvae" or "act-cvae-condition"."""
        return self.policy.config.policy

    @property
    def input_name(self) -> str:
        """What the policy reads ("rgb128x96", "rgb128x96+box")."""
        return self.policy.config.input_name

    @property
    def action_mode(self) -> str:
        """ "joint" or "ee" (what the 7 values of an action mean)."""
        return self.policy.config.head.action_mode

    @property
    def chunk_size(self) -> int:
        return self.policy.config.head.chunk_size

    def start(
        self, frame: Any, box: npt.ArrayLike, state: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None
    ) -> tuple[F64, TrackStep | FrameStep]:
        """Reset the policy (and prompt the tracker with `box` on `frame`, condition variant only) and return the
        first action (7,) and the step. mask: the target's true mask, only for an oracle tracker."""
        s = self._begin(frame, box, state, mask)
        return self._select(frame, s), self._last()

    def act(
        self, frame: Any, state: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None
    ) -> tuple[F64, TrackStep | FrameStep]:
        """The next action (7,) for `frame` (tracked first, condition variant) and the step."""
        s = _state(state, self.policy.config.head.state_dim)
        self._observe(frame, mask)
        return self._select(frame, s), self._last()

    def start_chunk(self, frame: Any, box: npt.ArrayLike, state: npt.ArrayLike) -> tuple[F64, TrackStep | FrameStep]:
        """As `start`, returning the first predicted chunk (K, 7)."""
        s = self._begin(frame, box, state, None)
        return self._chunk(frame, s), self._last()

    def chunk(self, frame: Any, state: npt.ArrayLike) -> tuple[F64, TrackStep | FrameStep]:
        """As `act`, returning the predicted chunk (K, 7)."""
        s = _state(state, self.policy.config.head.state_dim)
        self._observe(frame, None)
        return self._chunk(frame, s), self._last()

    # ------------------------------------------------------------------ internals
    def _begin(
        self, frame: Any, box: npt.ArrayLike, state: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None
    ) -> npt.NDArray[np.float32]:
        s = _state(state, self.policy.config.head.state_dim)
        self.policy.reset()
        self._index = 0
        if self.tracker is not None:
            self.last_step = self.tracker.start(_rgb(frame), box, mask)
        else:
            self.last_step = FrameStep(0)
        return s

    def _observe(self, frame: Any, mask: npt.NDArray[np.bool_] | None) -> None:
        if self.last_step is None:
            raise AgentError("call start(frame, box, state) before act: the episode has not begun")
        self._index += 1
        if self.tracker is not None:
            self.last_step = self.tracker.step(_rgb(frame), mask)
        else:
            self.last_step = FrameStep(self._index)

    def _last(self) -> TrackStep | FrameStep:
        if self.last_step is None:
            raise AgentError("no step yet: call start first")
        return self.last_step

    def _frames(self, frame: Any) -> torch.Tensor:
        box = self._last().box if self.tracker is not None else None
        try:
            image = prepare_frame(_rgb(frame), box, self.policy.config)
        except ValueError as e:
            raise AgentError(str(e)) from None
        return torch.from_numpy(image)[None]

    def _observation(self, frame: Any, state: npt.NDArray[np.float32]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._frames(frame), torch.from_numpy(state)[None]

    def _select(self, frame: Any, state: npt.NDArray[np.float32]) -> F64:
        action = self.policy.select_action(*self._observation(frame, state))
        return self._checked(action.cpu().numpy(), (self.policy.config.head.action_dim,))

    def _chunk(self, frame: Any, state: npt.NDArray[np.float32]) -> F64:
        chunk = self.policy.predict_action_chunk(*self._observation(frame, state))[0]
        head = self.policy.config.head
        return self._checked(chunk.cpu().numpy(), (head.chunk_size, head.action_dim))

    @staticmethod
    def _checked(values: npt.NDArray[Any], shape: tuple[int, ...]) -> F64:
        out = np.asarray(values, dtype=np.float64)
        if out.shape != shape:
            raise AgentError(f"the policy returned shape {out.shape}, expected {shape}")
        if not np.all(np.isfinite(out)):
            raise AgentError(f"the policy returned {int((~np.isfinite(out)).sum())} NaN/inf values of {out.size}")
        return out


def _checkpoint_metadata(checkpoint: Path | str | None) -> dict[str, str]:
    """The tracker name and image size a project .safetensors checkpoint records ({} when none; an unreadable file
    is reported by the loader)."""
    if checkpoint is None or Path(checkpoint).suffix != ".safetensors" or not Path(checkpoint).is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}
    return {k: str(v) for k, v in meta.items() if k in ("tracker", "image_size")}


def load_image_agent(
    policy_dir: Path | str,
    tracker_checkpoint: Path | str | None = None,
    tracker_name: str | None = None,
    image_size: int | None = None,
    *,
    allow_random_tracker: bool = False,
    device: str | torch.device = "cpu",
) -> ImageACTAgent:
    """The agent of a trained baseline (`policy_dir`, an image-baseline checkpoint).

    The condition variant also loads the tracker whose box it draws: `tracker_name` at `image_size` (defaults:
    those recorded in a project .safetensors checkpoint, else "compact" at its default size) from
    `tracker_checkpoint` (None: a random tracker, refused unless `allow_random_tracker`: tests only). The other
    baselines take no tracker; tracker arguments are ignored.
    """
    from policy.cache import load_tracker
    from policy.image_checkpoint import load_image_policy

    policy = load_image_policy(policy_dir, device=device)
    if not policy.config.draws_box:
        return ImageACTAgent(policy)
    if tracker_checkpoint is None and not allow_random_tracker:
        raise ValueError(
            f"{policy_dir} is an {policy.config.policy!r} baseline: it draws the SAM2 tracker's box on every frame; "
            "give the tracker's weights (--tracker-checkpoint PATH)"
        )
    recorded = _checkpoint_metadata(tracker_checkpoint)
    size = image_size if image_size is not None else recorded.get("image_size")
    tracker = load_tracker(
        tracker_name or recorded.get("tracker", "compact"),
        image_size=None if size is None else int(size),
        checkpoint=None if tracker_checkpoint is None else Path(tracker_checkpoint),
        allow_random=allow_random_tracker,
        device=device,
    )
    return ImageACTAgent(policy, tracker)
