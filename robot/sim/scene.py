"""Seeded scene specifications: which objects stand where, lighting, and the fixed camera's pose."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from robot.sim.catalogue import COLOUR_RGB, ObjectKind, UnknownObjectError, all_kinds, parse_object_name

#: Table area where objects are placed: x and y ranges in metres in the robot base frame (table top is z = 0).
WORKSPACE_X: tuple[float, float] = (0.34, 0.66)
WORKSPACE_Y: tuple[float, float] = (-0.28, 0.28)
#: Scene seeds from here on are kept for evaluation; training data is collected below it.
EVAL_SEED_BASE = 10_000_000
#: Fewest and most objects a scene may hold.
MIN_OBJECTS, MAX_OBJECTS = 1, 6
#: Free space (metres) kept between two objects' circumscribed circles so that fingers fit between them.
CLEARANCE = 0.045
#: Nominal fixed-camera position and look-at point (metres, base frame).
CAMERA_POSITION: tuple[float, float, float] = (1.20, 0.0, 0.72)
CAMERA_TARGET: tuple[float, float, float] = (0.48, 0.0, 0.0)


class SceneError(ValueError):
    """A scene request that cannot be met (bad object count, unknown names, no room on the table)."""


@dataclass(frozen=True)
class PlacedObject:
    """An object standing on the table.

    instance: unique id in the scene ("red_cup_1"); x, y: metres (base frame); yaw: radians about z;
    rgb: linear colour 0..1 after jitter.
    """

    instance: str
    kind: ObjectKind
    x: float
    y: float
    yaw: float
    rgb: tuple[float, float, float]

    @property
    def name(self) -> str:
        """Human name, e.g. "red cup"."""
        return self.kind.name

    @property
    def radius(self) -> float:
        """Radius (metres) of the object's circumscribed circle seen from above."""
        hx, hy, _ = self.kind.spec.half_extents
        return math.hypot(hx, hy)


@dataclass(frozen=True)
class Lighting:
    """Key light direction (unit vector towards the light), its diffuse level and the ambient level (0..1)."""

    key_direction: tuple[float, float, float]
    key_diffuse: float
    ambient: float


@dataclass(frozen=True)
class CameraPose:
    """Fixed camera position and look-at target, metres in the base frame."""

    position: tuple[float, float, float]
    target: tuple[float, float, float]


@dataclass(frozen=True)
class SceneSpec:
    """Everything that makes one scene, drawn from `seed`."""

    seed: int
    objects: tuple[PlacedObject, ...]
    lighting: Lighting
    camera: CameraPose
    table_rgb: tuple[float, float, float] = field(default=(0.55, 0.47, 0.38))

    def find(self, instance: str) -> PlacedObject:
        """The object with this instance id, or an error listing the scene's instance ids."""
        for obj in self.objects:
            if obj.instance == instance:
                return obj
        valid = ", ".join(o.instance for o in self.objects)
        raise UnknownObjectError(f"no object {instance!r} in this scene; objects: {valid}")

    def instances_named(self, name: str) -> list[PlacedObject]:
        """Objects whose human name is `name` ("red cup")."""
        kind = parse_object_name(name)
        return [o for o in self.objects if o.kind == kind]


@dataclass(frozen=True)
class SceneRequest:
    """What to put in a scene.

    n_objects: (min, max) object count drawn uniformly, within 1..6; names: exact objects ("red cup", ...)
    instead of random ones; duplicate_prob: chance that a random scene holds two objects of the same name;
    camera_jitter: metres of position noise on the fixed camera (and the same in radians/10 of aim).
    """

    n_objects: tuple[int, int] = (3, 6)
    names: tuple[str, ...] = ()
    duplicate_prob: float = 0.3
    camera_jitter: float = 0.01

    def __post_init__(self) -> None:
        lo, hi = self.n_objects
        if not (MIN_OBJECTS <= lo <= hi <= MAX_OBJECTS):
            raise SceneError(
                f"object count range {self.n_objects} is invalid; use lo <= hi within {MIN_OBJECTS}..{MAX_OBJECTS}"
            )
        if len(self.names) > MAX_OBJECTS:
            raise SceneError(f"{len(self.names)} objects requested; a scene holds at most {MAX_OBJECTS}")
        for name in self.names:
            parse_object_name(name)
        if not 0.0 <= self.duplicate_prob <= 1.0:
            raise SceneError(f"duplicate_prob must be within [0, 1], got {self.duplicate_prob}")
        if not 0.0 <= self.camera_jitter <= 0.05:
            raise SceneError(f"camera_jitter must be within [0, 0.05] m, got {self.camera_jitter}")


def parse_count_range(text: str) -> tuple[int, int]:
    """Parse "3-6" or "4" into an object-count range, with an error naming the valid range."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise SceneError(f"object count {text!r} must be 'N' or 'LO-HI' within {MIN_OBJECTS}..{MAX_OBJECTS}") from None
    lo, hi = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
    if len(parts) > 2 or not (MIN_OBJECTS <= lo <= hi <= MAX_OBJECTS):
        raise SceneError(f"object count {text!r} must be 'N' or 'LO-HI' within {MIN_OBJECTS}..{MAX_OBJECTS}")
    return lo, hi


def _jitter_rgb(rng: np.random.Generator, kind: ObjectKind) -> tuple[float, float, float]:
    base = np.array(COLOUR_RGB[kind.colour])
    scale = rng.uniform(0.9, 1.08)
    shifted = np.clip(base * scale + rng.uniform(-0.03, 0.03, size=3), 0.0, 1.0)
    return (float(shifted[0]), float(shifted[1]), float(shifted[2]))


def _choose_kinds(rng: np.random.Generator, request: SceneRequest) -> list[ObjectKind]:
    if request.names:
        return [parse_object_name(n) for n in request.names]
    n = int(rng.integers(request.n_objects[0], request.n_objects[1] + 1))
    catalogue = all_kinds()
    picks = rng.choice(len(catalogue), size=n, replace=False)
    kinds = [catalogue[int(i)] for i in picks]
    if n >= 2 and rng.random() < request.duplicate_prob:
        kinds[-1] = kinds[0]  # two objects of the same name: commands then need a spatial word
    return kinds


def _place(rng: np.random.Generator, kinds: list[ObjectKind]) -> list[tuple[float, float]]:
    for _attempt in range(200):
        placed: list[tuple[float, float, float]] = []
        ok = True
        for kind in kinds:
            hx, hy, _ = kind.spec.half_extents
            radius = math.hypot(hx, hy)
            for _try in range(100):
                x = float(rng.uniform(WORKSPACE_X[0] + radius, WORKSPACE_X[1] - radius))
                y = float(rng.uniform(WORKSPACE_Y[0] + radius, WORKSPACE_Y[1] - radius))
                if all(math.hypot(x - px, y - py) >= radius + pr + CLEARANCE for px, py, pr in placed):
                    placed.append((x, y, radius))
                    break
            else:
                ok = False
                break
        if ok:
            return [(x, y) for x, y, _ in placed]
    raise SceneError(f"could not place {len(kinds)} objects with {CLEARANCE * 100:.0f} cm clearance on the table")


def sample_scene(seed: int, request: SceneRequest | None = None) -> SceneSpec:
    """Draw a scene from `seed` (same seed and request, same scene)."""
    req = request or SceneRequest()
    if seed < 0:
        raise SceneError(f"seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng(seed)
    kinds = _choose_kinds(rng, req)
    positions = _place(rng, kinds)
    counts: Counter[ObjectKind] = Counter()
    objects = []
    for kind, (x, y) in zip(kinds, positions, strict=True):
        instance = f"{kind.colour.value}_{kind.shape.value}_{counts[kind]}"
        counts[kind] += 1
        yaw = float(rng.uniform(-math.pi, math.pi))
        objects.append(PlacedObject(instance, kind, x, y, yaw, _jitter_rgb(rng, kind)))
    az = rng.uniform(-math.pi, math.pi)
    el = rng.uniform(math.radians(40), math.radians(75))
    lighting = Lighting(
        key_direction=(
            float(math.cos(el) * math.cos(az)),
            float(math.cos(el) * math.sin(az)),
            float(math.sin(el)),
        ),
        key_diffuse=float(rng.uniform(0.45, 0.8)),
        ambient=float(rng.uniform(0.25, 0.45)),
    )
    j = req.camera_jitter
    cam_pos = np.array(CAMERA_POSITION) + rng.uniform(-j, j, size=3)
    cam_target = np.array(CAMERA_TARGET) + rng.uniform(-j, j, size=3) * 2.0
    camera = CameraPose(
        (float(cam_pos[0]), float(cam_pos[1]), float(cam_pos[2])),
        (float(cam_target[0]), float(cam_target[1]), float(cam_target[2])),
    )
    tint = rng.uniform(-0.04, 0.04, size=3)
    table = tuple(float(v) for v in np.clip(np.array([0.55, 0.47, 0.38]) + tint, 0, 1))
    return SceneSpec(seed, tuple(objects), lighting, camera, (table[0], table[1], table[2]))
