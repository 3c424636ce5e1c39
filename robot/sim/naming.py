"""Commands that name a scene's target the way a person would, with a spatial word when two objects share a name."""

from __future__ import annotations

import numpy as np

from robot.intrinsics import D435_COLOUR_640x480, look_at, project
from robot.sim.scene import SceneError, SceneSpec

#: Image-x separation (pixels at 640x480) above which two same-named objects are told apart as left/right;
#: below it they are told apart as front/back (nearer to / farther from the camera).
LEFT_RIGHT_MIN_PX = 40.0


def spatial_word(scene: SceneSpec, instance: str) -> str | None:
    """The word that singles out `instance` among objects of the same name ("left", "right", "front", "back"),
    or None when its name is unique in the scene. As seen from the fixed camera."""
    target = scene.find(instance)
    twins = [o for o in scene.objects if o.kind == target.kind]
    if len(twins) == 1:
        return None
    rot = look_at(scene.camera.position, scene.camera.target)
    centres = np.array([[o.x, o.y, o.kind.spec.half_extents[2]] for o in twins])
    uv = project(centres, scene.camera.position, rot, D435_COLOUR_640x480)
    idx = next(i for i, o in enumerate(twins) if o.instance == instance)
    order = np.argsort(uv[:, 0])
    gaps = np.diff(uv[order, 0])
    if len(twins) <= 3 and float(np.min(gaps)) >= LEFT_RIGHT_MIN_PX:
        words = ("left", "right") if len(twins) == 2 else ("left", "middle", "right")
        return words[int(np.flatnonzero(order == idx)[0])]
    if len(twins) == 2:
        dist = np.linalg.norm(centres - np.asarray(scene.camera.position), axis=1)
        return "front" if dist[idx] == np.min(dist) else "back"
    raise SceneError(
        f"{len(twins)} objects named {target.name!r} cannot be told apart by left/middle/right or front/back; "
        "use at most two, or three spread across the view"
    )


def target_phrase(scene: SceneSpec, instance: str) -> str:
    """Noun phrase for the target, e.g. "red cup" or "left red cup"."""
    obj = scene.find(instance)
    word = spatial_word(scene, instance)
    return obj.name if word is None else f"{word} {obj.name}"


def pick_command(scene: SceneSpec, instance: str) -> str:
    """The command a person would give to pick `instance`: "pick the left red cup"."""
    return f"pick the {target_phrase(scene, instance)}"
