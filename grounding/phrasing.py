"""Generated commands with the answer they must get, for measuring the grounder on rendered scenes.

Two phrasings: `standard` (the plain templates used across the project's examples) and `held_out` (paraphrases,
synonyms and word orders that no other code path produces), so that robustness to how people say things is
measured apart. Expected answers come from the simulator's ground-truth boxes with the same spatial rules the
service applies; cases where those rules are close to a tie are left out rather than labelled either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from grounding.compact.scenes import COLOURS, SHAPES, LabelledImage
from grounding.compact.validate import CLEARLY_VISIBLE_PX
from grounding.detection import Detection
from grounding.spatial import TIE_FRACTION, rank, side_margin
from grounding.vocabulary import Relation


class Expect(StrEnum):
    """What a command must yield."""

    TARGET = "target"
    AMBIGUOUS = "ambiguous"
    NO_MATCH = "no_match"


@dataclass(frozen=True)
class Case:
    """One command about one image: the expected answer and, for TARGET, the intended object's index."""

    command: str
    expect: Expect
    kind: str
    phrasing: str
    target_index: int = -1


_COLOUR_SYN = {"red": "crimson", "green": "emerald", "blue": "navy", "yellow": "golden", "orange": "amber",
               "purple": "violet", "white": "ivory", "black": "ebony"}  # fmt: skip
_SHAPE_SYN = {"cube": "block", "can": "tin", "cup": "mug", "ball": "sphere", "box": "carton"}
_REL_WORDS = {
    Relation.LEFTMOST: ("on the left", "leftmost"), Relation.RIGHTMOST: ("on the right", "rightmost"),
    Relation.NEAREST: ("nearest", "closest to the camera"), Relation.FARTHEST: ("farthest", "at the back"),
    Relation.NEXT_TO: ("next to", "beside"), Relation.BEHIND: ("behind", "at the back of"),
    Relation.IN_FRONT_OF: ("in front of", "in front of"), Relation.LEFT_OF: ("left of", "to the left of"),
    Relation.RIGHT_OF: ("right of", "to the right of"),
}  # fmt: skip
_STANDARD = ("pick the {o}", "pick up the {o}", "grab the {o}")
_HELD_OUT = ("could you please fetch the {s} that is {c}", "{c2} {s2}, please", "i'd like you to take the {c2} {s}",
             "hey robot, lift the {c} {s2} now", "retrieve the {c} {s} carefully")  # fmt: skip


def _name(item: LabelledImage, i: int, held_out: bool, rng: np.random.Generator) -> str:
    c, s = COLOURS[int(item.colours[i])].value, SHAPES[int(item.shapes[i])].value
    if not held_out:
        return f"{c} {s}"
    return f"{_COLOUR_SYN[c] if rng.random() < 0.5 else c} {_SHAPE_SYN[s] if rng.random() < 0.5 else s}"


def _say(held_out: bool, rng: np.random.Generator, c: str, s: str) -> str:
    if not held_out:
        return str(rng.choice(_STANDARD)).format(o=f"{c} {s}")
    return str(rng.choice(_HELD_OUT)).format(c=c, s=s, c2=_COLOUR_SYN[c], s2=_SHAPE_SYN[s])


def _gt(item: LabelledImage, i: int) -> Detection:
    x0, y0, x1, y1 = (float(v) for v in item.boxes[i])
    return Detection((x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)), 1.0, "")


def cases_for(item: LabelledImage, rng: np.random.Generator, held_out: bool) -> list[Case]:
    """Commands about `item` with their expected answers (one of each kind that the scene allows)."""
    phrasing = "held_out" if held_out else "standard"
    names = [(int(c), int(s)) for c, s in zip(item.colours, item.shapes, strict=True)]
    clear = [i for i in range(len(names)) if item.visible_px[i] >= CLEARLY_VISIBLE_PX]
    out: list[Case] = []
    width = item.image.shape[1]

    def add(kind: str, expect: Expect, text: str, target: int = -1) -> None:
        out.append(Case(text, expect, kind, phrasing, target))

    def colour(i: int) -> str:
        return COLOURS[names[i][0]].value

    def shape(i: int) -> str:
        return SHAPES[names[i][1]].value

    uniques = [i for i in clear if names.count(names[i]) == 1]
    if uniques:
        i = int(rng.choice(uniques))
        add("unique", Expect.TARGET, _say(held_out, rng, colour(i), shape(i)), i)
    dups = [
        i
        for i in clear
        if names.count(names[i]) >= 2 and all(j in clear for j in range(len(names)) if names[j] == names[i])
    ]
    if dups:
        i = int(rng.choice(dups))
        add("ambiguous", Expect.AMBIGUOUS, _say(held_out, rng, colour(i), shape(i)))
        group = [j for j in range(len(names)) if names[j] == names[i]]
        relation = Relation(
            rng.choice([r.value for r in (Relation.LEFTMOST, Relation.RIGHTMOST, Relation.NEAREST, Relation.FARTHEST)])
        )
        ranked = _clear_rank(relation, [_gt(item, j) for j in group], [], width)
        if ranked is not None:
            words = _REL_WORDS[relation][int(held_out)]
            name = _name(item, i, held_out, rng)
            text = f"grasp the {name} that is {words}" if held_out else f"pick the {name} {words}"
            add("spatial", Expect.TARGET, text, group[ranked])
    _relational(item, names, clear, rng, held_out, add)
    absent = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)) if (c, s) not in names]
    c, s = absent[int(rng.integers(len(absent)))]
    add("no_match", Expect.NO_MATCH, _say(held_out, rng, COLOURS[c].value, SHAPES[s].value))
    return out


def _clear_rank(relation: Relation, cands: list[Detection], refs: list[Detection], width: int) -> int | None:
    """Index of the candidate the relation picks when it wins by twice the tie margin, else None."""
    ranked = rank(relation, cands, refs, 2 * width)  # twice the width: twice the tie margin the service uses
    if not ranked.order or not ranked.decided:
        return None
    margin = 2 * TIE_FRACTION * width
    if refs and any(abs(side_margin(relation, c, r)) < margin for c in cands for r in refs):
        return None  # some candidate stands too close to the line that decides which side of the reference it is on
    return next(k for k, c in enumerate(cands) if c is ranked.order[0])


def _relational(
    item: LabelledImage,
    names: list[tuple[int, int]],
    clear: list[int],
    rng: np.random.Generator,
    held_out: bool,
    add: Callable[..., None],
) -> None:
    refs = [r for r in clear if names.count(names[r]) == 1]
    if not refs:
        return
    r = int(rng.choice(refs))
    relation = Relation(
        rng.choice(
            [
                x.value
                for x in (Relation.NEXT_TO, Relation.BEHIND, Relation.IN_FRONT_OF, Relation.LEFT_OF, Relation.RIGHT_OF)
            ]
        )
    )
    shape_groups = [i for i in clear if i != r and names[i][1] != names[r][1]]
    if not shape_groups:
        return
    i = int(rng.choice(shape_groups))
    group = [j for j in range(len(names)) if names[j][1] == names[i][1] and j != r]
    if any(j not in clear for j in group):
        return
    k = _clear_rank(relation, [_gt(item, j) for j in group], [_gt(item, r)], item.image.shape[1])
    if k is None:
        return
    s = SHAPES[names[i][1]].value
    ref = _name(item, r, held_out, rng)
    words = _REL_WORDS[relation][int(held_out)]
    text = (
        f"pick the {s} {words} the {ref}"
        if not held_out
        else f"take the {_SHAPE_SYN[s] if rng.random() < 0.5 else s} {words} the {ref}"
    )
    add("relational", Expect.TARGET, text, group[k])
