"""Ground one command in a seeded simulated scene: what `sam2grasp ground` prints, for checking by hand."""

from __future__ import annotations

from typing import Any

from grounding.compact.scenes import label_observation
from grounding.errors import GroundingError
from grounding.service import load_grounding_service
from robot.sim.config import CellConfig
from robot.sim.env import PickEnv, ResetOptions
from robot.sim.scene import SceneRequest, sample_scene


def ground_in_scene(
    command: str,
    scene_seed: int,
    n_objects: tuple[int, int] = (3, 6),
    *,
    backend: str = "compact",
    model: str | None = None,
    width: int = 320,
    height: int = 240,
) -> dict[str, Any]:
    """Render scene `scene_seed` with the arm at home, ground the first pick of `command` in it.

    Returns `objects` (the simulator's objects: `name`, `instance`, `box` pixels or null when hidden), `target`
    (`name` the phrase, `box`, `score`; null on error), `picks` (the parsed picks) and `error` (null, or `type`,
    `message`, `candidates`).
    """
    scene = sample_scene(scene_seed, SceneRequest(n_objects=n_objects, duplicate_prob=0.5))
    with PickEnv(CellConfig(image_width=width, image_height=height, depth=False)) as env:
        obs, _ = env.reset(scene_seed, ResetOptions(scene=scene))
    labels = label_observation(obs, scene, scene_seed, view=0)
    objects = [
        {
            "name": o.name,
            "instance": o.instance,
            "box": [round(float(v), 1) for v in labels.boxes[i]] if labels.visible_px[i] else None,
        }
        for i, o in enumerate(scene.objects)
    ]
    service = load_grounding_service(backend, model=model)
    result: dict[str, Any] = {"command": command, "scene_seed": scene_seed, "objects": objects}
    try:
        picks = service.parse(command)
        result["picks"] = [q.describe() for q in picks]
        det = service.locate(labels.image, picks[0])
        result["target"] = {"name": det.phrase, "box": [round(v, 1) for v in det.box_xyxy_px], "score": det.score}
        result["error"] = None
    except GroundingError as e:
        result.setdefault("picks", [])
        result["target"] = None
        result["error"] = e.to_json()
    return result
