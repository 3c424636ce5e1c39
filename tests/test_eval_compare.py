"""Several eval runs side by side (pipeline.eval_compare, `sam2grasp eval-compare`): rows joined from runs, the
protocol and seed checks, the paired McNemar comparison, the table and the plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.eval_compare import CompareError, compare, markdown_table, mcnemar_exact, write_plot
from pipeline.eval_report import EvalReport, TrialResult, level_result

SEEDS = list(range(10_000_000, 10_000_010))


def trial(seed: int, outcome: str, sites: list[str] | None = None) -> TrialResult:
    return TrialResult(seed, outcome, 100, 5.0, 40.0, 1.0, 0.0, 0, 0, 0, empty_close_sites=sites or [])


def write_run(
    path: Path, policy: str, levels: dict[float, list[str]], *, policy_type: str = "sam2grasp", **protocol: object
) -> Path:
    """results.json of a run of `policy`: per level, one outcome per seed of SEEDS (a trailing '*' marks a trial
    that closed on nothing between two objects)."""
    results = []
    for p, outcomes in levels.items():
        trials = [
            trial(s, o.rstrip("*"), ["between_objects"] if o.endswith("*") else None)
            for s, o in zip(SEEDS, outcomes, strict=True)
        ]
        results.append(level_result(p, trials, []))
    settings: dict[str, object] = {"objects": [3, 6], "width": 320, "height": 240, "max_seconds": 15.0}
    settings |= {"control_dt": 0.05, "mode": "lockstep"} | protocol
    report = EvalReport(
        policy=policy,
        tracker_checkpoint="",
        feature_spec="x",
        action_mode="joint",
        trials=len(SEEDS),
        seed=0,
        prompt="",
        perception="tracker",
        levels=results,
        empty_grasp_share=0.0,
        safety_violations={},
        results=str(path / "results.json"),
        plot="",
        seconds=1.0,
        policy_type=policy_type,
        **settings,  # type: ignore[arg-type]
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(asdict(report)))
    return path


S, T, E = "success", "timeout", "empty_grasp"


def test_rows_join_runs_and_pair_seed_by_seed(tmp_path: Path) -> None:
    head = write_run(tmp_path / "head", "models/head", {0.0: [S] * 9 + [T], 0.6: [S] * 8 + [T, T]})
    act0 = write_run(tmp_path / "act0", "runs/act", {0.0: [S, S, T, T, E + "*", T, T, T, T, S]}, policy_type="act")
    act6 = write_run(tmp_path / "act6", "runs/act", {0.6: [T] * 9 + [S]}, policy_type="act")
    result = compare([head, act0 / "results.json", act6])
    assert [r.label for r in result.rows] == ["sam2grasp (models/head)", "act (runs/act)"]
    assert result.levels == [0.0, 0.6]
    act = result.rows[1]
    assert [(c.occlusion, c.successes, c.trials) for c in act.cells] == [(0.0, 3, 10), (0.6, 1, 10)]
    assert act.cells[0].outcomes["timeout"] == 6
    assert act.cells[0].outcomes["empty_grasp"] == 1
    assert act.cells[0].between_objects_trials == 1
    assert act.cells[1].between_objects_trials == 0
    lo, hi = act.cells[0].interval
    assert lo < 0.3 < hi
    # seed by seed at p = 0: the head alone picked seeds 2..8 (7 of them); act alone picked the last seed, where
    # the head timed out
    p0 = next(d for d in result.paired if d.occlusion == 0.0)
    assert (p0.only_reference, p0.only_other, p0.seeds) == (7, 1, 10)
    assert p0.p_value == pytest.approx(mcnemar_exact(7, 1))
    assert p0.p_value == pytest.approx(2 * (1 + 8) / 2**8)
    table = markdown_table(result)
    assert "| act (runs/act) | 3/10 (" in table
    assert "| sam2grasp (models/head) | 9/10 (" in table
    assert "1/10" in table.split("between two objects")[1]
    png = write_plot(result, tmp_path / "out" / "plot.png")
    assert Image.open(png).size == (640, 420)


def test_mcnemar_exact_matches_the_binomial_tail() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(6, 1) == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(1, 6) == mcnemar_exact(6, 1)
    assert math.isclose(mcnemar_exact(20, 8), 0.0357, abs_tol=5e-4)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 2)


def test_labels_join_one_policy_named_from_two_paths(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", "runs/head/best", {0.0: [S] * 10})
    b = write_run(tmp_path / "b", "models/head", {0.6: [S] * 9 + [T]})
    result = compare([a, b], ["SAM2Grasp", "SAM2Grasp"])
    assert len(result.rows) == 1
    assert [c.occlusion for c in result.rows[0].cells] == [0.0, 0.6]
    with pytest.raises(CompareError, match="2 labels for 1 runs"):
        compare([a], ["x", "y"])


def test_mixed_protocols_and_seeds_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", "p1", {0.0: [S] * 10})
    wide = write_run(tmp_path / "wide", "p2", {0.0: [S] * 10}, width=640)
    with pytest.raises(CompareError, match=r"width=640.*width=320"):
        compare([a, wide])
    latency = write_run(tmp_path / "lat", "p2", {0.0: [S] * 10}, mode="latency")
    with pytest.raises(CompareError, match="mode="):
        compare([a, latency])
    other = write_run(tmp_path / "other", "p2", {0.0: [S] * 10})
    data = json.loads((other / "results.json").read_text())
    data["levels"][0]["episodes"][0]["seed"] = 99
    (other / "results.json").write_text(json.dumps(data))
    with pytest.raises(CompareError, match="different test seeds"):
        compare([a, other])
    twice = write_run(tmp_path / "twice", "p1", {0.0: [S] * 10})
    with pytest.raises(CompareError, match="level p=0 twice"):
        compare([a, twice])


def test_files_that_are_not_eval_results_are_named(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match=r"no results\.json"):
        compare([tmp_path / "missing"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CompareError, match="not a readable JSON"):
        compare([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text(json.dumps({"policy": "x"}))
    with pytest.raises(CompareError, match="missing levels"):
        compare([tmp_path / "other.json"])
    run = write_run(tmp_path / "run", "p", {0.0: [S] * 10})
    data = json.loads((run / "results.json").read_text())
    data["levels"][0]["successes"] = 7
    (run / "results.json").write_text(json.dumps(data))
    with pytest.raises(CompareError, match="says 7 of 10"):
        compare([run])


def test_the_command_writes_the_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", "p1", {0.0: [S] * 10})
    b = write_run(tmp_path / "b", "p2", {0.0: [T] * 10}, policy_type="act")
    assert main(["eval-compare", str(a), str(b), "--labels", "SAM2Grasp,ACT", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| SAM2Grasp | 10/10" in out
    assert "| ACT | 0/10" in out
    assert "10 / 0 of 10 seeds" in out
    assert (tmp_path / "cmp" / "comparison.md").read_text().startswith("| policy |")
    assert (tmp_path / "cmp" / "success_vs_occlusion.png").is_file()
    assert main(["eval-compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "no results.json" in capsys.readouterr().err
