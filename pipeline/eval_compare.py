"""`sam2grasp eval-compare`: several `sam2grasp eval` runs side by side, as the paper's comparison table.

Each input is one run's results.json (or its directory), named by a label (default: "TYPE (POLICY PATH)"). Runs
with one label are joined level by level into one row, so that a policy evaluated one occlusion level per process
reads as one row (and a policy evaluated from two paths, say its run directory and `models/`, can be named
once); a level given twice for one row is an error. Rows are compared only on one protocol: the scene and camera
settings, the simulated time per trial, the stepping mode and, level by level, the very same test seeds —
anything else is an error naming what differs, so a table never mixes protocols.

Per policy and level: successes of trials with the Wilson 95% interval, the outcome mix, and the trials that
closed on nothing between two objects at least once (the multi-modality measure, `pipeline.empty_closes`; None for
runs recorded before it existed). Because the seeds are shared, each policy is also compared with the reference
(the first row) scene by scene: the seeds only one of the two picked, and the exact two-sided McNemar p-value
(binomial on the discordant seeds) of the difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.eval_report import OUTCOMES, PlotSeries, draw_series_plot
from pipeline.wilson import wilson_interval
from robot.sim.outcome import Outcome

#: Settings that every compared run must share (the protocol), as named in results.json.
PROTOCOL_KEYS: tuple[str, ...] = ("objects", "width", "height", "max_seconds", "control_dt", "mode")
_SUCCESS = Outcome.SUCCESS.value


class CompareError(ValueError):
    """Runs that cannot be compared: a file that is not a results.json, or runs on different protocols."""


@dataclass(frozen=True)
class LevelCell:
    """One row at one occlusion level: successes of trials with their Wilson 95% interval (low, high), the
    outcome mix, trials that closed on nothing between two objects at least once (None: not recorded), each test
    seed's outcome, and the results.json it came from."""

    occlusion: float
    successes: int
    trials: int
    interval: tuple[float, float]
    outcomes: dict[str, int]
    between_objects_trials: int | None
    seed_outcomes: dict[int, str]
    source: str

    @property
    def rate(self) -> float:
        """Share of trials that picked the named object."""
        return self.successes / self.trials if self.trials else 0.0


@dataclass(frozen=True)
class PolicyRow:
    """One row: its label, the results.json `policy` path of its first run, policy type, perception and its
    levels (ascending p)."""

    label: str
    policy: str
    policy_type: str
    perception: str
    cells: list[LevelCell]

    def cell(self, occlusion: float) -> LevelCell | None:
        """The level at `occlusion`, or None when this policy was not run there."""
        return next((c for c in self.cells if math.isclose(c.occlusion, occlusion)), None)


@dataclass(frozen=True)
class PairedLevel:
    """A policy against the reference at one level on their shared seeds: seeds only the reference picked, only
    the other picked, and the exact two-sided McNemar p-value of that split."""

    occlusion: float
    reference: str
    other: str
    seeds: int
    only_reference: int
    only_other: int
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """The table: rows (the first is the reference), every occlusion level present, the paired comparisons, the
    shared protocol settings, and the plot written (None without --out)."""

    rows: list[PolicyRow]
    levels: list[float]
    paired: list[PairedLevel]
    protocol: dict[str, Any]
    plot: str | None = None


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value for `only_a` and `only_b` discordant pairs (1.0 when there are none)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def load_results(path: Path | str) -> dict[str, Any]:
    """The parsed results.json at `path` (a file, or a run directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise CompareError(f"{path}: no results.json there (give a `sam2grasp eval` run directory or its results.json)")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"{p}: not a readable JSON file ({exc})") from exc
    needed = ("policy", "levels", *PROTOCOL_KEYS)
    missing = [k for k in needed if not isinstance(data, dict) or k not in data]
    if missing:
        raise CompareError(f"{p}: not a `sam2grasp eval` results.json (missing {', '.join(missing)})")
    return dict(data)


def _cell(level: dict[str, Any], source: str) -> LevelCell:
    try:
        episodes = level["episodes"]
        seed_outcomes = {int(e["seed"]): str(e["outcome"]) for e in episodes}
        trials, successes = int(level["trials"]), int(level["successes"])
        p = float(level["occlusion"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CompareError(f"{source}: a level lacks its trials, successes or per-trial records ({exc})") from exc
    listed = sum(o == _SUCCESS for o in seed_outcomes.values())
    if len(seed_outcomes) != trials or listed != successes:
        raise CompareError(
            f"{source}: level p={p:g} lists {len(seed_outcomes)} distinct trial seeds with {listed} successes, but "
            f"says {successes} of {trials}"
        )
    outcomes = {k: int(level.get("outcomes", {}).get(k, 0)) for k in OUTCOMES}
    between = None
    if "empty_close_sites" in level and "between_objects_share" in level:
        between = round(float(level["between_objects_share"]) * trials)
    return LevelCell(p, successes, trials, wilson_interval(successes, trials), outcomes, between, seed_outcomes, source)


def _label(report: dict[str, Any]) -> str:
    return f"{report.get('policy_type', 'sam2grasp')} ({report['policy']})"


def compare(paths: Sequence[Path | str], labels: Sequence[str] | None = None) -> Comparison:
    """Join the runs at `paths` into one comparison (module doc). labels: one per run, naming its row (default:
    "TYPE (POLICY PATH)"); the first run's row is the reference."""
    if not paths:
        raise CompareError("give at least one results.json")
    if labels is not None and (len(labels) != len(paths) or any(not label.strip() for label in labels)):
        raise CompareError(f"{len(labels)} labels for {len(paths)} runs: give one non-empty label per run, in order")
    reports = [(str(p), load_results(p)) for p in paths]
    first_path, first = reports[0]
    for path, report in reports[1:]:
        for key in PROTOCOL_KEYS:
            if report[key] != first[key]:
                raise CompareError(
                    f"{path} ran with {key}={report[key]!r} but {first_path} with {key}={first[key]!r}: "
                    f"only runs on one protocol compare (the same {', '.join(PROTOCOL_KEYS)} and seeds)"
                )
    grouped: dict[str, tuple[dict[str, Any], list[LevelCell]]] = {}
    for i, (path, report) in enumerate(reports):
        label = labels[i].strip() if labels is not None else _label(report)
        meta, cells = grouped.setdefault(label, (report, []))
        for level in report["levels"]:
            cell = _cell(level, path)
            twin = next((c for c in cells if math.isclose(c.occlusion, cell.occlusion)), None)
            if twin is not None:
                raise CompareError(
                    f"{label} has level p={cell.occlusion:g} twice ({twin.source} and {path}): give each level of a "
                    "row once"
                )
            cells.append(cell)
    rows = []
    for label, (meta, cells) in grouped.items():
        rows.append(
            PolicyRow(
                label,
                str(meta["policy"]),
                str(meta.get("policy_type", "sam2grasp")),
                str(meta.get("perception", "")),
                sorted(cells, key=lambda c: c.occlusion),
            )
        )
    levels = sorted({c.occlusion for r in rows for c in r.cells})
    for p in levels:
        present = [(r, c) for r in rows if (c := r.cell(p)) is not None]
        base_row, base = present[0]
        for row, cell in present[1:]:
            if set(cell.seed_outcomes) != set(base.seed_outcomes):
                only = sorted(set(cell.seed_outcomes) ^ set(base.seed_outcomes))
                raise CompareError(
                    f"at p={p:g} {row.label} ({cell.source}) and {base_row.label} ({base.source}) ran different "
                    f"test seeds ({len(only)} seeds in one only, e.g. {only[:3]}): run both with the same --seed "
                    "and --trials"
                )
    paired = []
    reference = rows[0]
    for row in rows[1:]:
        for p in levels:
            a, b = reference.cell(p), row.cell(p)
            if a is None or b is None:
                continue
            only_a = sum(a.seed_outcomes[s] == _SUCCESS and b.seed_outcomes[s] != _SUCCESS for s in a.seed_outcomes)
            only_b = sum(b.seed_outcomes[s] == _SUCCESS and a.seed_outcomes[s] != _SUCCESS for s in a.seed_outcomes)
            paired.append(
                PairedLevel(
                    p, reference.label, row.label, len(a.seed_outcomes), only_a, only_b, mcnemar_exact(only_a, only_b)
                )
            )
    protocol = {k: first[k] for k in PROTOCOL_KEYS}
    return Comparison(rows, levels, paired, protocol)


def write_plot(comparison: Comparison, path: Path) -> Path:
    """Success against occlusion, one line per policy with its Wilson 95% bars (PNG at `path`)."""
    series = [
        PlotSeries(
            row.label,
            [c.occlusion for c in row.cells],
            [c.rate for c in row.cells],
            [c.interval for c in row.cells],
        )
        for row in comparison.rows
    ]
    return draw_series_plot(series, path, title="success vs occlusion, same test seeds")


def _grid(comparison: Comparison, text: Callable[[LevelCell], str | None]) -> list[str]:
    """Markdown table lines: one row per policy, one column per level, `text(cell)` in each ("—" where the policy
    was not run at that level or `text` gives None)."""
    lines = [
        "| policy | " + " | ".join(f"p = {p:g}" for p in comparison.levels) + " |",
        "|" + "---|" * (len(comparison.levels) + 1),
    ]
    for row in comparison.rows:
        cells = [(None if (c := row.cell(p)) is None else text(c)) or "—" for p in comparison.levels]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(comparison: Comparison) -> str:
    """The comparison as Markdown: successes with Wilson 95% intervals per level, then trials that closed on
    nothing between two objects, then the paired comparisons with the reference."""
    lines = _grid(
        comparison, lambda c: f"{c.successes}/{c.trials} ({100 * c.interval[0]:.1f}–{100 * c.interval[1]:.1f})"
    )
    lines += ["", "Trials that closed on nothing between two objects at least once:", ""]
    lines += _grid(
        comparison, lambda c: None if c.between_objects_trials is None else f"{c.between_objects_trials}/{c.trials}"
    )
    if comparison.paired:
        lines += [
            "",
            "Seed by seed against the reference (picked by the reference only / by the other only, exact McNemar p):",
            "",
        ]
        for d in comparison.paired:
            lines.append(
                f"- p = {d.occlusion:g}, {d.other}: {d.only_reference} / {d.only_other} of {d.seeds} seeds, "
                f"p = {d.p_value:.3g}"
            )
    return "\n".join(lines)
