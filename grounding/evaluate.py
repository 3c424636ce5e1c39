"""`sam2grasp eval-grounding`: top-1 accuracy, ambiguity and no-match detection on held-out rendered scenes.

Scenes come from the evaluation seed range (never used in training), rendered with the arm at home; each gets
generated commands of five kinds (unique name, ambiguous name, spatial word, relation to another object, absent
object) in the standard and the held-out phrasings (`grounding.phrasing`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from grounding.compact.scenes import iter_rendered
from grounding.detection import box_iou
from grounding.errors import AmbiguousTarget, GroundingError, NoMatch
from grounding.phrasing import Case, Expect, cases_for
from grounding.service import GroundingService
from robot.sim.scene import EVAL_SEED_BASE

#: First scene seed of the grounding benchmark (inside the evaluation range, apart from the policy's scenes).
GROUNDING_EVAL_SEED = EVAL_SEED_BASE + 500_000


@dataclass(frozen=True)
class GroundingEval:
    """Results. top1: correct targets / commands with one intended target (IoU ≥ 0.5); ambiguity_precision and
    ambiguity_recall: of AmbiguousTarget answers vs ambiguous commands; no_match_rate: NoMatch answers on commands
    naming an absent object; by_kind / by_phrasing: top-1 (or detection rate) per kind and phrasing; count_by_kind:
    commands per kind; ms_per_command:
    mean wall time of parse + locate; failures: up to 20 examples of wrong answers."""

    scenes: int
    commands: int
    top1: float
    ambiguity_precision: float
    ambiguity_recall: float
    no_match_rate: float
    by_kind: dict[str, float]
    by_phrasing: dict[str, float]
    count_by_kind: dict[str, int]
    ms_per_command: float
    failures: list[dict[str, str]] = field(default_factory=list)


def _answer(service: GroundingService, image: np.ndarray, case: Case) -> tuple[str, tuple[float, ...] | None]:
    try:
        queries = service.parse(case.command)
        det = service.locate(image, queries[0])
        return "target", det.box_xyxy_px
    except AmbiguousTarget:
        return "ambiguous", None
    except NoMatch:
        return "no_match", None
    except GroundingError as e:
        return f"error:{e.type}", None


def evaluate_grounding(service: GroundingService, scenes: int = 200, seed: int = GROUNDING_EVAL_SEED) -> GroundingEval:
    """Run every generated command of `scenes` held-out scenes through `service`."""
    if scenes < 1:
        raise ValueError(f"scenes must be a positive integer, got {scenes}")
    ok: dict[str, list[bool]] = defaultdict(list)
    phr: dict[str, list[bool]] = defaultdict(list)
    amb_pred = amb_true = amb_hit = 0
    seconds = 0.0
    n = 0
    failures: list[dict[str, str]] = []
    for item in iter_rendered(range(seed, seed + scenes), moved_view=False):
        rng = np.random.default_rng([item.seed, 11])
        for held_out in (False, True):
            for case in cases_for(item, rng, held_out):
                t = time.perf_counter()
                answer, box = _answer(service, item.image, case)
                seconds += time.perf_counter() - t
                n += 1
                if case.expect == Expect.TARGET:
                    gt = tuple(float(v) for v in item.boxes[case.target_index])
                    right = answer == "target" and box is not None and box_iou(box, gt) >= 0.5  # type: ignore[arg-type]
                else:
                    right = answer == case.expect.value
                ok[case.kind].append(right)
                phr[case.phrasing].append(right)
                amb_pred += answer == "ambiguous"
                amb_true += case.expect == Expect.AMBIGUOUS
                amb_hit += answer == "ambiguous" and case.expect == Expect.AMBIGUOUS
                if not right and len(failures) < 20:
                    failures.append({"seed": str(item.seed), "command": case.command, "expected": case.expect.value,
                                     "kind": case.kind, "answer": answer})  # fmt: skip
    targets = [v for k in ("unique", "spatial", "relational") for v in ok[k]]
    return GroundingEval(
        scenes=scenes,
        commands=n,
        top1=float(np.mean(targets)) if targets else float("nan"),
        ambiguity_precision=amb_hit / amb_pred if amb_pred else float("nan"),
        ambiguity_recall=amb_hit / amb_true if amb_true else float("nan"),
        no_match_rate=float(np.mean(ok["no_match"])) if ok["no_match"] else float("nan"),
        by_kind={k: float(np.mean(v)) for k, v in sorted(ok.items())},
        by_phrasing={k: float(np.mean(v)) for k, v in sorted(phr.items())},
        count_by_kind={k: len(v) for k, v in sorted(ok.items())},
        ms_per_command=1000.0 * seconds / max(n, 1),
        failures=failures,
    )
