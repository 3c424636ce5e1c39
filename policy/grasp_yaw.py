"""The target's grasp axis on the table, read from the prompt frame's mask, in a form a head can follow.

A demonstration's grasp turns the tool to the target's grasp axis — among the axis's symmetric equivalents (a box
or a cup every half turn, a cube every quarter turn, a ball or a can at any yaw) the one nearest the tool's yaw
(`robot.sim.expert.nearest_axis_yaw`). As a wrist target that angle jumps by a whole period where the object's yaw
crosses the midpoint between two equivalent grasps, and a head that regresses it from features blurs the jump into
no turn at all (`models/sam2grasp_head.md`). Read as a point on a circle instead — (cos nφ, sin nφ) for symmetry
order n — the axis φ is a smooth function of the mask's orientation moments (`policy.features.shape_moments`), its
box and the target's table position.

`GraspYawNet` maps those 11 inputs (`yaw_inputs`) to the class of the symmetry order (`ORDERS`: 0 any yaw, 2 half
turn, 4 quarter turn) and to the axis as (cos 2φ, sin 2φ, cos 4φ, sin 4φ); `GraspYaw.axis` decodes the axis of an
order, and `turn_to_go` gives the signed turn (radians) from a tool yaw to the nearest equivalent of an axis.

A named estimator (`GraspYawConfig.named`) also reads the target's catalogue shape as the command names it ("pick
the red cup": cup) as a one-hot over `SHAPE_NAMES` (`shape_code`); all zeros where the command names no shape ("the
red object"). The mask alone leaves a box seen end-on, a cube and a can close to one another at the tracker's mask
resolution; the name settles the symmetry order, and the moments are then read for the axis of a known shape.
Training hides the name of a share of the samples (`fit_grasp_yaw`'s name_dropout) so that an unnamed prompt still
gets the mask-only estimate. A "refined" estimator (`GraspYawConfig.mask`) reads the moments of a full-resolution
mask segmented from the prompt box on the prompt frame (`policy.prompt_mask`) instead of the tracker's coarse one
(`prompt_yaw_inputs`).

A head trained with `ACTConfig.grasp_yaw` reads one estimate per pick, made on the prompt frame, as `YAW_DIM`
extras per frame (`yaw_values`): the three order probabilities, and the turns from the tool's current yaw (by
forward kinematics of the arm's state) to the nearest equivalent of the estimated axis under a half-turn and a
quarter-turn symmetry. The turns follow the arm as it turns, so the head is told at every frame how much turn is
left rather than having to infer it from its features. Without an estimate (the target hidden on the prompt
frame) all five are 0.
Angles are radians about the base frame's z axis; positions metres in the base frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from robot.camera_view import CameraView
from robot.sim.catalogue import Shape, UnknownObjectError, parse_shape

#: Symmetry orders a grasp axis can have: 0 (any yaw grasps: ball, can), 2 (every half turn), 4 (every quarter turn).
ORDERS: tuple[int, ...] = (0, 2, 4)
#: The estimator's inputs, in order: the mask's orientation moments, its box and area as fractions of the frame,
#: and the base-frame table position (metres) the box's centre places (`policy.place.prompt_target`).
YAW_INPUT_NAMES: tuple[str, ...] = (
    "m2_re", "m2_im", "m4_re", "m4_im", "box_x0", "box_y0", "box_x1", "box_y1", "area", "table_x", "table_y",
)  # fmt: skip
#: Catalogue shapes a named estimator reads as a one-hot input (`shape_code`), in order.
SHAPE_NAMES: tuple[str, ...] = tuple(sorted(s.value for s in Shape))
#: Where an estimator's orientation moments come from (`GraspYawConfig.mask`).
MASK_SOURCES: tuple[str, ...] = ("tracked", "refined")
#: Extras columns (`policy.features.extract` with a "+shape" spec) of the box, the area and the moments.
_BOX, _AREA, _MOMENTS = slice(2, 6), 6, slice(7, 11)
_FORMAT = "sam2grasp-grasp-yaw"
#: Values `yaw_values` adds to each frame's extras, in order (probabilities, then turns in radians).
YAW_VALUE_NAMES: tuple[str, ...] = ("p_any_yaw", "p_half_turn", "p_quarter_turn", "turn_half", "turn_quarter")
YAW_DIM = len(YAW_VALUE_NAMES)


class GraspYawError(ValueError):
    """Inputs, labels or a weights file the grasp-yaw estimator cannot use."""


@dataclass(frozen=True)
class GraspYawConfig:
    """hidden: units per hidden layer (>= 8); layers: hidden layers (1..4); named: the inputs end with the target's
    shape as named by the command (`shape_code`, len(SHAPE_NAMES) more inputs); mask: where the orientation moments
    come from, one of `MASK_SOURCES` ("tracked": the tracker's prompt-frame mask, as cached; "refined": the
    full-resolution mask segmented from the prompt box, `policy.prompt_mask`)."""

    hidden: int = 128
    layers: int = 2
    named: bool = False
    mask: str = "tracked"

    def __post_init__(self) -> None:
        if not 8 <= self.hidden <= 4096:
            raise GraspYawError(f"hidden must be within 8..4096 units, got {self.hidden}")
        if not 1 <= self.layers <= 4:
            raise GraspYawError(f"layers must be within 1..4, got {self.layers}")
        if not isinstance(self.named, bool):
            raise GraspYawError(f"named must be true or false, got {self.named!r}")
        if self.mask not in MASK_SOURCES:
            raise GraspYawError(f"mask must be one of {MASK_SOURCES}, got {self.mask!r}")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the network's inputs, in order."""
        return YAW_INPUT_NAMES + (tuple(f"shape_{n}" for n in SHAPE_NAMES) if self.named else ())


def shape_code(shape: str | None) -> npt.NDArray[np.float32]:
    """(len(SHAPE_NAMES),) one-hot of a catalogue shape named by the command; zeros for None (no shape named); a
    GraspYawError naming the valid shapes for another word."""
    out = np.zeros(len(SHAPE_NAMES), dtype=np.float32)
    if shape is None:
        return out
    try:
        out[SHAPE_NAMES.index(parse_shape(shape).value)] = 1.0
    except UnknownObjectError as exc:
        raise GraspYawError(str(exc)) from None
    return out


def named_shape(phrase: str) -> str | None:
    """The catalogue shape a target phrase names ("red cup" -> "cup"; "red object" -> None); None also when the
    phrase names two shapes."""
    found = {w for w in phrase.lower().split() if w in SHAPE_NAMES}
    return found.pop() if len(found) == 1 else None


def yaw_inputs(
    extras: npt.ArrayLike, view: CameraView, moments: npt.ArrayLike | None = None
) -> npt.NDArray[np.float32]:
    """(11,) estimator inputs from one frame's extras (a "+shape" spec: at least 11 values) and its camera, with
    `moments` (4,) in place of the extras' own when given; a GraspYawError when the extras hold no shape moments,
    the mask is empty or its ray misses the table."""
    from policy.place import PlaceError, prompt_target

    ex = np.asarray(extras, dtype=np.float64)
    if ex.ndim != 1 or ex.shape[0] < _MOMENTS.stop:
        raise GraspYawError(
            f"extras must hold the mask's shape moments (a '+shape' feature spec, >= {_MOMENTS.stop} values), "
            f"got shape {ex.shape}"
        )
    if moments is not None:
        ex = ex.copy()
        ex[_MOMENTS] = np.asarray(moments, dtype=np.float64).reshape(4)
    if not ex[_AREA] > 0.0:
        raise GraspYawError("the mask is empty on this frame: no grasp axis can be read from it")
    try:
        xy = prompt_target(ex[_BOX], view)
    except PlaceError as exc:
        raise GraspYawError(f"the mask's box does not place the target on the table: {exc}") from exc
    return np.concatenate([ex[_MOMENTS], ex[_BOX], ex[_AREA : _AREA + 1], xy]).astype(np.float32)


def prompt_yaw_inputs(
    config: GraspYawConfig,
    extras: npt.ArrayLike,
    view: CameraView,
    rgb: npt.NDArray[np.uint8],
    box: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """(11,) inputs of an estimator of `config` on a prompt frame: its tracked extras, camera, image `rgb` (H, W, 3)
    and prompt `box` (pixels x0, y0, x1, y1 of that image). A "refined" estimator reads the moments of the mask
    `policy.prompt_mask.refine_prompt_mask` segments from the box, or the tracked ones where it keeps fewer than
    2 pixels; errors as `yaw_inputs`, and for a box or image the segmentation cannot use."""
    from policy.features import shape_moments
    from policy.prompt_mask import PromptMaskError, refine_prompt_mask

    moments = None
    if config.mask == "refined":
        try:
            mask = refine_prompt_mask(rgb, box)
        except PromptMaskError as exc:
            raise GraspYawError(str(exc)) from None
        if mask.sum() >= 2:
            moments = shape_moments(mask)
    return yaw_inputs(extras, view, moments)


def embed_axis(order: int, axis: float) -> npt.NDArray[np.float32]:
    """The regression target of an axis of symmetry `order`: (cos 2φ, sin 2φ, cos 4φ, sin 4φ) with only the
    order's own pair set (order 2: the second-order pair; order 4: the fourth-order one, since a quarter-turn
    symmetry leaves 2φ undefined; order 0: neither) and zeros elsewhere."""
    if order not in ORDERS:
        raise GraspYawError(f"symmetry order must be one of {ORDERS}, got {order}")
    out = np.zeros(4, dtype=np.float32)
    if order == 2:
        out[0:2] = (math.cos(2 * axis), math.sin(2 * axis))
    elif order == 4:
        out[2:4] = (math.cos(4 * axis), math.sin(4 * axis))
    return out


def turn_to_go(axis: float, order: int, tool_yaw: float) -> float:
    """Signed turn (radians) from `tool_yaw` to the nearest equivalent of `axis` under symmetry `order`, within
    [-π/order, π/order); 0 for order 0 (any yaw grasps)."""
    if order not in ORDERS:
        raise GraspYawError(f"symmetry order must be one of {ORDERS}, got {order}")
    if order == 0:
        return 0.0
    period = 2 * math.pi / order
    return (axis - tool_yaw + period / 2) % period - period / 2


@dataclass(frozen=True)
class GraspYaw:
    """One estimate: order_probs (3,) over `ORDERS`; embedding (4,) (cos 2φ, sin 2φ, cos 4φ, sin 4φ)."""

    order_probs: npt.NDArray[np.float32]
    embedding: npt.NDArray[np.float32]

    @property
    def order(self) -> int:
        """The most likely symmetry order."""
        return ORDERS[int(np.argmax(self.order_probs))]

    def axis(self, order: int) -> float:
        """The grasp axis (radians) under symmetry `order` (2 or 4), defined modulo 2π / order."""
        if order == 2:
            return 0.5 * math.atan2(float(self.embedding[1]), float(self.embedding[0]))
        if order == 4:
            return 0.25 * math.atan2(float(self.embedding[3]), float(self.embedding[2]))
        raise GraspYawError(f"an axis is defined for symmetry orders 2 and 4, got {order}")


class GraspYawNet(nn.Module):
    """MLP from `GraspYawConfig.input_names` (normalised by stored statistics) to 3 order logits + the 4-value
    embedding."""

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: GraspYawConfig | None = None) -> None:
        super().__init__()
        self.config = config or GraspYawConfig()
        width, n_in = self.config.hidden, len(self.config.input_names)
        layers: list[nn.Module] = []
        for i in range(self.config.layers):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, len(ORDERS) + 4)
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_std", torch.ones(n_in))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, n_in) inputs (`GraspYawConfig.input_names`) -> (B, 7): order logits (3) then the embedding (4)."""
        out: torch.Tensor = self.out(self.body((inputs - self.input_mean) / self.input_std))
        return out

    def estimate(self, inputs: npt.ArrayLike, shape: str | None = None) -> GraspYaw:
        """The estimate for one (11,) `yaw_inputs` row and, for a named estimator, the shape the command names (None:
        none named; an unnamed estimator ignores it); a GraspYawError for another shape or a non-finite value."""
        x = np.asarray(inputs, dtype=np.float32)
        if x.shape != (len(YAW_INPUT_NAMES),) or not np.all(np.isfinite(x)):
            raise GraspYawError(f"inputs must be {len(YAW_INPUT_NAMES)} finite values {YAW_INPUT_NAMES}, got {x}")
        if self.config.named:
            x = np.concatenate([x, shape_code(shape)])
        with torch.no_grad():
            out = self(torch.from_numpy(x)[None].to(self.input_mean.device))[0].cpu()
        probs = torch.softmax(out[: len(ORDERS)], dim=0).numpy().astype(np.float32)
        return GraspYaw(probs, out[len(ORDERS) :].numpy().astype(np.float32))


def yaw_values(estimate: GraspYaw | None, states: npt.ArrayLike, tcp_offset: float) -> npt.NDArray[np.float32]:
    """(T, YAW_DIM) extras of T frames (`YAW_VALUE_NAMES`) for one pick's `estimate` (None: zeros, no estimate).

    states: (T, >= 6) joint angles in radians first; tcp_offset: metres from the flange to the TCP along the
    flange z axis.
    """
    from robot.kinematics import forward, tool_yaw

    st = np.asarray(states, dtype=np.float64)
    if st.ndim != 2 or st.shape[1] < 6:
        raise GraspYawError(f"states must be (T, >= 6) joint angles first, got shape {st.shape}")
    out = np.zeros((st.shape[0], YAW_DIM), dtype=np.float32)
    if estimate is None:
        return out
    half, quarter = estimate.axis(2), estimate.axis(4)
    out[:, 0:3] = estimate.order_probs
    for t, q in enumerate(st[:, :6]):
        yaw = tool_yaw(forward(q, tcp_offset)[:3, :3])
        out[t, 3] = turn_to_go(half, 2, yaw)
        out[t, 4] = turn_to_go(quarter, 4, yaw)
    return out


#: Joint-space index of wrist_3 in states and actions; turning it by +d turns a downward tool's yaw by -d.
WRIST_3 = 5


def expected_turn(values: torch.Tensor) -> torch.Tensor:
    """(B,) radians: the turn left weighted by the order probabilities (0 for any-yaw shapes), from (B, YAW_DIM)
    `yaw_values` columns."""
    return values[:, 1] * values[:, 3] + values[:, 2] * values[:, 4]


def wrist_anchor(state: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B,) radians: the wrist_3 angle that turns the tool by the expected turn from `state` (B, >= 6)."""
    return state[:, WRIST_3] - expected_turn(values)


@dataclass(frozen=True)
class FitReport:
    """Training of an estimator: samples used, final training loss, seconds."""

    samples: int
    loss: float
    seconds: float


def fit_grasp_yaw(
    inputs: npt.ArrayLike,
    orders: npt.ArrayLike,
    axes: npt.ArrayLike,
    config: GraspYawConfig | None = None,
    *,
    shapes: Sequence[str] | None = None,
    name_dropout: float = 0.25,
    steps: int = 3000,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[GraspYawNet, FitReport]:
    """Train an estimator on N samples: inputs (N, 11), orders (N,) from `ORDERS`, axes (N,) radians, and for a
    named config `shapes` (N,) the targets' catalogue shapes. Full-batch Adam; loss = cross-entropy of the order +
    squared error of the embedding where the order defines it. A named estimator sees each sample's name hidden
    with probability `name_dropout` at each step, so that it also estimates from the mask alone."""
    import time

    config = config or GraspYawConfig()
    x = np.asarray(inputs, dtype=np.float32)
    o = np.asarray(orders)
    a = np.asarray(axes, dtype=np.float64)
    n = x.shape[0] if x.ndim == 2 else 0
    if x.shape != (n, len(YAW_INPUT_NAMES)) or n < 2 or not np.all(np.isfinite(x)):
        raise GraspYawError(f"inputs must be (N >= 2, {len(YAW_INPUT_NAMES)}) finite values, got shape {x.shape}")
    if o.shape != (n,) or a.shape != (n,) or not np.all(np.isfinite(a)):
        raise GraspYawError(f"orders and axes must be ({n},) with finite axes, got {o.shape} and {a.shape}")
    if steps < 1 or not lr > 0:
        raise GraspYawError(f"steps must be >= 1 and lr > 0, got {steps} and {lr}")
    if not 0.0 <= name_dropout < 1.0:
        raise GraspYawError(f"name_dropout must be within [0, 1), got {name_dropout}")
    if config.named:
        if shapes is None or len(shapes) != n:
            given = None if shapes is None else len(shapes)
            raise GraspYawError(f"a named estimator needs the {n} samples' shapes, got {given}")
        x = np.concatenate([x, np.stack([shape_code(s) for s in shapes])], axis=1)
    start = time.perf_counter()
    torch.manual_seed(seed)
    net = GraspYawNet(config)
    net.input_mean.copy_(torch.from_numpy(x.mean(axis=0)))
    net.input_std.copy_(torch.from_numpy(x.std(axis=0) + 1e-6))
    cls = torch.tensor([ORDERS.index(int(v)) if int(v) in ORDERS else -1 for v in o])
    if (cls < 0).any():
        raise GraspYawError(f"orders must be from {ORDERS}, got {sorted(set(o.tolist()))}")
    target = torch.from_numpy(np.stack([embed_axis(int(v), float(y)) for v, y in zip(o, a, strict=True)]))
    mask = torch.zeros(n, 4)
    mask[cls == ORDERS.index(2), 0:2] = 1.0
    mask[cls == ORDERS.index(4), 2:4] = 1.0
    xt = torch.from_numpy(x)
    hidden_name = xt.clone()
    hidden_name[:, len(YAW_INPUT_NAMES) :] = 0.0
    draws = torch.Generator().manual_seed(seed)
    optim = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    loss = torch.zeros(())
    for _ in range(steps):
        optim.zero_grad()
        batch = xt
        if config.named and name_dropout > 0.0:
            hide = torch.rand(n, 1, generator=draws) < name_dropout
            batch = torch.where(hide, hidden_name, xt)
        out = net(batch)
        emb = out[:, len(ORDERS) :]
        loss = nn.functional.cross_entropy(out[:, : len(ORDERS)], cls) + ((emb - target) ** 2 * mask).sum() / n
        loss.backward()
        optim.step()
    net.eval()
    return net, FitReport(samples=n, loss=float(loss.detach()), seconds=time.perf_counter() - start)


def save_grasp_yaw(path: Path | str, net: GraspYawNet) -> Path:
    """Weights and config as one safetensors file (the config in its metadata)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": _FORMAT, "config": json.dumps(asdict(net.config)), "inputs": json.dumps(net.config.input_names)}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out), metadata=meta)
    return out


def load_grasp_yaw(path: Path | str) -> GraspYawNet:
    """An estimator saved by `save_grasp_yaw`; a GraspYawError for a missing file, another format, other inputs,
    or missing or unexpected weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = Path(path)
    if not src.is_file():
        raise GraspYawError(f"no grasp-yaw estimator at {src}")
    try:
        with safe_open(str(src), framework="pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(src))
    except Exception as exc:
        raise GraspYawError(f"{src} is not a safetensors file: {exc}") from exc
    if meta.get("format") != _FORMAT:
        raise GraspYawError(f"{src} is not a grasp-yaw estimator (format {meta.get('format')!r}, expected {_FORMAT!r})")
    try:
        config = GraspYawConfig(**json.loads(meta.get("config", "{}")))
    except (TypeError, json.JSONDecodeError) as exc:
        raise GraspYawError(f"{src}: its config is not a GraspYawConfig: {exc}") from None
    if json.loads(meta.get("inputs", "[]")) != list(config.input_names):
        raise GraspYawError(f"{src} was trained on other inputs ({meta.get('inputs')}); expected {config.input_names}")
    net = GraspYawNet(config)
    expected = set(net.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise GraspYawError(f"{src}: missing weights {sorted(missing)}, unexpected {sorted(unexpected)}")
    net.load_state_dict(weights, strict=True)
    net.eval()
    return net
