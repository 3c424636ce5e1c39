"""The words the command parser knows: actions, colours, shapes, spatial words and harmless filler.

Every word of a command must be known: an unknown word is an error that names it, never a guess (a command that
moves an arm is read strictly). Synonyms map onto the catalogue's colours and shapes.
"""

from __future__ import annotations

from enum import StrEnum

from robot.sim.catalogue import Colour, Shape


class Relation(StrEnum):
    """Spatial words, in the camera's view as a person sees it on the control page.

    leftmost/rightmost: image left/right; nearest/farthest: closest to / farthest from the camera (lowest /
    highest contact point in the image); biggest/smallest: image area; next_to: closest to a reference object;
    behind/in_front_of: farther from / closer to the camera than a reference object, and nearest to it;
    left_of/right_of: left/right of a reference object, and nearest to it.
    """

    LEFTMOST = "leftmost"
    RIGHTMOST = "rightmost"
    NEAREST = "nearest"
    FARTHEST = "farthest"
    BIGGEST = "biggest"
    SMALLEST = "smallest"
    NEXT_TO = "next_to"
    BEHIND = "behind"
    IN_FRONT_OF = "in_front_of"
    LEFT_OF = "left_of"
    RIGHT_OF = "right_of"


#: Relations that need a reference object ("next to the box").
BINARY_RELATIONS = frozenset(
    {Relation.NEXT_TO, Relation.BEHIND, Relation.IN_FRONT_OF, Relation.LEFT_OF, Relation.RIGHT_OF}
)

PICK_VERBS = frozenset(
    {
        "pick",
        "grab",
        "get",
        "take",
        "fetch",
        "grasp",
        "lift",
        "collect",
        "retrieve",
        "seize",
        "snag",
        "obtain",
        "hold",
        "raise",
    }
)
#: Actions people ask robots for that this cell does not do: named in the error instead of being guessed at.
OTHER_VERBS = frozenset(
    {
        "throw", "toss", "push", "drop", "place", "put", "move", "kick", "hit", "break", "smash", "open", "close",
        "pour", "stack", "shake", "wave", "give", "hand", "bring", "carry", "slide", "rotate", "turn", "flip",
        "destroy", "crush", "squeeze", "fill", "empty", "wash", "clean", "sort", "arrange", "point", "touch",
        "tap", "poke", "spin", "roll", "delete", "remove", "ignore", "forget", "disable", "override", "run",
        "execute", "shutdown", "stop", "reset", "set", "say", "tell", "print", "show", "find", "look", "go",
        "follow", "bypass",
    }
)  # fmt: skip

COLOUR_WORDS: dict[str, Colour] = {
    "red": Colour.RED, "crimson": Colour.RED, "scarlet": Colour.RED, "cherry": Colour.RED,
    "green": Colour.GREEN, "lime": Colour.GREEN, "emerald": Colour.GREEN,
    "blue": Colour.BLUE, "navy": Colour.BLUE, "azure": Colour.BLUE, "cobalt": Colour.BLUE,
    "yellow": Colour.YELLOW, "golden": Colour.YELLOW, "gold": Colour.YELLOW, "lemon": Colour.YELLOW,
    "orange": Colour.ORANGE, "amber": Colour.ORANGE, "tangerine": Colour.ORANGE,
    "purple": Colour.PURPLE, "violet": Colour.PURPLE, "lilac": Colour.PURPLE, "magenta": Colour.PURPLE,
    "white": Colour.WHITE, "ivory": Colour.WHITE, "snow": Colour.WHITE,
    "black": Colour.BLACK, "ebony": Colour.BLACK, "jet": Colour.BLACK,
}  # fmt: skip

SHAPE_WORDS: dict[str, Shape] = {
    "cube": Shape.CUBE, "block": Shape.CUBE, "dice": Shape.CUBE, "die": Shape.CUBE,
    "can": Shape.CAN, "tin": Shape.CAN, "cylinder": Shape.CAN, "canister": Shape.CAN,
    "cup": Shape.CUP, "mug": Shape.CUP, "beaker": Shape.CUP,
    "ball": Shape.BALL, "sphere": Shape.BALL, "orb": Shape.BALL,
    "box": Shape.BOX, "carton": Shape.BOX, "package": Shape.BOX, "crate": Shape.BOX, "brick": Shape.BOX,
}  # fmt: skip

#: Nouns that name an object without saying its shape ("the red one").
GENERIC_NOUNS = frozenset({"one", "object", "thing", "item", "piece", "toy"})

#: Words that refuse a command outright, with the reason.
REFUSED_WORDS: dict[str, str] = {
    "not": "negation is not supported: name the object to pick",
    "don't": "negation is not supported: name the object to pick",
    "dont": "negation is not supported: name the object to pick",
    "never": "negation is not supported: name the object to pick",
    "except": "exceptions are not supported: name the object to pick",
    "without": "exceptions are not supported: name the object to pick",
    "all": "one object is picked at a time: list them ('pick the red cup, then the blue cup')",
    "every": "one object is picked at a time: list them ('pick the red cup, then the blue cup')",
    "both": "one object is picked at a time: list them ('pick the red cup, then the blue cup')",
    "everything": "one object is picked at a time: list them ('pick the red cup, then the blue cup')",
    "between": "'between' is not supported; use left, right, nearest, farthest, next to, behind or in front of",
}

#: Words that carry no meaning for the pick (politeness, articles, prepositions, pronouns, adverbs).
FILLER = frozenset(
    """a an the this that these those it its please kindly could would will you u robot arm hey hi hello ok
    okay now i i'd id i'm like want wanna need me my for to go ahead and just quickly carefully gently slowly
    softly up there here is are which located sitting standing lying placed resting on at in of side table from
    with colour color coloured colored let's lets try also then again thanks thank yo sir one's whose shaped
    looking object's over
    """.replace(",", " ").split()
)

#: Sequence separators between picks (besides commas and semicolons).
SEQUENCE_WORDS = ("and then", "after that", "followed by", "and finally", "finally", "next", "then", "and")

#: Words understood for catalogue members, for error messages.
VALID_COLOURS = ", ".join(c.value for c in Colour)
VALID_SHAPES = ", ".join(s.value for s in Shape)
