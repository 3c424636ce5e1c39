"""Grounding speed: time per command of the compact grounder on simulated scenes, and Grounding DINO's time per
image.

Usage: python bench/grounding.py [--json] [--seeds N] [--threads T] [--compact DIR] [--random-compact]
       [--gpu] [--cpu-dino] [--dino-images N] [--bf16]

(i) Compact grounder (default `models/grounder_compact`, or `--compact DIR`): renders the scenes of seeds
10_000_000.. (N seeds, default 20, two views each, 320x240) and times, per command, the whole path a command takes
after the camera: `GroundingService.parse` + `GroundingService.locate` (detector, phrase scoring, spatial words,
refusals). Commands name each visible object ("pick the red cup"; "pick the leftmost red cup" for duplicates);
top-1 is a returned box with IoU ≥ 0.5 to the object's true box. Target (ARCHITECTURE §5): ≤ 100 ms per command
on 2 CPU threads. A missing model is reported as missing; `--random-compact` times the default compact
architecture with random weights instead (speed only: no accuracy, and locate then mostly ends in a no-match,
which runs the detector a second time to list what it sees).

(ii) `--gpu`: Grounding DINO with the `IDEA-Research/grounding-dino-tiny` architecture (Swin-T: embed 96, depths
[2, 2, 6, 2], heads [3, 6, 12, 24], window 7; BERT-base text; d_model 256; 6 encoder + 6 decoder layers; 900
queries) and RANDOM weights (the real ones cannot be downloaded here; speed does not depend on them), on CUDA when
available, on the CPU with `--cpu-dino` (slow: seconds per image). Input: a 640x480 image resized by the model's
processor (shorter side 800 pixels) and a five-token prompt. Prints ms per image (fp32, and bf16 autocast on CUDA
with `--bf16`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Run as a script, this file's folder leads sys.path and this file's name would hide the `grounding` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
import numpy.typing as npt
import torch

TARGET_MS = 100.0
FIRST_SEED = 10_000_000


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "max_ms": float(a.max())}  # fmt: skip


def _commands(item: Any) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(command, true box) for every visible object: its name, or the leftmost of a duplicated name."""
    from grounding.compact.scenes import COLOURS, MIN_VISIBLE_PX, SHAPES

    names: dict[str, list[int]] = {}  # name → indices of the visible objects holding it
    for i in np.flatnonzero(item.visible_px >= MIN_VISIBLE_PX):
        names.setdefault(f"{COLOURS[int(item.colours[i])].value} {SHAPES[int(item.shapes[i])].value}", []).append(
            int(i)
        )
    out = []
    for name, idx in names.items():
        k = min(idx, key=lambda j: float(item.boxes[j][0] + item.boxes[j][2]))  # the only one, or the leftmost
        b = item.boxes[k]
        command = f"pick the {name}" if len(idx) == 1 else f"pick the leftmost {name}"
        out.append((command, (float(b[0]), float(b[1]), float(b[2]), float(b[3]))))
    return out


def bench_compact(directory: Path | None, random_weights: bool, seeds: int) -> dict[str, Any]:
    """Time parse + locate per command over rendered scenes; {"status": "missing", ...} when there is no model."""
    import robot.sim  # noqa: F401  (chooses MUJOCO_GL before mujoco is imported)
    from grounding.compact.backend import DEFAULT_MODEL, CompactGrounder
    from grounding.compact.config import DetectorConfig
    from grounding.compact.model import CompactDetector
    from grounding.compact.scenes import iter_rendered
    from grounding.detection import box_iou
    from grounding.errors import GroundingError
    from grounding.service import GroundingService

    path = directory or DEFAULT_MODEL
    if random_weights:
        torch.manual_seed(0)
        grounder = CompactGrounder(CompactDetector(DetectorConfig()))
        weights = "random weights (default DetectorConfig): speed only"
    elif not path.is_dir():
        return {"status": "missing", "path": str(path), "note": "train it (models/README.md) or pass --compact DIR"}
    else:
        grounder = CompactGrounder.load(path)
        weights = f"trained: {path}"
    service = GroundingService(grounder)
    t0 = time.perf_counter()
    items = list(iter_rendered(range(FIRST_SEED, FIRST_SEED + seeds)))
    render_s = time.perf_counter() - t0
    jobs = [(item.image, cmd, box) for item in items for cmd, box in _commands(item)]
    for image, cmd, _ in jobs[:3]:  # warm-up outside the timed runs
        with contextlib.suppress(GroundingError):
            service.locate(image, service.parse(cmd)[0])
    ms: list[float] = []
    outcomes: Counter[str] = Counter()
    for image, cmd, truth in jobs:
        start = time.perf_counter()
        try:
            found = service.locate(image, service.parse(cmd)[0])
            outcome = "top1" if box_iou(found.box_xyxy_px, truth) >= 0.5 else "wrong_box"
        except GroundingError as e:
            outcome = e.type
        ms.append((time.perf_counter() - start) * 1000.0)
        outcomes[outcome] += 1
    ground_ms = []  # the backend call alone, the bulk of a command that finds its object
    for image, cmd, _ in jobs:
        text = service.parse(cmd)[0].target.text
        start = time.perf_counter()
        grounder.ground(image, text)
        ground_ms.append((time.perf_counter() - start) * 1000.0)
    stats = _percentiles(ms)
    return {
        "status": "measured",
        "weights": weights,
        "seeds": [FIRST_SEED, FIRST_SEED + seeds - 1],
        "images": len(items),
        "image_size": list(items[0].image.shape[1::-1]) if items else None,
        "commands": len(jobs),
        "render_s": render_s,
        **stats,
        "ground_only": _percentiles(ground_ms),
        "outcomes": dict(outcomes),
        "top1": None if random_weights else outcomes["top1"] / max(1, len(jobs)),
        "ratio_p50_to_target": stats["p50_ms"] / TARGET_MS,
        "ratio_p95_to_target": stats["p95_ms"] / TARGET_MS,
    }


def dino_tiny_config() -> Any:
    """A transformers GroundingDinoConfig with grounding-dino-tiny's architecture."""
    tf: Any = importlib.import_module("transformers")
    swin = tf.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                         out_indices=[2, 3, 4])  # fmt: skip
    bert = tf.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072)  # fmt: skip
    return tf.GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=256, encoder_layers=6, decoder_layers=6,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, encoder_attention_heads=8, decoder_attention_heads=8,
        num_queries=900, num_feature_levels=4, two_stage=True, max_text_len=256,
    )  # fmt: skip


def bench_dino(device: str, images: int, bf16: bool) -> dict[str, Any]:
    """ms per image of the random-weight tiny architecture on `device` (fp32, and bf16 autocast if asked)."""
    tf: Any = importlib.import_module("transformers")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = tf.GroundingDinoForObjectDetection(dino_tiny_config()).eval().to(device)
    build_s = time.perf_counter() - t0
    processor = tf.GroundingDinoImageProcessorPil()
    image: npt.NDArray[np.uint8] = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pixels = processor(images=image, return_tensors="pt")
    ids = torch.tensor([[101, 2417, 10132, 1012, 102]])  # [CLS] red cup . [SEP] in BERT-base's vocabulary
    inputs = {"pixel_values": pixels["pixel_values"], "pixel_mask": pixels["pixel_mask"], "input_ids": ids,
              "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
    inputs = {k: v.to(device) for k, v in inputs.items()}

    def timed(autocast: bool) -> list[float]:
        out = []
        for i in range(images + 1):  # the first run warms up
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=autocast):
                model(**inputs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                out.append((time.perf_counter() - start) * 1000.0)
        return out

    result: dict[str, Any] = {
        "status": "measured",
        "device": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "weights": "random (architecture of IDEA-Research/grounding-dino-tiny): speed only",
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "input_hw": list(inputs["pixel_values"].shape[-2:]),
        "build_s": build_s,
        "images": images,
        "fp32": _percentiles(timed(False)),
    }
    if bf16 and device.startswith("cuda"):
        result["bf16_autocast"] = _percentiles(timed(True))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--seeds", type=int, default=20, help="scenes to render from seed 10_000_000 (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--compact", type=Path, default=None, help="compact grounder directory (default: shipped)")
    parser.add_argument("--random-compact", action="store_true", help="time the compact architecture, random weights")
    parser.add_argument("--gpu", action="store_true", help="also time Grounding DINO tiny (random weights) on CUDA")
    parser.add_argument("--cpu-dino", action="store_true", help="time Grounding DINO tiny on the CPU (slow)")
    parser.add_argument("--dino-images", type=int, default=None, help="timed DINO images (default 10 CUDA, 2 CPU)")
    parser.add_argument("--bf16", action="store_true", help="also time DINO under bf16 autocast (CUDA)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.threads < 1 or (args.dino_images is not None and args.dino_images < 1):
        parser.error("--seeds, --threads and --dino-images must be at least 1")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "target_ms": TARGET_MS,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "compact": bench_compact(args.compact, args.random_compact, args.seeds),
    }
    if args.gpu or args.cpu_dino:
        if args.cpu_dino:
            report["dino"] = bench_dino("cpu", args.dino_images or 2, False)
        elif torch.cuda.is_available():
            report["dino"] = bench_dino("cuda", args.dino_images or 10, args.bf16)
        else:
            report["dino"] = {"status": "no CUDA device here; add --cpu-dino to time it on the CPU (seconds/image)"}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def _row(name: str, r: dict[str, float], unit: str) -> str:
    return (
        f"    {name:<14} mean {r['mean_ms']:8.1f}  p50 {r['p50_ms']:8.1f}  p95 {r['p95_ms']:8.1f}  "
        f"max {r['max_ms']:8.1f}  ms {unit}"
    )


def print_report(report: dict[str, Any]) -> None:
    """The report as a small table."""
    load = report["load_average_1min"]
    print(f"grounding, {report['threads']} torch threads, {report['cpus']} CPUs, load average {load:.2f}")
    c = report["compact"]
    if c["status"] != "measured":
        print(f"  compact grounder: MISSING ({c['path']}): {c['note']}")
    else:
        w, h = c["image_size"]
        print(f"  compact grounder ({c['weights']}): {c['commands']} commands on {c['images']} rendered images {w}x{h}")
        print(f"    (rendering took {c['render_s']:.1f} s, not timed; timed: parse + locate)")
        print(_row("per command", c, "per command"))
        print(_row("ground() only", c["ground_only"], "per call"))
        top1 = "n/a (random weights)" if c["top1"] is None else f"{c['top1']:.3f}"
        print(f"    top-1 {top1}  outcomes {c['outcomes']}")
        print(
            f"    ratio to the {report['target_ms']:.0f} ms target: p50 {c['ratio_p50_to_target']:.3f}  "
            f"p95 {c['ratio_p95_to_target']:.3f}  (≤ 1 meets it)"
        )
    d = report.get("dino")
    if d is None:
        return
    if d["status"] != "measured":
        print(f"  grounding dino tiny: {d['status']}")
        return
    hw = d["input_hw"]
    print(f"  grounding dino tiny ({d['weights']}), {d['parameters_m']:.1f} M parameters, on {d['device']}, "
          f"input {hw[1]}x{hw[0]}, {d['images']} timed images (build {d['build_s']:.1f} s):")  # fmt: skip
    for key in ("fp32", "bf16_autocast"):
        if key in d:
            print(_row(key, d[key], "per image"))


if __name__ == "__main__":
    sys.exit(main())
