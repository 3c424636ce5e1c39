"""Tracker speed: streaming step time of the compact tracker and SAM2.1-tiny in float32 and bfloat16 (autocast),
and the feature cache's throughput as a ratio of bare tracking throughput of the same model (target >= 0.9).

Usage: python bench/tracker.py [--json] [--device cpu|cuda] [--frames N] [--checkpoint PATH] [--threads T]

Step times: each model is prompted with a box on frame 0 of a synthetic 640x480 sequence (a coloured rectangle
drifting over a gradient), then `step` runs on the next N frames; the mean is reported (memory fills up over the
first frames, so short runs read a little fast). Weights are random (seeded) unless --checkpoint gives the compact
tracker's: speed does not depend on them. SAM2.1-tiny at 1024 px takes seconds per frame on a CPU; 3 frames suffice.

Cache ratio: one episode of --cache-frames frames is written as a dataset; frames/s of `build_cache` over it
(the whole call: hashing, video decoding, tracking, feature extraction, float16 files, manifest) against frames/s of
bare `tracker.track` over the same frames already decoded in memory; the better of --repeats alternating runs each.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from pipeline.dataset.reader import Dataset
from pipeline.dataset.records import Episode, Frame, ObjectRecord
from pipeline.dataset.writer import DatasetWriter
from policy.cache import build_cache, cache_key, load_tracker
from policy.features import parse_feature_spec
from policy.tracker import SAM2Tracker, TrackerConfig

FRAME_SIZE = (480, 640)


def synthetic_frames(n: int, size: tuple[int, int] = FRAME_SIZE) -> tuple[list[npt.NDArray[np.uint8]], list[Any]]:
    """n RGB frames of a 120x90 px orange rectangle drifting over a gradient, and its box in each frame."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    frames, boxes = [], []
    for t in range(n):
        x0, y0 = 100 + (7 * t) % (width - 240), 80 + (5 * t) % (height - 180)
        rgb = background.copy()
        rgb[y0 : y0 + 90, x0 : x0 + 120] = (240, 140, 30)
        frames.append(rgb)
        boxes.append([x0, y0, x0 + 120, y0 + 90])
    return frames, boxes


def step_ms(tracker: SAM2Tracker, frames: list[npt.NDArray[np.uint8]], box: Any) -> float:
    """Mean milliseconds of `step` over frames[1:] after prompting on frames[0]."""
    cuda = tracker.device.type == "cuda"
    tracker.start(frames[0], box)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for frame in frames[1:]:
        tracker.step(frame)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / max(1, len(frames) - 1) * 1000


def step_times(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-step milliseconds of each model and dtype."""
    frames, boxes = synthetic_frames(args.frames + 1)
    rows = []
    models = [("compact", args.compact_size, args.checkpoint), ("sam2.1-tiny", args.tiny_size, None)]
    for name, size, checkpoint in models:
        row: dict[str, Any] = {"model": name, "image_size": size, "weights": "checkpoint" if checkpoint else "random"}
        for dtype in ("float32", "bfloat16"):
            tracker = load_tracker(
                name,
                image_size=size,
                checkpoint=checkpoint,
                allow_random=True,
                config=TrackerConfig(dtype=dtype),
                device=args.device,
            )
            row["params_m"] = sum(p.numel() for p in tracker.model.parameters()) / 1e6
            row[f"{dtype}_ms"] = step_ms(tracker, frames, boxes[0])
        rows.append(row)
    return rows


def cache_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """Frames/s of the feature cache over one episode vs bare offline tracking of the same frames."""
    tracker = load_tracker(
        "compact", image_size=args.compact_size, checkpoint=args.checkpoint, allow_random=True, device=args.device
    )
    key = cache_key("compact", tracker, parse_feature_spec("pooled4"))
    frames, boxes = synthetic_frames(args.cache_frames)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        data = Path(tmp) / "ds"
        records = [
            Frame(
                rgb=f,
                depth_mm=np.zeros(FRAME_SIZE, np.uint16),
                state=np.zeros(7, np.float32),
                action=np.zeros(7, np.float32),
                ee_pose=np.zeros(7, np.float32),
                target_box=np.asarray(b, np.float32),
                target_mask=np.zeros(FRAME_SIZE, np.bool_),
                timestamp=t / 20.0,
            )
            for t, (f, b) in enumerate(zip(frames, boxes, strict=True))
        ]
        obj = ObjectRecord(
            "orange_box_1", "orange box", "orange", "box", (0.4, 0.0, 0.03), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)
        )
        with DatasetWriter(data, 20.0) as writer:
            writer.add_episode(Episode("pick the orange box", obj.instance, 0, "success", 20.0, (obj,), tuple(records)))
        decoded = list(Dataset(data).iter_frames(0))
        bare_s, cache_s = [], []
        list(tracker.track(decoded[:2], boxes[0]))  # warm-up
        for repeat in range(args.repeats):
            start = time.perf_counter()
            for _ in tracker.track(decoded, boxes[0]):
                pass
            bare_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            report = build_cache(data, tracker, key, root=Path(tmp) / f"cache-{repeat}", progress=False)
            cache_s.append(time.perf_counter() - start)
            if report.computed != 1:
                raise RuntimeError(f"the cache run computed {report.computed} episodes, expected 1")
    bare_fps, cache_fps = len(frames) / min(bare_s), len(frames) / min(cache_s)
    return {
        "model": "compact",
        "image_size": args.compact_size,
        "frames": len(frames),
        "frame_size": f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}",
        "bare_frames_per_s": bare_fps,
        "cache_frames_per_s": cache_fps,
        "ratio": cache_fps / bare_fps,
        "target": 0.9,
    }


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"streaming step, ms per frame (mean of {results['frames']} steps after the prompt; "
        f"{results['device']}, {results['threads']} threads)",
        f"{'model':<14}{'image':>6}{'params':>10}{'weights':>12}{'float32':>10}{'bfloat16':>10}",
    ]
    for r in results["step"]:
        lines.append(
            f"{r['model']:<14}{r['image_size']:>6}{r['params_m']:>9.2f}M{r['weights']:>12}"
            f"{r['float32_ms']:>10.1f}{r['bfloat16_ms']:>10.1f}"
        )
    c = results["cache"]
    lines.append(
        f"feature cache vs bare tracking ({c['model']} {c['image_size']} px, {c['frames']} frames of "
        f"{c['frame_size']}): "
        f"bare {c['bare_frames_per_s']:.1f} frames/s, cache {c['cache_frames_per_s']:.1f} frames/s, "
        f"ratio {c['ratio']:.3f} (target >= {c['target']})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--frames", type=int, default=3, help="timed steps per model and dtype (default 3)")
    parser.add_argument("--cache-frames", type=int, default=48, help="frames of the cache-ratio episode (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/cache runs, best kept (default 3)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="compact tracker weights (default random)")
    parser.add_argument("--compact-size", type=int, default=256, help="compact tracker input pixels (default 256)")
    parser.add_argument("--tiny-size", type=int, default=1024, help="SAM2.1-tiny input pixels (default 1024)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.cache_frames < 2 or args.repeats < 1:
        parser.error("--frames must be >= 1, --cache-frames >= 2, --repeats >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (valid here: cpu)")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "frames": args.frames,
        "torch": torch.__version__,
        "step": step_times(args),
        "cache": cache_ratio(args),
    }
    print(json.dumps(results, indent=2) if args.json else _table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
