"""The object catalogue: shapes, colours, sizes and human names of the objects a scene can hold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class UnknownObjectError(ValueError):
    """A shape, colour or object name that the catalogue does not hold."""


class Shape(StrEnum):
    """Object shapes of the catalogue."""

    CUBE = "cube"
    CAN = "can"
    CUP = "cup"
    BALL = "ball"
    BOX = "box"


class Colour(StrEnum):
    """Object colours of the catalogue."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    PURPLE = "purple"
    WHITE = "white"
    BLACK = "black"


#: Nominal linear RGB of each colour (0..1); scenes jitter it slightly without crossing into another name.
COLOUR_RGB: dict[Colour, tuple[float, float, float]] = {
    Colour.RED: (0.80, 0.08, 0.08),
    Colour.GREEN: (0.10, 0.65, 0.15),
    Colour.BLUE: (0.10, 0.22, 0.85),
    Colour.YELLOW: (0.92, 0.85, 0.10),
    Colour.ORANGE: (0.95, 0.45, 0.05),
    Colour.PURPLE: (0.50, 0.12, 0.65),
    Colour.WHITE: (0.93, 0.93, 0.93),
    Colour.BLACK: (0.06, 0.06, 0.06),
}


@dataclass(frozen=True)
class ShapeSpec:
    """Geometry of one catalogue shape.

    half_extents: metres, (x, y, z) half sizes of the bounding box in the object's frame.
    grasp_width: metres, object width across the fingers when grasped along `grasp_axis_yaw`.
    grasp_axis_yaw: radians, direction (in the object frame, about z) along which the fingers close.
    grasp_order: symmetry order of the grasp about z: 0 for a shape that grasps at every yaw (the grasp yaw can
        follow the arm), n for one whose grasp axis repeats every 2π/n radians (2: every half turn, 4: every
        quarter turn).
    mass: kilograms.
    """

    half_extents: tuple[float, float, float]
    grasp_width: float
    grasp_axis_yaw: float
    grasp_order: int
    mass: float

    @property
    def yaw_symmetric(self) -> bool:
        """The shape grasps the same at every yaw."""
        return self.grasp_order == 0

    @property
    def grasp_period(self) -> float:
        """Radians between equivalent grasp axes (π for a yaw-symmetric shape, whose fingers are symmetric)."""
        return math.pi if self.grasp_order == 0 else 2 * math.pi / self.grasp_order

    @property
    def height(self) -> float:
        """Full height in metres."""
        return 2.0 * self.half_extents[2]


SHAPES: dict[Shape, ShapeSpec] = {
    Shape.CUBE: ShapeSpec((0.024, 0.024, 0.024), 0.048, 0.0, 4, 0.08),
    Shape.CAN: ShapeSpec((0.030, 0.030, 0.050), 0.060, 0.0, 0, 0.15),
    # The cup's handle sticks out along +x; the fingers close along y, clear of it.
    Shape.CUP: ShapeSpec((0.045, 0.032, 0.042), 0.064, 1.5707963267948966, 2, 0.10),
    Shape.BALL: ShapeSpec((0.028, 0.028, 0.028), 0.056, 0.0, 0, 0.06),
    # A flat box: long along x, grasped across its 44 mm side.
    Shape.BOX: ShapeSpec((0.045, 0.022, 0.020), 0.044, 1.5707963267948966, 2, 0.09),
}


def parse_shape(value: str) -> Shape:
    """The catalogue shape named `value` (case-insensitive), or an error naming the valid shapes."""
    try:
        return Shape(value.strip().lower())
    except ValueError:
        valid = ", ".join(s.value for s in Shape)
        raise UnknownObjectError(f"unknown shape {value!r}; valid shapes: {valid}") from None


def parse_colour(value: str) -> Colour:
    """The catalogue colour named `value` (case-insensitive), or an error naming the valid colours."""
    try:
        return Colour(value.strip().lower())
    except ValueError:
        valid = ", ".join(c.value for c in Colour)
        raise UnknownObjectError(f"unknown colour {value!r}; valid colours: {valid}") from None


@dataclass(frozen=True)
class ObjectKind:
    """A catalogue entry: a colour and a shape, named as a person would say it ("red cup")."""

    colour: Colour
    shape: Shape

    @property
    def name(self) -> str:
        """Human name, e.g. "red cup"."""
        return f"{self.colour.value} {self.shape.value}"

    @property
    def spec(self) -> ShapeSpec:
        """Geometry of this object's shape."""
        return SHAPES[self.shape]


def parse_object_name(name: str) -> ObjectKind:
    """Parse a human object name such as "red cup" or "red_cup" into a catalogue entry.

    Raises UnknownObjectError naming the valid colours and shapes when the name is not in the catalogue.
    """
    words = name.strip().lower().replace("_", " ").split()
    if len(words) != 2:
        raise UnknownObjectError(
            f"object name {name!r} must be '<colour> <shape>', e.g. 'red cup'; "
            f"colours: {', '.join(c.value for c in Colour)}; shapes: {', '.join(s.value for s in Shape)}"
        )
    return ObjectKind(parse_colour(words[0]), parse_shape(words[1]))


def all_kinds() -> list[ObjectKind]:
    """Every catalogue entry, colour-major order."""
    return [ObjectKind(c, s) for c in Colour for s in Shape]
