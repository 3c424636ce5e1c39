"""The SAM2Grasp agent: frozen SAM2 tracker → F_t → ACT head → action, one camera frame at a time.

`SAM2GraspAgent.start(frame, box, state)` prompts the tracker with the target's box on the first frame and resets
the head; `act(frame, state)` tracks the target into the next frame and returns the next action (7,) in the head's
action mode (joint: 6 joint targets in radians + gripper opening in metres; ee: TCP x y z metres + axis-angle
radians + gripper opening). `AgentChunkPredictor` adapts the agent to the threaded runtime's `ChunkPredictor`
(`predict(frame, state) -> (K, 7)` joint targets). Physical units everywhere; the head normalises inside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from policy.act import ACTPolicy, PolicyInput
from policy.features import FeatureSpec, extract, parse_feature_spec
from policy.grasp_yaw import GraspYaw, GraspYawError, prompt_yaw_inputs, shape_code, yaw_values
from policy.place import PlaceError, normalised_box, prompt_target, with_place
from policy.tracker import SAM2Tracker, TrackStep
from robot.camera_view import CameraView

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
#: File written next to a trained policy (by `pipeline.train_policy`) naming the tracker its features came from.
TRACKER_INFO_FILE = "tracker.json"


class AgentError(ValueError):
    """The agent cannot act on this input, or its head produced an unusable action (NaN/inf, wrong shape)."""


def tracker_channels(tracker: SAM2Tracker) -> int:
    """Channels C of the tracker's pixel features and object pointer (SAM2's hidden_dim)."""
    return int(tracker.model.hidden_dim)


def _rgb(frame: Any) -> npt.NDArray[np.uint8]:
    """The (H, W, 3) uint8 image of a frame given as an array or as an object with `.rgb` (camera frame,
    simulator observation)."""
    rgb = frame if isinstance(frame, np.ndarray) else getattr(frame, "rgb", None)
    if rgb is None:
        raise AgentError(f"frame must be an (H, W, 3) uint8 array or carry one as .rgb, got {type(frame).__name__}")
    return rgb


def _state(state: npt.ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    s = np.asarray(state, dtype=np.float32)
    if s.shape != (dim,) or not np.all(np.isfinite(s)):
        raise AgentError(f"state must be {dim} finite numbers (joint angles rad + gripper m), got {s.tolist()}")
    return s


class SAM2GraspAgent:
    """A frozen SAM2 tracker, a feature spec and an ACT head trained on that spec's features of that tracker.

    coast_unseen: on a frame where the tracker does not see the target (object score at or below its threshold:
    occlusion, a black frame), `act` takes the next action from the chunks already predicted (`ACTPolicy.coast`)
    instead of asking the head about features it never saw in training; once no earlier chunk reaches the step,
    the head predicts as usual. Long losses are the perception watch's business.
    camera: the fixed camera's calibration, which a head trained with place values (`ACTConfig.place`) needs;
    given here or to `start` / `start_chunk`.
    """

    def __init__(
        self,
        tracker: SAM2Tracker,
        spec: FeatureSpec,
        head: ACTPolicy,
        coast_unseen: bool = True,
        camera: CameraView | None = None,
    ) -> None:
        cfg = head.config
        if cfg.feature_spec != spec.name:
            raise ValueError(
                f"the head was trained on feature spec {cfg.feature_spec!r}, but the agent extracts {spec.name!r}; "
                f"use --features {cfg.feature_spec} (or a head trained on {spec.name!r})"
            )
        channels = tracker_channels(tracker)
        if (cfg.n_tokens, cfg.token_dim) != (spec.num_tokens(), channels):
            raise ValueError(
                f"the head reads tokens of shape ({cfg.n_tokens}, {cfg.token_dim}), but this tracker gives "
                f"({spec.num_tokens()}, {channels}) under {spec.name!r}: the head was trained on another tracker "
                f"(compact trackers give {64} channels, official SAM2.1 256)"
            )
        self.tracker = tracker
        self.spec = spec
        self.head = head.eval()
        self.coast_unseen = coast_unseen
        self.camera = camera
        self.last_step: TrackStep | None = None
        #: the prompt box as fractions of the frame (x0, y0, x1, y1), for a head whose place values come from it
        self.prompt_box: npt.NDArray[np.float64] | None = None
        #: the target's table position (x, y metres) an action_frame="target" head's TCP positions are relative to
        self.anchor_xy: npt.NDArray[np.float64] | None = None
        #: actions taken from earlier chunks on unseen frames since the last `start`
        self.coasted = 0
        #: the prompt frame's grasp-yaw estimate, for a head that reads one (`ACTConfig.grasp_yaw`)
        self.grasp_yaw: GraspYaw | None = None
        #: The one-hot of the shape the command named (`policy.grasp_yaw.shape_code`), read by a shape_input head.
        self.shape_values = np.zeros(0, dtype=np.float32)

    @property
    def action_mode(self) -> str:
        """ "joint" or "ee" (what the 7 values of an action mean)."""
        return self.head.config.action_mode

    @property
    def chunk_size(self) -> int:
        return self.head.config.chunk_size

    @property
    def needs_camera(self) -> bool:
        """Whether the head reads place values, so that the camera's calibration must be given."""
        return self.head.config.place

    # ------------------------------------------------------------------ per-step actions
    def start(
        self,
        frame: Any,
        box: npt.ArrayLike,
        state: npt.ArrayLike,
        mask: npt.NDArray[np.bool_] | None = None,
        camera: CameraView | None = None,
        shape: str | None = None,
    ) -> tuple[F64, TrackStep]:
        """Prompt the tracker with `box` (pixels x0, y0, x1, y1) on `frame`, reset the head, and return the first
        action (7,) and the tracker's step. mask: the target's true mask, only for an oracle tracker; camera:
        this episode's camera calibration (kept for later steps); shape: the catalogue shape the command names
        ("cup"; None when it names none), read by a head whose grasp-yaw estimator is named and by a shape_input
        head."""
        step, s = self._prompt(frame, box, state, mask, camera, shape)
        return self._select(step, s), step

    def act(self, frame: Any, state: npt.ArrayLike, mask: npt.NDArray[np.bool_] | None = None) -> tuple[F64, TrackStep]:
        """Track the target into `frame` and return the next action (7,) and the tracker's step (mask: as `start`)."""
        s = _state(state, self.head.config.state_dim)
        step = self.tracker.step(_rgb(frame), mask)
        if self.coast_unseen and not step.visible:
            coasted = self.head.coast()
            if coasted is not None:
                self.last_step = step
                self.coasted += 1
                return self._placed(self._checked(coasted.detach().cpu().numpy(), (self.head.config.action_dim,))), step
        return self._select(step, s), step

    # ------------------------------------------------------------------ whole chunks (threaded runtime)
    def start_chunk(
        self,
        frame: Any,
        box: npt.ArrayLike,
        state: npt.ArrayLike,
        camera: CameraView | None = None,
        shape: str | None = None,
    ) -> tuple[F64, TrackStep]:
        """Prompt as `start` does and return the first predicted chunk (K, 7) in the head's action mode."""
        step, s = self._prompt(frame, box, state, None, camera, shape)
        return self._chunk(step, s), step

    def chunk(self, frame: Any, state: npt.ArrayLike) -> tuple[F64, TrackStep]:
        """Track into `frame` and return the predicted chunk (K, 7) in the head's action mode."""
        s = _state(state, self.head.config.state_dim)
        step = self.tracker.step(_rgb(frame))
        return self._chunk(step, s), step

    # ------------------------------------------------------------------ internals
    def _prompt(
        self,
        frame: Any,
        box: npt.ArrayLike,
        state: npt.ArrayLike,
        mask: Mask | None,
        camera: CameraView | None,
        shape: str | None = None,
    ) -> tuple[TrackStep, npt.NDArray[np.float32]]:
        """Check `state`, keep `camera` when given, prompt the tracker with `box` on `frame` and reset the head:
        the step and the state."""
        s = _state(state, self.head.config.state_dim)
        if camera is not None:
            self.camera = camera
        if self.needs_camera and self.camera is None:
            raise AgentError(
                "this head reads the target's base-frame position (trained with --place) and needs the camera's "
                "calibration: pass camera=CameraView(intrinsics, T_base_camera) to start"
            )
        rgb = _rgb(frame)
        if self.needs_camera and self.head.config.place_source == "prompt":
            try:
                self.prompt_box = normalised_box(box, rgb.shape[1], rgb.shape[0])
            except PlaceError as exc:
                raise AgentError(str(exc)) from None
        self.anchor_xy = None
        view = self._view(rgb.shape[1], rgb.shape[0])
        if self.head.config.action_frame == "target" and self.prompt_box is not None and view is not None:
            try:
                self.anchor_xy = prompt_target(self.prompt_box, view)
            except PlaceError as exc:
                raise AgentError(str(exc)) from None
        self.shape_values = np.zeros(0, dtype=np.float32)
        if shape is not None or self.head.config.shape_input:
            try:
                code = shape_code(shape)
            except GraspYawError as exc:
                raise AgentError(str(exc)) from None
            if self.head.config.shape_input:
                self.shape_values = code
        step = self.tracker.start(rgb, box, mask)
        self.grasp_yaw = self._estimate_grasp_yaw(step, view, shape, rgb, box)
        self.head.reset()
        self.coasted = 0
        return step, s

    def _input(self, step: TrackStep, state: npt.NDArray[np.float32]) -> PolicyInput:
        self.last_step = step
        feats = extract(step, self.spec)
        extras = feats.extras
        if self.needs_camera:
            h, w = step.mask.shape
            view = self._view(w, h)
            cfg = self.head.config
            try:
                prompt = self.prompt_box if cfg.place_source == "prompt" else None
                if cfg.place_source == "prompt" and prompt is None:
                    raise PlaceError("this head places the target by its prompt box; call start (or start_chunk) first")
                extras = with_place(extras[None], state[None], view, cfg.place_tcp_offset, prompt)[0]
            except PlaceError as exc:
                raise AgentError(str(exc)) from None
            if cfg.grasp_yaw:
                extras = np.concatenate([extras, yaw_values(self.grasp_yaw, state[None], cfg.place_tcp_offset)[0]])
        if self.head.config.shape_input:
            if len(self.shape_values) == 0:
                raise AgentError("this head reads the target's named shape; call start (or start_chunk) first")
            extras = np.concatenate([extras, self.shape_values])
        return PolicyInput.from_numpy(feats.tokens, extras, state)

    def _estimate_grasp_yaw(
        self,
        step: TrackStep,
        view: CameraView | None,
        shape: str | None,
        rgb: npt.NDArray[np.uint8],
        box: npt.ArrayLike,
    ) -> GraspYaw | None:
        """The head's estimator's grasp-yaw estimate on the prompt frame (its step, image `rgb` and prompt `box`)
        and the named `shape` (None for a head without one, or when the target's mask is empty there: the head
        then reads zeros, as it learned for such episodes)."""
        net = self.head.grasp_yaw
        if net is None or view is None:
            return None
        try:
            return net.estimate(prompt_yaw_inputs(net.config, extract(step, self.spec).extras, view, rgb, box), shape)
        except GraspYawError:
            return None

    def _view(self, width: int, height: int) -> CameraView | None:
        """The camera's calibration for frames of width x height pixels (None without one)."""
        view = self.camera
        if view is not None and (view.intrinsics.width, view.intrinsics.height) != (width, height):
            view = view.scaled(width, height)
        return view

    def _select(self, step: TrackStep, state: npt.NDArray[np.float32]) -> F64:
        action = self.head.select_action(self._input(step, state))
        return self._placed(self._checked(action.detach().cpu().numpy(), (self.head.config.action_dim,)))

    def _chunk(self, step: TrackStep, state: npt.NDArray[np.float32]) -> F64:
        chunk = self.head.predict_action_chunk(self._input(step, state))[0]
        cfg = self.head.config
        return self._placed(self._checked(chunk.detach().cpu().numpy(), (cfg.chunk_size, cfg.action_dim)))

    def _placed(self, actions: F64) -> F64:
        """Actions (..., 7) of a head predicting in the target's frame moved back into the base frame."""
        if self.head.config.action_frame != "target":
            return actions
        if self.anchor_xy is None:
            raise AgentError("this head predicts relative to the target's position; call start (or start_chunk) first")
        out = actions.copy()
        out[..., :2] += self.anchor_xy
        return out

    @staticmethod
    def _checked(values: npt.NDArray[Any], shape: tuple[int, ...]) -> F64:
        out = np.asarray(values, dtype=np.float64)
        if out.shape != shape:
            raise AgentError(f"the head returned shape {out.shape}, expected {shape}")
        if not np.all(np.isfinite(out)):
            raise AgentError(f"the head returned {int((~np.isfinite(out)).sum())} NaN/inf values of {out.size}")
        return out


def ee_to_joints(action: npt.ArrayLike, q_seed: npt.ArrayLike) -> tuple[F64, bool]:
    """Joint targets (7,: 6 radians + gripper metres) for an ee-mode action (TCP pose + gripper) by IK from
    `q_seed`; (q_seed + the gripper, False) when the pose is unreachable."""
    from robot.kinematics import IKError, solve_ik, vector_to_pose
    from robot.sim.mjcf import TCP_OFFSET

    a = np.asarray(action, dtype=np.float64)
    seed = np.asarray(q_seed, dtype=np.float64)[:6]
    try:
        q = solve_ik(vector_to_pose(a[:6]), seed, tcp_offset=TCP_OFFSET)
        ok = True
    except IKError:
        q, ok = seed, False
    return np.append(q, a[6]), ok


class AgentChunkPredictor:
    """`ChunkPredictor` over an agent for the threaded runtime: the first `predict` prompts the tracker with `box`
    on its frame, later calls track. Chunks are returned as joint targets (K, 7); an ee-mode head's poses are
    converted by IK chained from the observed joints (an unreachable pose repeats the previous targets).
    shape: the catalogue shape the command names (for a head with a named grasp-yaw estimator; None: none named)."""

    def __init__(
        self,
        agent: SAM2GraspAgent,
        box: npt.ArrayLike,
        camera: CameraView | None = None,
        shape: str | None = None,
    ) -> None:
        self.agent = agent
        self._box = np.asarray(box, dtype=np.float64)
        self._camera = camera
        self._shape = shape
        self._started = False
        self.ik_failures = 0

    def reprompt(self, box: npt.ArrayLike) -> None:
        """Prompt again with `box` at the next `predict` (a new target, or re-grounding after tracker loss)."""
        self._box = np.asarray(box, dtype=np.float64)
        self._started = False

    @property
    def last_step(self) -> TrackStep | None:
        """The tracker's last step (mask, box, score) for overlays."""
        return self.agent.last_step

    @property
    def coast_unseen(self) -> bool:
        """The agent's `coast_unseen`: the policy loop leaves out chunks from frames where the target was not seen
        while earlier chunks still cover the tick."""
        return self.agent.coast_unseen

    def predict(self, frame: Any, state: npt.NDArray[Any]) -> F64:
        """(K, 7) joint targets + gripper opening for the K ticks from this observation on."""
        if self._started:
            chunk, _ = self.agent.chunk(frame, state)
        else:
            chunk, _ = self.agent.start_chunk(frame, self._box, state, self._camera, self._shape)
            self._started = True
        if self.agent.action_mode != "ee":
            return chunk
        q = np.asarray(state, dtype=np.float64)[:6]
        out = np.empty_like(chunk)
        for i, a in enumerate(chunk):
            out[i], ok = ee_to_joints(a, q)
            self.ik_failures += int(not ok)
            q = out[i, :6]
        return out


def read_tracker_info(policy_dir: Path | str) -> dict[str, Any] | None:
    """The tracker record a training run stored next to the policy (cache key fields), or None."""
    path = Path(policy_dir) / TRACKER_INFO_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    return doc if isinstance(doc, dict) else None


def load_agent(
    policy_dir: Path | str,
    tracker_checkpoint: Path | str | None,
    tracker_name: str | None = None,
    image_size: int | None = None,
    *,
    allow_random_tracker: bool = False,
    check_tracker_weights: bool = True,
    device: str | torch.device = "cpu",
) -> SAM2GraspAgent:
    """The agent of a trained head (`policy_dir`, a policy checkpoint) and a tracker checkpoint.

    The feature spec comes from the head's config. When the training run recorded its tracker (`tracker.json`,
    written by `sam2grasp train`), the tracker name, image size and memory settings default to the recorded
    ones, and the checkpoint's weights must be the ones the features were cached with (sha256) unless
    `check_tracker_weights` is False. Without a record the tracker defaults to "compact" at its default size.
    tracker_checkpoint None builds a random tracker, refused unless `allow_random_tracker` (tests only).
    """
    from policy.cache import load_tracker, weights_sha256
    from policy.checkpoint import load_policy, read_checkpoint_info
    from policy.tracker import TrackerConfig, parse_crop

    config, _ = read_checkpoint_info(policy_dir)
    spec = parse_feature_spec(config.feature_spec)
    record = read_tracker_info(policy_dir) or {}
    for name, given in (("tracker", tracker_name), ("image_size", image_size)):
        if given is not None and name in record and record[name] != given:
            raise ValueError(
                f"{policy_dir} was trained on features of {name}={record[name]!r}, but {name}={given!r} was given"
            )
    name = tracker_name or str(record.get("tracker", "compact"))
    size = image_size if image_size is not None else record.get("image_size")
    tracker_cfg = TrackerConfig(
        memory_frames=int(record.get("memory_frames", TrackerConfig.memory_frames)),
        score_threshold=float(record.get("score_threshold", TrackerConfig.score_threshold)),
        dtype=str(record.get("dtype", TrackerConfig.dtype)),
        mask_source=str(record.get("mask_source", TrackerConfig.mask_source)),
        crop=parse_crop(str(record.get("crop", "full"))),
    )
    tracker = load_tracker(
        name,
        image_size=None if size is None else int(size),
        checkpoint=None if tracker_checkpoint is None else Path(tracker_checkpoint),
        allow_random=allow_random_tracker,
        config=tracker_cfg,
        device=device,
    )
    want = record.get("weights_sha256")
    if check_tracker_weights and want and weights_sha256(tracker.model) != want:
        raise ValueError(
            f"tracker checkpoint {tracker_checkpoint} holds other weights than the tracker {policy_dir} was trained "
            f"on (sha256 {str(want)[:12]}...): its features would not be the ones the head learned from"
        )
    head = load_policy(policy_dir, expect_feature_spec=spec.name, device=device)
    return SAM2GraspAgent(tracker, spec, head)
