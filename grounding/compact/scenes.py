"""Rendered scenes with every object's box, colour and shape: the compact grounder's training and test data.

Each scene is drawn from its seed by the simulated cell's scene sampler and rendered from the fixed camera twice:
with the arm at home (where a pick starts and where commands are grounded) and part-way through the scripted
expert's pick of a random object (so that an arm in view, covering objects and holding one, is seen in training,
as it is when a command is grounded again mid-task). Shards are compressed
`.npz` files of plain arrays (no pickles).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from robot.masks import mask_box
from robot.sim.catalogue import Colour, Shape
from robot.sim.config import CellConfig
from robot.sim.env import Observation, PickEnv, ResetOptions
from robot.sim.expert import ScriptedExpert
from robot.sim.scene import MAX_OBJECTS, SceneRequest, SceneSpec, sample_scene

#: Colour and shape class indices used by the grounder's heads (catalogue order).
COLOURS: tuple[Colour, ...] = tuple(Colour)
SHAPES: tuple[Shape, ...] = tuple(Shape)
#: Objects showing fewer pixels than this are "don't care": neither positives nor negatives in training.
MIN_VISIBLE_PX = 12
#: Chance that a scene holds two objects of the same name (commands about them need spatial words).
DUPLICATE_PROB = 0.5


@dataclass(frozen=True)
class LabelledImage:
    """One render and its objects.

    image: (H, W, 3) uint8; boxes: (N, 4) float32 pixels x0, y0, x1, y1 of the visible part; colours, shapes:
    (N,) int64 class indices into COLOURS / SHAPES; visible_px: (N,) pixels showing each object; seed: the scene
    seed; view: 0 arm at home, 1 arm moved.
    """

    image: npt.NDArray[np.uint8]
    boxes: npt.NDArray[np.float32]
    colours: npt.NDArray[np.int64]
    shapes: npt.NDArray[np.int64]
    visible_px: npt.NDArray[np.int64]
    seed: int
    view: int


def scene_for(seed: int) -> SceneSpec:
    """The scene of `seed` as the grounder's data draws it (3–6 objects, duplicates half the time)."""
    return sample_scene(seed, SceneRequest(n_objects=(3, MAX_OBJECTS), duplicate_prob=DUPLICATE_PROB))


def label_observation(obs: Observation, scene: SceneSpec, seed: int, view: int) -> LabelledImage:
    """Boxes, classes and visible pixels of every object in a rendered observation."""
    if obs.rgb is None or obs.instance_map is None:
        raise ValueError("the observation has no image or instance map: render with segmentation on")
    n = len(scene.objects)
    boxes = np.zeros((n, 4), np.float32)
    visible = np.zeros(n, np.int64)
    for i in range(n):
        mask = obs.instance_map == i
        visible[i] = int(mask.sum())
        if visible[i]:
            boxes[i] = mask_box(mask)
    colours = np.array([COLOURS.index(o.kind.colour) for o in scene.objects], np.int64)
    shapes = np.array([SHAPES.index(o.kind.shape) for o in scene.objects], np.int64)
    return LabelledImage(obs.rgb.copy(), boxes, colours, shapes, visible, seed, view)


def render_scene(env: PickEnv, seed: int, moved_view: bool = True) -> list[LabelledImage]:
    """Render scene `seed` with the arm at home and (optionally) part-way through a scripted pick."""
    scene = scene_for(seed)
    obs, _ = env.reset(seed, ResetOptions(scene=scene))
    views = [label_observation(obs, scene, seed, 0)]
    if moved_view:
        rng = np.random.default_rng([seed, 7])
        expert = ScriptedExpert(env)
        expert.reset(seed)
        for _ in range(int(rng.integers(15, 70))):
            obs, _, terminated, truncated, _ = env.step(expert.act().executed)
            if terminated or truncated:
                break
        views.append(label_observation(obs, scene, seed, 1))
    return views


def iter_rendered(
    seeds: range, width: int = 320, height: int = 240, moved_view: bool = True
) -> Iterator[LabelledImage]:
    """Render every scene of `seeds` at `width` x `height` pixels."""
    env = PickEnv(CellConfig(image_width=width, image_height=height, depth=False))
    try:
        for seed in seeds:
            yield from render_scene(env, seed, moved_view)
    finally:
        env.close()


def save_shard(path: Path, items: list[LabelledImage]) -> None:
    """Write `items` to one compressed shard (objects padded to MAX_OBJECTS; `count` holds the real number)."""
    k = len(items)
    h, w, _ = items[0].image.shape
    images = np.zeros((k, h, w, 3), np.uint8)
    boxes = np.zeros((k, MAX_OBJECTS, 4), np.float32)
    colours = np.full((k, MAX_OBJECTS), -1, np.int64)
    shapes = np.full((k, MAX_OBJECTS), -1, np.int64)
    visible = np.zeros((k, MAX_OBJECTS), np.int64)
    count = np.zeros(k, np.int64)
    for j, it in enumerate(items):
        n = len(it.boxes)
        images[j], boxes[j, :n], colours[j, :n], shapes[j, :n] = it.image, it.boxes, it.colours, it.shapes
        visible[j, :n], count[j] = it.visible_px, n
    seeds = np.array([it.seed for it in items], np.int64)
    views = np.array([it.view for it in items], np.int64)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        images=images,
        boxes=boxes,
        colours=colours,
        shapes=shapes,
        visible_px=visible,
        count=count,
        seeds=seeds,
        views=views,
    )
    tmp.replace(path)


def load_shard(path: Path) -> list[LabelledImage]:
    """Read a shard written by `save_shard` (no pickles are allowed in it)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}  # each read decompresses: read every array once
    out = []
    for j in range(len(arrays["count"])):
        n = int(arrays["count"][j])
        out.append(
            LabelledImage(
                arrays["images"][j].copy(),
                arrays["boxes"][j, :n].copy(),
                arrays["colours"][j, :n].copy(),
                arrays["shapes"][j, :n].copy(),
                arrays["visible_px"][j, :n].copy(),
                int(arrays["seeds"][j]),
                int(arrays["views"][j]),
            )
        )
    return out


#: First scene seed of the grounder's training data (evaluation scenes start at robot.sim.scene.EVAL_SEED_BASE).
TRAIN_SEED = 300_000
#: Scenes per shard file.
SHARD_SCENES = 50


def shard_path(data: Path, index: int) -> Path:
    """The file of shard `index` in `data`."""
    return data / f"scenes_{index:05d}.npz"


def render_dataset(
    data: Path, scenes: int, seed: int = TRAIN_SEED, width: int = 320, height: int = 240, progress: bool = True
) -> list[Path]:
    """Render `scenes` scenes from `seed` on into shards of `data`; shards already written are kept (resume).

    Returns every shard path. Each shard holds SHARD_SCENES scenes, two views each.
    """
    if scenes < 1:
        raise ValueError(f"scenes must be a positive integer, got {scenes}")
    data.mkdir(parents=True, exist_ok=True)
    n_shards = -(-scenes // SHARD_SCENES)
    paths = [shard_path(data, i) for i in range(n_shards)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    from tqdm import tqdm

    for i in tqdm(todo, desc="rendering scenes", unit="shard", disable=not progress):
        first = seed + i * SHARD_SCENES
        last = min(seed + scenes, first + SHARD_SCENES)
        save_shard(paths[i], list(iter_rendered(range(first, last), width, height)))
    return paths
