"""Training speed: seconds per epoch of the SAM2Grasp head on cached features against the image-based ACT baseline
(`act`: CNN from scratch + the same transformer) on the same episodes, measured side by side in one run (target
ratio >= 30), and the SAM2Grasp head's inference time per step on one observation (target <= 5 ms on CPU).

Two image baselines are timed. The trained one (`--image-size`, default 128x96, the small CNN that trains on two
CPU cores) runs whole epochs. ACT's own configuration (`--reference-size`, default the simulated camera's 320x240,
ResNet-18 backbone: `sam2grasp train --backbone resnet18`) is too slow on a CPU for whole epochs: it runs
`--reference-steps` timed steps (after one untimed) on the same samples, and its epoch is the median step times the
steps per epoch (reported as such; 0 steps skips it).

Usage: python bench/training.py [--json] [--data DIR] [--episodes N] [--image-size WxH] [--batch-size B]
       [--repeats R] [--reference-size WxH] [--reference-steps S] [--threads T] [--workdir DIR]

Data: the first N episodes of DIR and its complete feature cache (the spec of --features, default pooled4; a
tracker-mask cache is preferred over an oracle one). Without DIR, or when DIR has no complete cache, a small
dataset of N scripted-expert episodes is collected (160x120 camera, 3 objects) and cached with the compact tracker
at 64 px with seeded random weights (speed does not depend on the weights) under --workdir (default: a temporary
directory, removed afterwards).

Epoch: every sample of the N episodes once, in full batches of B (the last partial batch dropped), AdamW,
gradient clipping, forward + backward + step; batches are gathered from memory for both (the cached F_t; the frames
decoded and downscaled once before timing, as `sam2grasp train` does). One untimed warm-up step each. With R > 1
the two alternate R times and the median of each is kept. Both transformers have the same size (defaults: the
shipped head's: width 128, 4 heads, feed-forward 512, 3 encoder layers, 1 decoder layer, K = 20, no CVAE).

Inference: `predict_action_chunk` and `select_action` (temporal ensembling m = 0.01 as shipped: a new chunk every
call) on one observation in eval mode, 200 timed calls after 20 warm-up; p50 and p99 in ms.
Every time is given as wall time and as this process's CPU time: on a machine shared with other jobs the wall time
includes waiting for a core, the CPU time (with --threads 1) does not. The baseline's
`predict_action_chunk` is timed the same way for reference. Torch threads: --threads (default: torch's).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.act import ACTPolicy, PolicyInput
from policy.act_config import ACTConfig
from policy.baseline_data import ImageChunkDataset, ImageEpisode, load_image_episodes
from policy.cache_store import MANIFEST, CacheError, FeatureCache
from policy.chunks import ChunkDataset, EpisodeArrays
from policy.image_act import ImageACTPolicy
from policy.image_act_config import ImageACTConfig, parse_image_size
from policy.normalize import compute_stats

RATIO_TARGET = 30.0
INFERENCE_TARGET_MS = 5.0


def find_complete_cache(data: Path, features: str) -> FeatureCache | None:
    """A complete cache of spec `features` under data/cache (tracker masks preferred over oracle), or None."""
    root = data / "cache"
    found: list[FeatureCache] = []
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        if not (d / MANIFEST).is_file():
            continue
        try:
            cache = FeatureCache(d)
        except CacheError:
            continue
        if cache.spec.name == features:
            found.append(cache)
    found.sort(key=lambda c: c.key.mask_source != "tracker")
    return found[0] if found else None


def build_small_dataset(root: Path, episodes: int, features: str) -> tuple[Path, FeatureCache]:
    """Collect `episodes` expert episodes at 160x120 and cache them with a random compact tracker at 64 px."""
    from pipeline.collect import CollectConfig, collect
    from policy.cache import build_cache, cache_key, load_tracker
    from policy.features import parse_feature_spec
    from robot.sim.config import CellConfig
    from robot.sim.scene import SceneRequest

    data = root / "bench_training_ds"
    cell = CellConfig(image_width=160, image_height=120, scene=SceneRequest(n_objects=(3, 3)))
    collect(CollectConfig(out=data, episodes=episodes, seed=0, cell=cell), progress=False)
    tracker = load_tracker("compact", image_size=64, allow_random=True, seed=0)
    build_cache(data, tracker, cache_key("compact", tracker, parse_feature_spec(features)), progress=False)
    cache = find_complete_cache(data, features)
    if cache is None:
        raise RuntimeError(f"building the cache under {data} left no complete cache")
    return data, cache


def head_episodes(data: Path, cache: FeatureCache, picks: list[int]) -> list[EpisodeArrays]:
    """Cached F_t + the dataset's state and joint-mode actions of episodes `picks`."""
    from pipeline.dataset.reader import Dataset

    dataset = Dataset(data)
    out = []
    for e in picks:
        feats = cache.load(e, dtype="float16")
        ep = dataset.load_episode(e, images=False)
        out.append(EpisodeArrays(feats.tokens, feats.extras, ep.state, ep.action))
    return out


def epoch_seconds(step: Callable[[np.ndarray], None], samples: int, batch: int, seed: int) -> tuple[float, float]:
    """Wall and process-CPU seconds of one epoch of `step(indices)` over full batches of a seeded permutation (one
    warm-up step first, untimed)."""
    order = np.random.default_rng(seed).permutation(samples)
    step(order[:batch])
    wall, cpu = time.perf_counter(), time.process_time()
    for b in range(samples // batch):
        step(order[b * batch : (b + 1) * batch])
    return time.perf_counter() - wall, time.process_time() - cpu


def step_seconds(
    step: Callable[[np.ndarray], None], samples: int, batch: int, steps: int, seed: int
) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `steps` timed steps of `step(indices)` over full batches of a seeded
    permutation (one warm-up step first, untimed)."""
    order = np.random.default_rng(seed).permutation(samples)
    step(order[:batch])
    wall, cpu = [], []
    for b in range(min(steps, samples // batch)):
        t0, c0 = time.perf_counter(), time.process_time()
        step(order[b * batch : (b + 1) * batch])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def trainer(policy: torch.nn.Module, loss_of: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], None]:
    """One AdamW step (grad clip 10) of `policy` on the loss (a scalar tensor) of a batch of sample indices."""
    optim = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-4)
    policy.train()

    def step(idx: np.ndarray) -> None:
        loss = loss_of(idx)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        optim.step()

    return step


def percentiles_ms(call: Callable[[], object], calls: int = 200, warmup: int = 20) -> dict[str, float]:
    """p50 and p99 milliseconds (wall, and process CPU) of `call` over `calls` timed calls after `warmup` untimed
    ones."""
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    return {
        "p50_ms": float(np.percentile(wall, 50)),
        "p99_ms": float(np.percentile(wall, 99)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    given = Path(args.data) if args.data else None
    found = find_complete_cache(given, args.features) if given is not None else None
    if given is None or found is None:
        data, cache = build_small_dataset(workdir, args.episodes, args.features)
        built = True
    else:
        data, cache, built = given, found, False
    picks = list(cache.episodes[: args.episodes])
    head: dict[str, Any] = {
        "chunk_size": args.chunk,
        "dim_model": args.dim_model,
        "n_heads": args.heads,
        "dim_feedforward": args.ff_dim,
        "n_encoder_layers": args.encoder_layers,
        "n_decoder_layers": 1,
    }
    n_tokens, channels = cache.token_shape
    head_cfg = ACTConfig(
        feature_spec=cache.spec.name,
        token_dim=channels,
        n_tokens=n_tokens,
        extras_dim=cache.spec.extras_dim,
        **head,
    )
    image_cfg = ImageACTConfig.create("act", parse_image_size(args.image_size), **head)

    t0 = time.perf_counter()
    feats = head_episodes(data, cache, picks)
    frames: list[ImageEpisode] = load_image_episodes(data, image_cfg, "joint", picks)
    load_s = time.perf_counter() - t0
    head_data = ChunkDataset(feats, args.chunk)
    image_data = ImageChunkDataset(frames, args.chunk)
    torch.manual_seed(0)
    sam2grasp = ACTPolicy(head_cfg)
    sam2grasp.normalizer.set_stats(compute_stats(feats))
    baseline = ImageACTPolicy(image_cfg)
    baseline.normalizer.set_stats(compute_stats([e.arrays() for e in frames]))

    def head_loss(idx: np.ndarray) -> Any:
        inp, tgt = head_data.batch(idx)
        return sam2grasp(inp, tgt)[0]

    def image_loss(idx: np.ndarray) -> Any:
        f, s, tgt = image_data.batch(idx)
        return baseline(f, s, tgt)[0]

    head_step, image_step = trainer(sam2grasp, head_loss), trainer(baseline, image_loss)
    head_times, image_times = [], []
    for r in range(args.repeats):
        head_times.append(epoch_seconds(head_step, len(head_data), args.batch_size, r))
        image_times.append(epoch_seconds(image_step, len(image_data), args.batch_size, r))
    head_epoch, image_epoch = statistics.median(t[0] for t in head_times), statistics.median(t[0] for t in image_times)
    head_cpu, image_cpu = statistics.median(t[1] for t in head_times), statistics.median(t[1] for t in image_times)
    reference = reference_epoch(args, data, picks, head, len(head_data)) if args.reference_steps > 0 else None

    sam2grasp.eval()
    baseline.eval()
    ep = feats[0]
    obs = PolicyInput.from_numpy(np.array(ep.tokens[0]), np.array(ep.extras[0]), np.array(ep.state[0]))
    chunk = percentiles_ms(lambda: sam2grasp.predict_action_chunk(obs))
    ensembling = ACTPolicy(ACTConfig(**{**head_cfg.to_dict(), "temporal_ensemble_coeff": 0.01})).eval()
    ensembling.load_state_dict(sam2grasp.state_dict())
    step = percentiles_ms(lambda: ensembling.select_action(obs))
    f1, s1, _ = image_data.batch([0])
    image_chunk = percentiles_ms(lambda: baseline.predict_action_chunk(f1, s1))
    return {
        "device": platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data": str(data),
        "data_built_here": built,
        "cache": str(cache.path),
        "features": cache.spec.name,
        "episodes": len(picks),
        "samples": len(head_data),
        "batch_size": args.batch_size,
        "steps_per_epoch": len(head_data) // args.batch_size,
        "repeats": args.repeats,
        "image_size": args.image_size,
        "transformer": head,
        "head_parameters": sam2grasp.num_parameters(),
        "baseline_parameters": baseline.num_parameters(),
        "baseline_tokens": image_cfg.head.n_tokens,
        "load_seconds": round(load_s, 2),
        "head_epoch_s": head_epoch,
        "baseline_epoch_s": image_epoch,
        "head_epoch_cpu_s": head_cpu,
        "baseline_epoch_cpu_s": image_cpu,
        "head_epoch_s_all": [t[0] for t in head_times],
        "baseline_epoch_s_all": [t[0] for t in image_times],
        "ratio": image_epoch / head_epoch,
        "ratio_cpu": image_cpu / head_cpu,
        "ratio_target": RATIO_TARGET,
        "head_chunk_inference": chunk,
        "head_step_inference": step,
        "baseline_chunk_inference": image_chunk,
        "inference_target_ms": INFERENCE_TARGET_MS,
        "reference": reference,
        "ratio_reference": reference["epoch_s"] / head_epoch if reference else None,
        "ratio_reference_cpu": reference["epoch_cpu_s"] / head_cpu if reference else None,
    }


def reference_epoch(
    args: argparse.Namespace, data: Path, picks: list[int], head: dict[str, Any], samples: int
) -> dict[str, Any]:
    """ACT's own configuration (ResNet-18 from scratch at `--reference-size`, the same transformer) on the same
    samples: the median of `--reference-steps` timed steps, and the epoch as that median times the steps per epoch."""
    cfg = ImageACTConfig.create("act", parse_image_size(args.reference_size), backbone="resnet18", **head)
    t0 = time.perf_counter()
    frames = load_image_episodes(data, cfg, "joint", picks)
    load_s = time.perf_counter() - t0
    dataset = ImageChunkDataset(frames, args.chunk)
    if len(dataset) != samples:
        raise RuntimeError(f"the reference sees {len(dataset)} samples, the head {samples}: not the same data")
    torch.manual_seed(0)
    policy = ImageACTPolicy(cfg)
    policy.normalizer.set_stats(compute_stats([e.arrays() for e in frames]))

    def loss(idx: np.ndarray) -> Any:
        f, s, tgt = dataset.batch(idx)
        return policy(f, s, tgt)[0]

    wall, cpu = step_seconds(trainer(policy, loss), samples, args.batch_size, args.reference_steps, 0)
    per_epoch = samples // args.batch_size
    return {
        "image_size": args.reference_size,
        "backbone": cfg.backbone,
        "tokens": cfg.head.n_tokens,
        "parameters": policy.num_parameters(),
        "load_seconds": round(load_s, 2),
        "timed_steps": min(args.reference_steps, per_epoch),
        "step_s": wall,
        "step_cpu_s": cpu,
        "epoch_s": wall * per_epoch,
        "epoch_cpu_s": cpu * per_epoch,
    }


def _table(r: dict[str, Any]) -> str:
    c, s, b = r["head_chunk_inference"], r["head_step_inference"], r["baseline_chunk_inference"]
    return "\n".join(
        [
            f"data {r['data']} ({'built here' if r['data_built_here'] else 'given'}), {r['episodes']} episodes, "
            f"{r['samples']} samples, batch {r['batch_size']} ({r['steps_per_epoch']} steps/epoch), "
            f"{r['threads']} torch threads",
            f"transformer {r['transformer']}",
            f"SAM2Grasp head ({r['features']} cached F_t, {r['head_parameters'] / 1e6:.2f} M params): "
            f"{r['head_epoch_s']:.2f} s/epoch ({r['head_epoch_cpu_s']:.2f} CPU s)",
            f"image ACT baseline ({r['image_size']} frames, {r['baseline_tokens']} CNN tokens, "
            f"{r['baseline_parameters'] / 1e6:.2f} M params): {r['baseline_epoch_s']:.2f} s/epoch "
            f"({r['baseline_epoch_cpu_s']:.2f} CPU s)",
            f"ratio {r['ratio']:.1f}x wall, {r['ratio_cpu']:.1f}x CPU (target >= {r['ratio_target']:.0f}x)",
            f"head inference: chunk p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms (CPU {c['cpu_p50_ms']:.2f} / "
            f"{c['cpu_p99_ms']:.2f}); select_action (ensembling) p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms "
            f"(CPU {s['cpu_p50_ms']:.2f} / {s['cpu_p99_ms']:.2f}) (target <= {r['inference_target_ms']:.0f} ms)",
            f"baseline inference (reference): chunk p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms",
            *_reference_lines(r),
        ]
    )


def _reference_lines(r: dict[str, Any]) -> list[str]:
    ref = r["reference"]
    if ref is None:
        return ["ACT's own configuration (ResNet-18): not timed (--reference-steps 0)"]
    return [
        f"ACT's own configuration ({ref['image_size']} frames, ResNet-18 from scratch, {ref['tokens']} tokens, "
        f"{ref['parameters'] / 1e6:.2f} M params): median step {ref['step_s']:.2f} s over {ref['timed_steps']} steps "
        f"-> {ref['epoch_s']:.1f} s/epoch ({ref['epoch_cpu_s']:.1f} CPU s)",
        f"ratio against it {r['ratio_reference']:.1f}x wall, {r['ratio_reference_cpu']:.1f}x CPU "
        f"(target >= {r['ratio_target']:.0f}x)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--data", default=None, help="dataset with a feature cache (default: build a small one)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes used (and built) (default 4)")
    parser.add_argument("--features", default="pooled4", help="feature spec of the cache (default pooled4)")
    parser.add_argument("--image-size", default="128x96", help="baseline frames WxH (default 128x96)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=20, help="actions per chunk K (default 20)")
    parser.add_argument("--dim-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ff-dim", type=int, default=512)
    parser.add_argument("--encoder-layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="alternating epochs of each, median kept (default 1)")
    parser.add_argument(
        "--reference-size", default="320x240", help="ACT's own configuration: frames WxH (default 320x240)"
    )
    parser.add_argument(
        "--reference-steps", type=int, default=5, help="timed steps of ACT's own configuration (default 5; 0: skip)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workdir", default=None, help="where a small dataset is built (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.batch_size < 1 or args.repeats < 1:
        parser.error("--episodes, --batch-size and --repeats must be >= 1")
    if args.reference_steps < 0:
        parser.error(f"--reference-steps must be >= 0 (0 skips ACT's own configuration), got {args.reference_steps}")
    try:
        parse_image_size(args.image_size)
        parse_image_size(args.reference_size)
    except ValueError as e:
        parser.error(str(e))
    if args.data and not Path(args.data).is_dir():
        parser.error(f"--data {args.data} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        results = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
            results = run(args, Path(tmp))
    print(json.dumps(results, indent=2) if args.json else _table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
