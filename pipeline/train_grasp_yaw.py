"""`sam2grasp train-grasp-yaw`: fit the grasp-yaw estimator (`policy.grasp_yaw`) on a cached dataset's prompt frames.

Each episode gives one sample: the inputs from its first frame's cached extras (the tracker's mask on the frame it
was prompted on, a "+shape" feature spec) and its recorded camera, the target's catalogue shape (what its command
names, for a named estimator), and the label from its target's recorded pose and shape (symmetry order and grasp
axis, as the scripted expert grasps it). A share of the episodes is
held out, and the report gives, per symmetry order, how far the estimated axis lies from the true one on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from policy.cache_store import FeatureCache
from policy.chunks import split_by_episode
from policy.grasp_yaw import (
    FitReport,
    GraspYaw,
    GraspYawConfig,
    GraspYawError,
    GraspYawNet,
    fit_grasp_yaw,
    prompt_yaw_inputs,
    save_grasp_yaw,
    turn_to_go,
    yaw_inputs,
)


@dataclass(frozen=True)
class GraspYawSamples:
    """One sample per usable episode: inputs (N, 11), orders (N,), axes (N,) radians, episodes (N,) indices, and
    shapes (N,) the targets' catalogue shapes."""

    inputs: npt.NDArray[np.float32]
    orders: npt.NDArray[np.int64]
    axes: npt.NDArray[np.float64]
    episodes: npt.NDArray[np.int64]
    shapes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.shapes) != len(self.orders):
            raise GraspYawError(f"{len(self.orders)} samples need as many shapes, got {len(self.shapes)}")


def target_label(shape: str, quat: tuple[float, float, float, float]) -> tuple[int, float]:
    """(symmetry order, grasp axis in radians) of a catalogue `shape` standing with orientation `quat` (w, x, y, z)."""
    from robot.sim.catalogue import SHAPES, parse_shape

    spec = SHAPES[parse_shape(shape)]
    if spec.yaw_symmetric:
        return 0, 0.0
    w, x, y, z = quat
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return spec.grasp_order, yaw + spec.grasp_axis_yaw


def grasp_yaw_samples(
    data: Path, features: str | None = None, cache: FeatureCache | None = None, *, mask: str = "tracked"
) -> GraspYawSamples:
    """The samples of every cached episode of `data` (`cache`, else its cache of spec `features`, or the only
    one) whose target is visible on the first frame, with the moments of `mask` (`GraspYawConfig.mask`: "refined"
    segments each episode's first recorded frame from its recorded target box); a GraspYawError when the spec has
    no shape moments or nothing is usable."""
    from pipeline.dataset.layout import FRONT_KEY, VIDEO_PATH, episode_path
    from pipeline.dataset.reader import Dataset
    from pipeline.dataset.video import iter_rgb_video
    from pipeline.train_policy import find_cache

    source = GraspYawConfig(mask=mask)  # an unknown mask source is refused here, naming the valid ones
    cache = cache or find_cache(data, features)
    if not cache.spec.shape:
        raise GraspYawError(f"cache {cache.path} ({cache.spec.name}) has no shape moments; cache a '+shape' spec")
    dataset = Dataset(data)
    rows: list[tuple[npt.NDArray[np.float32], int, float, int, str]] = []
    for e in cache.episodes:
        meta = dataset.episode_meta(e)
        if meta.camera is None:
            raise GraspYawError(f"episode {e} of {data} has no camera record, which the table position needs")
        record = meta.target_object()
        if record is None:
            raise GraspYawError(f"episode {e} of {data}: its target {meta.target!r} is not among its objects")
        extras = cache.load(e).extras[0]
        try:
            if mask == "tracked":
                inputs = yaw_inputs(extras, meta.camera)
            else:
                frames = iter_rgb_video(episode_path(dataset.root, VIDEO_PATH, e, FRONT_KEY))
                first = next(iter(frames))
                box = dataset.load_episode(e, images=False).target_box[0]
                inputs = prompt_yaw_inputs(source, extras, meta.camera, first, box)
        except GraspYawError:
            continue  # the target is hidden on the prompt frame: nothing to read
        order, axis = target_label(record.shape, record.quat)
        rows.append((inputs, order, axis, e, record.shape))
    if len(rows) < 2:
        raise GraspYawError(f"{data} gives {len(rows)} usable episodes; at least 2 are needed")
    return GraspYawSamples(
        inputs=np.stack([r[0] for r in rows]),
        orders=np.array([r[1] for r in rows], dtype=np.int64),
        axes=np.array([r[2] for r in rows], dtype=np.float64),
        episodes=np.array([r[3] for r in rows], dtype=np.int64),
        shapes=tuple(r[4] for r in rows),
    )


@dataclass(frozen=True)
class GraspYawTrainReport:
    """What `train_grasp_yaw` measured: samples, held-out order accuracy, and per symmetry order ("2", "4") the
    held-out axis error in degrees (median and 90th percentile, modulo the symmetry) and the count."""

    out: Path
    train_samples: int
    val_samples: int
    val_order_accuracy: float | None
    val_axis_error_deg: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def axis_error(estimate: float, truth: float, order: int) -> float:
    """Radians between two axes modulo the symmetry period 2π / order (order 2 or 4), within [0, π / order]: the
    size of the turn from one to the nearest equivalent of the other."""
    return abs(turn_to_go(estimate, order, truth))


def train_grasp_yaw(
    data: Path,
    out: Path,
    *,
    features: str | None = None,
    config: GraspYawConfig | None = None,
    val_fraction: float = 0.1,
    steps: int = 3000,
    seed: int = 0,
) -> GraspYawTrainReport:
    """Fit on `data`'s episodes less a held-out share, save to `out` (safetensors), and measure on the held-out."""
    if not 0.0 <= val_fraction < 1.0:
        raise GraspYawError(f"val_fraction must be within [0, 1), got {val_fraction}")
    samples = grasp_yaw_samples(data, features, mask=(config or GraspYawConfig()).mask)
    rows_train, rows_val = split_by_episode(range(len(samples.orders)), val_fraction, seed)
    train, val = np.array(rows_train, dtype=np.int64), np.array(rows_val, dtype=np.int64)
    net, fit = _fit(samples, train, config, steps, seed)
    save_grasp_yaw(out, net)
    accuracy, errors = held_out_errors(samples, val, [net.estimate(samples.inputs[i], samples.shapes[i]) for i in val])
    return GraspYawTrainReport(
        out=out,
        train_samples=len(train),
        val_samples=len(val),
        val_order_accuracy=accuracy,
        val_axis_error_deg=errors,
        seconds=fit.seconds,
    )


def _fit(
    samples: GraspYawSamples, rows: npt.NDArray[np.int64], config: GraspYawConfig | None, steps: int, seed: int
) -> tuple[GraspYawNet, FitReport]:
    """An estimator fitted on the samples at `rows` (with their shapes, for a named config)."""
    return fit_grasp_yaw(
        samples.inputs[rows],
        samples.orders[rows],
        samples.axes[rows],
        config,
        shapes=[samples.shapes[i] for i in rows],
        steps=steps,
        seed=seed,
    )


def held_out_errors(
    samples: GraspYawSamples, rows: npt.NDArray[np.int64], estimates: list[GraspYaw]
) -> tuple[float | None, dict[str, dict[str, float]]]:
    """Order accuracy (None without rows) and, per true symmetry order ("2", "4"), the axis error in degrees
    (median, p90, count) of `estimates` of the samples at `rows`."""
    errors: dict[int, list[float]] = {2: [], 4: []}
    right = 0
    for i, est in zip(rows, estimates, strict=True):
        truth = int(samples.orders[i])
        right += est.order == truth
        if truth in errors:
            errors[truth].append(math.degrees(axis_error(est.axis(truth), float(samples.axes[i]), truth)))
    by_order = {
        str(o): {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "count": float(len(v))}
        for o, v in errors.items()
        if v
    }
    return (right / len(rows) if len(rows) else None), by_order


@dataclass(frozen=True)
class CrossFit:
    """Estimates for a head's training episodes: `estimates` maps each usable episode to the estimate of the
    fold estimator that did not see it; `final` is fitted on every sample (the one saved with the head);
    `order_accuracy` and `axis_error_deg` measure the out-of-fold estimates (`held_out_errors`; a named
    estimator's with each target's shape named), and for a named estimator `unnamed` holds the same two
    measurements of its out-of-fold estimates with no shape named (None for an unnamed one)."""

    estimates: dict[int, GraspYaw]
    final: GraspYawNet
    folds: int
    order_accuracy: float | None
    axis_error_deg: dict[str, dict[str, float]]
    seconds: float
    unnamed: tuple[float | None, dict[str, dict[str, float]]] | None = None

    def summary(self) -> dict[str, object]:
        """The measurements as JSON values (no estimates, no weights)."""
        out: dict[str, object] = {
            "folds": self.folds,
            "samples": len(self.estimates),
            "named": self.final.config.named,
            "out_of_fold_order_accuracy": self.order_accuracy,
            "out_of_fold_axis_error_deg": self.axis_error_deg,
            "seconds": self.seconds,
        }
        if self.unnamed is not None:
            out["out_of_fold_unnamed_order_accuracy"] = self.unnamed[0]
            out["out_of_fold_unnamed_axis_error_deg"] = self.unnamed[1]
        return out


def cross_fit(
    samples: GraspYawSamples,
    *,
    folds: int = 5,
    seed: int = 0,
    config: GraspYawConfig | None = None,
    steps: int = 3000,
) -> CrossFit:
    """Out-of-fold estimates of every sample and an estimator fitted on all of them.

    A head that learned from estimates its own estimator had fitted would meet noisier ones at run time, on scenes
    the estimator never saw; out-of-fold estimates carry the error a new scene's estimate has, so the head learns
    how far to trust them.
    """
    import time

    n = len(samples.orders)
    if not 2 <= folds <= n:
        raise GraspYawError(f"folds must be within 2..{n} (the samples), got {folds}")
    start = time.perf_counter()
    fold = np.random.default_rng(seed).permutation(n) % folds
    estimates: list[GraspYaw | None] = [None] * n
    unnamed: list[GraspYaw | None] = [None] * n
    for k in range(folds):
        net, _ = _fit(samples, np.nonzero(fold != k)[0], config, steps, seed)
        for i in np.nonzero(fold == k)[0]:
            estimates[i] = net.estimate(samples.inputs[i], samples.shapes[i])
            if net.config.named:  # an unnamed estimator ignores the shape: its estimates are the same
                unnamed[i] = net.estimate(samples.inputs[i], None)
    final, _ = _fit(samples, np.arange(n), config, steps, seed)
    done = [e for e in estimates if e is not None]
    accuracy, errors = held_out_errors(samples, np.arange(n), done)
    without_names = None
    if final.config.named:
        without_names = held_out_errors(samples, np.arange(n), [e for e in unnamed if e is not None])
    return CrossFit(
        estimates={int(e): est for e, est in zip(samples.episodes, done, strict=True)},
        final=final,
        folds=folds,
        order_accuracy=accuracy,
        axis_error_deg=errors,
        seconds=time.perf_counter() - start,
        unnamed=without_names,
    )
