"""Parse a spoken pick command into one or more target queries.

"pick the red cup" → one query (red, cup); "grab the blue can on the left" → (blue, can, leftmost); "pick up the
yellow ball next to the box" → (yellow, ball) next to (box); "pick the red cup, then the green cube" → two queries.
Word order is free within an object phrase ("the cup that is red"). Every word must be known (see
`grounding.vocabulary`); an unknown word, another action, negation, plurals, an empty or over-long command and
control characters are `UnsupportedCommand`s that say what was wrong and what is accepted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from grounding.errors import UnsupportedCommand
from grounding.vocabulary import (
    BINARY_RELATIONS,
    COLOUR_WORDS,
    FILLER,
    GENERIC_NOUNS,
    OTHER_VERBS,
    PICK_VERBS,
    REFUSED_WORDS,
    SHAPE_WORDS,
    VALID_COLOURS,
    VALID_SHAPES,
    Relation,
)
from robot.sim.catalogue import Colour, Shape

#: Longest command accepted, characters.
MAX_COMMAND_CHARS = 500
#: Most picks in one command.
MAX_PICKS = 6

_HELP = (
    "say what to pick, e.g. 'pick the red cup', 'grab the blue can on the left', "
    "'pick up the yellow ball next to the box', 'pick the red cup, then the green cube'"
)

#: Multi-word spatial phrases, longest first, rewritten to one token before the words are read.
_PHRASES: tuple[tuple[str, str], ...] = (
    ("to the left of", "@left_of"), ("on the left of", "@left_of"), ("left of", "@left_of"),
    ("to the right of", "@right_of"), ("on the right of", "@right_of"), ("right of", "@right_of"),
    ("in front of", "@in_front_of"), ("behind", "@behind"), ("at the back of", "@behind"),
    ("next to", "@next_to"), ("close to", "@next_to"), ("closest to", "@next_to"), ("nearest to", "@next_to"),
    ("adjacent to", "@next_to"), ("beside", "@next_to"), ("besides", "@next_to"), ("near", "@next_to"),
    ("alongside", "@next_to"), ("by", "@next_to"),
    ("on the left", "leftmost"), ("to the left", "leftmost"), ("on the right", "rightmost"),
    ("to the right", "rightmost"), ("in front", "nearest"), ("at the front", "nearest"), ("at the back", "farthest"),
    ("in the back", "farthest"), ("far left", "leftmost"), ("far right", "rightmost"),
)  # fmt: skip
_UNARY: dict[str, Relation] = {
    "leftmost": Relation.LEFTMOST, "left": Relation.LEFTMOST, "rightmost": Relation.RIGHTMOST,
    "right": Relation.RIGHTMOST, "nearest": Relation.NEAREST, "closest": Relation.NEAREST,
    "front": Relation.NEAREST, "frontmost": Relation.NEAREST, "farthest": Relation.FARTHEST,
    "furthest": Relation.FARTHEST, "back": Relation.FARTHEST, "rear": Relation.FARTHEST, "far": Relation.FARTHEST,
    "farther": Relation.FARTHEST, "further": Relation.FARTHEST, "biggest": Relation.BIGGEST,
    "largest": Relation.BIGGEST, "big": Relation.BIGGEST, "large": Relation.BIGGEST, "bigger": Relation.BIGGEST,
    "larger": Relation.BIGGEST, "huge": Relation.BIGGEST, "smallest": Relation.SMALLEST, "small": Relation.SMALLEST,
    "little": Relation.SMALLEST, "tiny": Relation.SMALLEST, "smaller": Relation.SMALLEST,
}  # fmt: skip
#: "closest to me" means nearest to the viewer, not next to an object.
_VIEWER = frozenset({"me", "you", "us", "camera", "viewer", "robot"})
_SPLIT = re.compile(r"\s*(?:[,;:.!?]|\band then\b|\bafter that\b|\bfollowed by\b|\band finally\b|\bfinally\b|\bthen\b"
                    r"|\bnext\b(?! to)|\band\b)\s*")  # fmt: skip
_WORD = re.compile(r"[a-z@_']+|[0-9]+|[^\sa-z@_'0-9]")


@dataclass(frozen=True)
class ObjectPhrase:
    """An object as described: catalogue colour and shape, each None when not said; `text` the detector phrase."""

    colour: Colour | None
    shape: Shape | None

    @property
    def text(self) -> str:
        """The phrase a detector is asked ("red cup", "cup", "red object")."""
        return " ".join(p for p in ((self.colour or ""), (self.shape or "object")) if p)


@dataclass(frozen=True)
class TargetQuery:
    """One pick: the target, an optional spatial relation, the reference object of a binary relation, and the
    words as said (normalised)."""

    target: ObjectPhrase
    relation: Relation | None
    reference: ObjectPhrase | None
    text: str

    def describe(self) -> str:
        """Human description ("red cup next to box")."""
        rel = "" if self.relation is None else " " + self.relation.value.replace("_", " ")
        ref = "" if self.reference is None else " " + self.reference.text
        return f"{self.target.text}{rel}{ref}"


def _normalise(text: object) -> str:
    if not isinstance(text, str):
        raise UnsupportedCommand(f"a command must be text, got {type(text).__name__}; {_HELP}")
    if len(text) > MAX_COMMAND_CHARS:
        raise UnsupportedCommand(
            f"the command is {len(text)} characters long; at most {MAX_COMMAND_CHARS} are accepted"
        )
    bad = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in ("Cc", "Cf") and c not in "\t\n"})
    if bad:
        raise UnsupportedCommand(f"the command holds control characters ({', '.join(bad[:5])}); send plain text")
    norm = unicodedata.normalize("NFKC", text).lower().replace("’", "'").strip()
    if not norm:
        raise UnsupportedCommand(f"the command is empty; {_HELP}")
    return " ".join(norm.split())


def _singular(word: str) -> str | None:
    for cut in ("es", "s"):
        if word.endswith(cut) and (word[: -len(cut)] in SHAPE_WORDS or word[: -len(cut)] in GENERIC_NOUNS):
            return word[: -len(cut)]
    return None


def _read_phrase(words: list[str], what: str) -> tuple[ObjectPhrase | None, Relation | None, bool]:
    """Colour, shape and unary relation of an object phrase; the bool says whether any object word was seen."""
    colours: set[Colour] = set()
    shapes: set[Shape] = set()
    relations: set[Relation] = set()
    named = False
    for i, w in enumerate(words):
        if w in REFUSED_WORDS:
            raise UnsupportedCommand(REFUSED_WORDS[w])
        if w in OTHER_VERBS:
            raise UnsupportedCommand(f"'{w}' is not something this cell does; it picks objects. {_HELP}")
        if w in COLOUR_WORDS:
            colours.add(COLOUR_WORDS[w])
        elif w in SHAPE_WORDS:
            shapes.add(SHAPE_WORDS[w])
        elif w in GENERIC_NOUNS:
            named = True
        elif w in _UNARY:
            relations.add(_UNARY[w])
        elif (
            w in PICK_VERBS
            or w in FILLER
            or (w == "can" and i + 1 < len(words) and words[i + 1] in ("you", "u", "i", "we"))
        ):
            continue
        elif _singular(w) is not None:
            raise UnsupportedCommand(f"'{w}' asks for several objects; one object is picked at a time. {_HELP}")
        else:
            raise UnsupportedCommand(
                f"unknown word '{w}' in the {what}; known colours: {VALID_COLOURS}; shapes: {VALID_SHAPES}; "
                f"spatial words: left, right, nearest, farthest, biggest, smallest, next to, behind, in front of"
            )
    if len(colours) > 1 or len(shapes) > 1:
        said = ", ".join(sorted(c.value for c in colours) + sorted(s.value for s in shapes))
        raise UnsupportedCommand(f"the {what} names more than one colour or shape ({said}); name one object")
    if len(relations) > 1:
        raise UnsupportedCommand(f"the {what} holds conflicting spatial words ({', '.join(sorted(relations))})")
    colour = next(iter(colours), None)
    shape = next(iter(shapes), None)
    phrase = ObjectPhrase(colour, shape) if (colour or shape or named) else None
    return phrase, next(iter(relations), None), named or bool(colours or shapes)


def _parse_step(piece: str) -> TargetQuery | None:
    text = f" {piece} "
    for phrase, token in _PHRASES:
        text = text.replace(f" {phrase} ", f" {token} ")
    words = _WORD.findall(text)
    for w in words:
        if not re.fullmatch(r"[a-z@_']+", w):
            raise UnsupportedCommand(f"'{w}' is not accepted: commands are English words, commas and full stops")
    binary = [i for i, w in enumerate(words) if w.startswith("@")]
    if len(binary) > 1:
        raise UnsupportedCommand("use one spatial relation per object ('the ball next to the box')")
    if binary and words[binary[0]] == "@next_to" and set(words[binary[0] + 1 :]) & _VIEWER:
        words = [*words[: binary[0]], "nearest", *[w for w in words[binary[0] + 1 :] if w not in _VIEWER]]
        binary = []
    head = words[: binary[0]] if binary else words
    target, unary, named = _read_phrase(head, "object phrase")
    if not binary:
        if unary is None and (target is None or (target.colour is None and target.shape is None)):
            if named:
                raise UnsupportedCommand(f"'{piece}' names no object: say its colour or shape; {_HELP}")
            return None  # only filler and verbs ("ok", "please"): nothing to pick in this piece
        return TargetQuery(target or ObjectPhrase(None, None), unary, None, piece)
    relation = Relation(words[binary[0]][1:])
    reference, ref_unary, _ = _read_phrase(words[binary[0] + 1 :], "reference object")
    if reference is None or (reference.colour is None and reference.shape is None):
        raise UnsupportedCommand(
            f"'{relation.value.replace('_', ' ')}' needs an object to refer to, e.g. 'next to the box'"
        )
    if unary is not None or ref_unary is not None:
        raise UnsupportedCommand("use one spatial relation per object ('the ball next to the box')")
    if relation not in BINARY_RELATIONS:
        raise UnsupportedCommand(f"'{relation.value}' does not take a reference object")
    return TargetQuery(target or ObjectPhrase(None, None), relation, reference, piece)


def parse_object_phrase(text: str) -> ObjectPhrase:
    """A bare object phrase ("red cup", "cup", "red object") as a detector backend receives it."""
    phrase, relation, _ = _read_phrase(_WORD.findall(_normalise(text)), "object phrase")
    if phrase is None or relation is not None:
        raise UnsupportedCommand(f"{text!r} is not an object phrase; give a colour and/or a shape, e.g. 'red cup'")
    return phrase


def parse_command(text: object) -> tuple[TargetQuery, ...]:
    """The picks a command asks for, in order; UnsupportedCommand when it cannot be read safely."""
    norm = _normalise(text)
    pieces = [p for p in _SPLIT.split(norm) if p and p.strip()]
    queries = [q for p in pieces if (q := _parse_step(p.strip())) is not None]
    if not queries:
        raise UnsupportedCommand(f"'{norm[:80]}' names no object; {_HELP}")
    if len(queries) > MAX_PICKS:
        raise UnsupportedCommand(f"{len(queries)} picks in one command; at most {MAX_PICKS} are accepted")
    return tuple(queries)
