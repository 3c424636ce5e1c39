"""Scene sampling, scene requests, object-count parsing and the commands that name a target."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from robot.intrinsics import D435_COLOUR_640x480, look_at, project
from robot.sim.catalogue import UnknownObjectError, parse_object_name
from robot.sim.naming import LEFT_RIGHT_MIN_PX, pick_command, spatial_word, target_phrase
from robot.sim.scene import (
    CLEARANCE,
    WORKSPACE_X,
    WORKSPACE_Y,
    SceneError,
    SceneRequest,
    SceneSpec,
    parse_count_range,
    sample_scene,
)


def test_same_seed_same_scene() -> None:
    assert sample_scene(5) == sample_scene(5)
    assert sample_scene(5) != sample_scene(6)
    request = SceneRequest(names=("red cup", "blue cube"))
    assert sample_scene(9, request) == sample_scene(9, request)


def test_scenes_hold_3_to_6_separated_objects_in_the_workspace() -> None:
    counts: Counter[int] = Counter()
    for seed in range(200):
        scene = sample_scene(seed)
        n = len(scene.objects)
        counts[n] += 1
        assert 3 <= n <= 6
        for obj in scene.objects:
            assert WORKSPACE_X[0] <= obj.x - obj.radius
            assert obj.x + obj.radius <= WORKSPACE_X[1]
            assert WORKSPACE_Y[0] <= obj.y - obj.radius
            assert obj.y + obj.radius <= WORKSPACE_Y[1]
            assert -math.pi <= obj.yaw <= math.pi
            assert all(0.0 <= c <= 1.0 for c in obj.rgb)
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                gap = math.hypot(a.x - b.x, a.y - b.y) - a.radius - b.radius
                assert gap >= CLEARANCE - 1e-12, f"seed {seed}: {a.instance} and {b.instance} {gap:.4f} m apart"
        assert len({o.instance for o in scene.objects}) == n
    assert set(counts) == {3, 4, 5, 6}  # every count occurs


def test_duplicates_occur_at_about_duplicate_prob() -> None:
    for prob in (0.0, 0.3, 1.0):
        request = SceneRequest(duplicate_prob=prob)
        with_twins = 0
        for seed in range(300):
            scene = sample_scene(seed, request)
            names = Counter(o.name for o in scene.objects)
            assert max(names.values()) <= 2
            with_twins += int(max(names.values()) == 2)
            instances = [o.instance for o in scene.objects]
            assert len(set(instances)) == len(instances)
        assert with_twins / 300 == pytest.approx(prob, abs=0.08)


def test_twins_get_distinct_instance_ids() -> None:
    scene = sample_scene(0, SceneRequest(names=("red cup", "red cup", "blue ball")))
    assert [o.instance for o in scene.objects] == ["red_cup_0", "red_cup_1", "blue_ball_0"]
    assert [o.name for o in scene.instances_named("red cup")] == ["red cup", "red cup"]
    assert scene.find("red_cup_1").name == "red cup"


def test_requested_names_are_the_scene() -> None:
    names = ("white box", "black ball", "purple can", "orange cup", "yellow cube", "green cube")
    scene = sample_scene(4, SceneRequest(names=names))
    assert tuple(o.name for o in scene.objects) == names


def test_find_unknown_instance_lists_the_objects() -> None:
    scene = sample_scene(0, SceneRequest(names=("red cup", "blue ball")))
    with pytest.raises(UnknownObjectError, match="red_cup_0, blue_ball_0"):
        scene.find("green_cube_0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_objects": (0, 3)}, "object count range"),
        ({"n_objects": (5, 7)}, "object count range"),
        ({"n_objects": (4, 3)}, "object count range"),
        ({"names": ("red cup",) * 7}, "at most 6"),
        ({"duplicate_prob": 1.5}, "duplicate_prob"),
        ({"camera_jitter": -0.01}, "camera_jitter"),
    ],
)
def test_bad_scene_requests(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SceneError, match=message):
        SceneRequest(**kwargs)  # type: ignore[arg-type]


def test_unknown_colour_lists_the_colours() -> None:
    with pytest.raises(UnknownObjectError) as err:
        SceneRequest(names=("pink cup",))
    for colour in ("red", "green", "blue", "yellow", "orange", "purple", "white", "black"):
        assert colour in str(err.value)
    with pytest.raises(UnknownObjectError, match="cube"):
        SceneRequest(names=("red mug",))
    with pytest.raises(UnknownObjectError, match="colour"):
        parse_object_name("cup")


def test_negative_seed_is_an_error() -> None:
    with pytest.raises(SceneError, match="seed"):
        sample_scene(-1)


@pytest.mark.parametrize(("text", "expected"), [("3-6", (3, 6)), ("4", (4, 4)), ("1-6", (1, 6)), ("2-2", (2, 2))])
def test_parse_count_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_count_range(text) == expected


@pytest.mark.parametrize("text", ["x", "7", "0", "6-3", "1-2-3", "", "3-", "2-9"])
def test_parse_count_range_errors(text: str) -> None:
    with pytest.raises(SceneError, match=r"1\.\.6"):
        parse_count_range(text)


# ------------------------------------------------------------------ naming


def test_unique_name_has_no_spatial_word() -> None:
    scene = sample_scene(0, SceneRequest(names=("red cup", "blue cube", "green ball")))
    assert spatial_word(scene, "red_cup_0") is None
    assert target_phrase(scene, "red_cup_0") == "red cup"
    assert pick_command(scene, "red_cup_0") == "pick the red cup"


def _image_x(scene: SceneSpec) -> dict[str, float]:
    rot = look_at(scene.camera.position, scene.camera.target)
    centres = np.array([[o.x, o.y, o.kind.spec.half_extents[2]] for o in scene.objects])
    uv = project(centres, scene.camera.position, rot, D435_COLOUR_640x480)
    return {o.instance: float(u) for o, u in zip(scene.objects, uv[:, 0], strict=True)}


def _camera_distance(scene: SceneSpec, instance: str) -> float:
    obj = scene.find(instance)
    return float(np.linalg.norm(np.array([obj.x, obj.y, obj.kind.spec.half_extents[2]]) - scene.camera.position))


def test_twins_are_told_apart_by_position() -> None:
    seen: Counter[str | None] = Counter()
    for seed in range(60):
        scene = sample_scene(seed, SceneRequest(names=("red cup", "blue cube", "red cup")))
        words = {i: spatial_word(scene, i) for i in ("red_cup_0", "red_cup_1")}
        assert words["red_cup_0"] != words["red_cup_1"]
        assert set(words.values()) in ({"left", "right"}, {"front", "back"}), words
        seen.update(words.values())
        u = _image_x(scene)
        if set(words.values()) == {"left", "right"}:
            left = next(i for i, w in words.items() if w == "left")
            right = next(i for i, w in words.items() if w == "right")
            assert u[left] < u[right]
        else:
            front = next(i for i, w in words.items() if w == "front")
            back = next(i for i, w in words.items() if w == "back")
            assert _camera_distance(scene, front) < _camera_distance(scene, back)
        for instance, word in words.items():
            assert pick_command(scene, instance) == f"pick the {word} red cup"
        assert spatial_word(scene, "blue_cube_0") is None
    assert seen["left"] > 0
    assert seen["front"] > 0  # both kinds of word occur


def test_left_is_left_in_the_image() -> None:
    # Seen from the camera at +x looking back at the robot, image left is the robot's -y side.
    checked = 0
    for seed in range(20):
        scene = sample_scene(seed, SceneRequest(names=("red cup", "red cup")))
        words = {o.instance: spatial_word(scene, o.instance) for o in scene.objects}
        if set(words.values()) != {"left", "right"}:
            continue
        left, right = sorted(scene.objects, key=lambda o: 0 if words[o.instance] == "left" else 1)
        assert left.y < right.y
        checked += 1
    assert checked >= 5


def _spread_across_the_view(scene: SceneSpec) -> bool:
    u = sorted(_image_x(scene).values())
    return bool(np.min(np.diff(u)) >= LEFT_RIGHT_MIN_PX)


def test_three_twins_are_named_or_refused() -> None:
    named = refused = 0
    for seed in range(20):
        scene = sample_scene(seed, SceneRequest(names=("red cup",) * 3))
        if not _spread_across_the_view(scene):
            with pytest.raises(SceneError, match="cannot be told apart"):
                spatial_word(scene, "red_cup_0")
            refused += 1
            continue
        named += 1
        order = sorted(scene.objects, key=lambda o: _image_x(scene)[o.instance])
        assert [spatial_word(scene, o.instance) for o in order] == ["left", "middle", "right"]
    assert named > 0
    assert refused > 0
