"""Does a SAM2Grasp head read the grasp yaw from its features, or continue what the arm's joints show?

On demonstrations whose grasp turns the wrist (joint wrist_3) by at least --min-turn degrees, the probe compares
the turn each joint-space head predicts (wrist_3 at the last step of a predicted chunk, minus the first frame's)
with the labels' turn at the same step:
- `start`: at the first frame, the arm in its start pose;
- `half`: at the frame where the labels have done half of the episode's turn, from the recorded state;
- `half_lagging`: the same frame with wrist_3 put back to its start value, an arm that lags its plan.
Each is the median over episodes of predicted / label turn (1: on the labels; 0: no turn). A head that reads the yaw
from its features keeps `half_lagging` near `half`; one that continues its joints' motion drops it toward 0. The
heads run side by side on the same episodes, in one run.

Use demonstrations no head trained on (e.g. `sam2grasp collect --episodes 40 --seed 900000 --noise-prob 0 --out
data/probe --width 320 --height 240`, cached with the heads' trackers and feature spec; each head reads the cache
of the tracker weights its `tracker.json` names, so heads of different trackers compare on the same episodes).
Place heads read each episode's recorded camera. A head trained with --grasp-yaw reads its own estimator's
estimate on each episode's cached prompt frame, and its turn values are recomputed from the lagging arm as the
agent would compute them; a --shape-input head reads the shape each episode's command names.

Usage: python bench/wrist_probe.py --data DIR --policy P [--policy P2 ...] [--min-turn DEG] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.train_grasp_yaw import grasp_yaw_samples
from pipeline.train_policy import episode_arrays, episode_shapes, find_cache
from policy.act import PolicyInput
from policy.agent import read_tracker_info
from policy.checkpoint import load_policy
from policy.grasp_yaw import yaw_values

WRIST = 5  # wrist_3 in the joint-space state and action


def probe(policy_dir: Path, data: Path, min_turn_deg: float) -> dict[str, Any]:
    """The three median ratios (and episode count) of one head on the episodes of `data`."""
    policy = load_policy(policy_dir)
    policy.eval()
    cfg = policy.config
    if cfg.action_mode != "joint":
        raise ValueError(f"{policy_dir}: the probe reads joint-space heads (wrist_3); this one is {cfg.action_mode!r}")
    # the features of the tracker this head learned from, when several trackers' caches lie under `data`
    weights = (read_tracker_info(policy_dir) or {}).get("weights_sha256")
    cache = find_cache(data, cfg.feature_spec, tracker_weights=None if weights is None else str(weights))
    estimates = None
    if policy.grasp_yaw is not None:
        net = policy.grasp_yaw
        samples = grasp_yaw_samples(data, cache=cache, mask=net.config.mask)
        estimates = {
            int(e): net.estimate(x, shape)  # each episode's command names its target's shape
            for e, x, shape in zip(samples.episodes, samples.inputs, samples.shapes, strict=True)
        }
    episodes = episode_arrays(
        data,
        cache,
        "joint",
        learn_undone_closes=True,
        place_tcp_offset=cfg.place_tcp_offset if cfg.place else None,
        place_source=cfg.place_source,
        grasp_yaw=estimates,
        # a shape-input head reads the shape each episode's command names (none hidden, as at run time)
        shapes=episode_shapes(data, cache.episodes, hidden=0.0) if cfg.shape_input else None,
    )
    k = cfg.chunk_size - 1
    ratios: dict[str, list[float]] = {"start": [], "half": [], "half_lagging": []}
    for e, ep in enumerate(episodes):
        start = float(ep.state[0, WRIST])
        turn = float(ep.action[-1, WRIST]) - start
        if abs(turn) < math.radians(min_turn_deg):
            continue
        done = (ep.action[:, WRIST] - start) / turn
        half = int(np.argmax(done > 0.5))
        lagging = ep.state[half].copy()
        lagging[WRIST] = start
        for name, t, state in (
            ("start", 0, ep.state[0]),
            ("half", half, ep.state[half]),
            ("half_lagging", half, lagging),
        ):
            extras = ep.extras[t].copy()
            if estimates is not None:  # the turn left, from this (possibly lagging) arm
                extras[cfg.yaw_columns] = yaw_values(estimates.get(e), state[None], cfg.place_tcp_offset)[0]
            chunk = policy.predict_action_chunk(PolicyInput.from_numpy(ep.tokens[t], extras, state))[0].numpy()
            label = float(ep.action[min(t + k, len(ep) - 1), WRIST]) - start
            ratios[name].append((float(chunk[k, WRIST]) - start) / label)
    n = len(ratios["start"])
    return {
        "policy": str(policy_dir),
        "episodes": n,
        **{name: float(np.median(v)) if v else None for name, v in ratios.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="demonstrations with a feature cache")
    parser.add_argument("--policy", required=True, action="append", type=Path, help="a head directory (repeatable)")
    parser.add_argument("--min-turn", type=float, default=30.0, help="least wrist turn of a probed episode, degrees")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = [probe(p, args.data, args.min_turn) for p in args.policy]
    if args.json:
        print(json.dumps({"data": str(args.data), "min_turn_deg": args.min_turn, "heads": rows}))
        return 0
    print(f"median predicted / label wrist turn at the chunk's end ({args.data}, turns >= {args.min_turn:g} deg)")
    print(f"{'policy':50s} {'episodes':>8s} {'start':>7s} {'half':>7s} {'half_lagging':>13s}")
    for r in rows:
        cells = [f"{r[c]:.2f}" if r[c] is not None else "n/a" for c in ("start", "half", "half_lagging")]
        print(f"{r['policy']:50s} {r['episodes']:8d} {cells[0]:>7s} {cells[1]:>7s} {cells[2]:>13s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
