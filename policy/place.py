"""Where the tracked target stands in the robot's base frame, as extra inputs of the action head.

The tracker's mask box says where the target is in the image; which table position that is depends on where the
camera stands, and the cell's camera is not the same in every scene (installation, calibration, the simulator's
per-scene jitter of about 1 cm and 2 cm of aim, which moves a point's table position for a given pixel by 1.6 cm
median and 3.0 cm at the 90th percentile). A head that reads only the image must guess that shift. With the
camera's calibration (`robot.camera_view.CameraView`) the box centre's ray meets the plane `PLACE_HEIGHT_M` above
the table at the target's base-frame position, and the arm's joint angles give the TCP's by forward kinematics.
`place_values` returns, per frame (metres, base frame):

    target_x, target_y, target_x - tcp_x, target_y - tcp_y, tcp_z

On frames where the tracker has no mask (area 0) the first four are 0; the head also reads the mask area and the
object score, so it can tell such frames apart.

Where the target's position comes from is the head's `place_source`: "tracked" takes every frame's tracked mask
box; "prompt" takes the box the tracker was prompted with (the grounder's, or the simulator's true first-frame
box) for the whole pick, so that a tracker that slides onto part of the target, the gripper or a neighbour moves
neither the target's position nor the offsets to it. The object stands still until it is grasped; after the
grasp, the offsets say where the TCP is against where the object stood. Measured on four failing test scenes of
a head trained on tracked values: in the approach the tracked box put the target mostly 4-17 cm from its true
position, the true prompt box 0.6-1.2 cm (`models/sam2grasp_head.md`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from robot.camera_view import CameraView
from robot.kinematics import forward

#: Values `place_values` adds to each frame's extras.
PLACE_DIM = 5
#: Names of those values, in order.
PLACE_NAMES: tuple[str, ...] = ("target_x", "target_y", "target_minus_tcp_x", "target_minus_tcp_y", "tcp_z")
#: Height above the table (metres) at which the box centre's ray is cut: about the middle of the catalogue's
#: objects (2-10 cm tall); a taller or shorter object shifts along the view ray, which the head sees by the box.
PLACE_HEIGHT_M = 0.03
#: Where the box (x0, y0, x1, y1, normalised to the frame) and the mask's share of the frame sit in every spec's
#: extras (`policy.features.extract`).
_BOX = slice(2, 6)
_AREA = 6
#: Where a head's place values take the target's image position from (see the module doc).
PLACE_SOURCES: tuple[str, ...] = ("tracked", "prompt")


class PlaceError(ValueError):
    """Place values cannot be formed from these inputs (shapes, missing calibration)."""


def check_place_source(source: str) -> str:
    """`source` when it is one of PLACE_SOURCES, else a PlaceError naming the valid ones."""
    if source not in PLACE_SOURCES:
        raise PlaceError(f"place source {source!r} is not known; valid: {', '.join(PLACE_SOURCES)}")
    return source


def normalised_box(box: npt.ArrayLike, width: int, height: int) -> npt.NDArray[np.float64]:
    """A pixel box (x0, y0, x1, y1) of a width x height frame as fractions of the frame, as the extras hold it;
    a PlaceError when it is not 4 finite numbers with x0 < x1 and y0 < y1 (an empty or hidden target)."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or not (b[0] < b[2] and b[1] < b[3]):
        raise PlaceError(f"a prompt box must be 4 finite pixels x0 < x1, y0 < y1, got {np.asarray(box).tolist()}")
    if width < 1 or height < 1:
        raise PlaceError(f"frame size must be positive pixels, got {width} x {height}")
    return b / np.array([width, height, width, height], dtype=np.float64)


def place_values(
    extras: npt.ArrayLike,
    states: npt.ArrayLike,
    view: CameraView,
    tcp_offset: float,
    prompt_box: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """(T, PLACE_DIM) place values of T frames.

    extras: (T, E) the feature spec's extras (E >= 7); states: (T, >= 6) joint angles in radians first;
    view: the calibrated camera whose frames the extras came from; tcp_offset: metres from the flange to the TCP
    along the flange z axis; prompt_box: None (the target's position from each frame's tracked box) or the prompt
    box (4,) as fractions of the frame (`normalised_box`), which then places the target on every frame.
    """
    ex = np.asarray(extras, dtype=np.float64)
    st = np.asarray(states, dtype=np.float64)
    if ex.ndim != 2 or ex.shape[1] < _AREA + 1:
        raise PlaceError(f"extras must be (T, E) with E >= {_AREA + 1}, got shape {ex.shape}")
    if st.ndim != 2 or st.shape[0] != ex.shape[0] or st.shape[1] < 6:
        raise PlaceError(f"states must be ({ex.shape[0]}, >= 6) joint angles first, got shape {st.shape}")
    if prompt_box is None:
        target = _table_xy(ex[:, _BOX], view)
    else:
        target = np.broadcast_to(_table_xy(_checked_prompt(prompt_box)[None], view), (len(ex), 2))
    tcp = np.array([forward(q, tcp_offset)[:3, 3] for q in st[:, :6]]).reshape(-1, 3)
    visible = ex[:, _AREA] > 0.0 if prompt_box is None else np.ones(len(ex), dtype=bool)
    seen = visible & np.all(np.isfinite(target), axis=1)
    target = np.where(seen[:, None], target, 0.0)
    delta = np.where(seen[:, None], target - tcp[:, :2], 0.0)
    return np.concatenate([target, delta, tcp[:, 2:3]], axis=1).astype(np.float32)


def prompt_target(prompt_box: npt.ArrayLike, view: CameraView) -> npt.NDArray[np.float64]:
    """The target's table position (x, y metres, base frame) that `prompt_box` (fractions of the frame) places; a
    PlaceError when its ray misses the table plane."""
    xy: npt.NDArray[np.float64] = _table_xy(_checked_prompt(prompt_box)[None], view)[0]
    if not np.all(np.isfinite(xy)):
        raise PlaceError(f"the prompt box {np.asarray(prompt_box).tolist()} does not place the target on the table")
    return xy


def _checked_prompt(prompt_box: npt.ArrayLike) -> npt.NDArray[np.float64]:
    box = np.asarray(prompt_box, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise PlaceError(f"prompt_box must be 4 finite fractions of the frame, got {box.tolist()}")
    return box


def _table_xy(boxes: npt.NDArray[np.float64], view: CameraView) -> npt.NDArray[np.float64]:
    """(T, 2) base-frame x, y where the rays through the centres of `boxes` (T, 4; fractions of the frame) meet
    the plane PLACE_HEIGHT_M above the table; NaN where a ray misses it."""
    k = view.intrinsics
    uv = np.stack([(boxes[:, 0] + boxes[:, 2]) * 0.5 * k.width, (boxes[:, 1] + boxes[:, 3]) * 0.5 * k.height], axis=1)
    return view.pixel_to_plane(uv, PLACE_HEIGHT_M)[:, :2]


def with_place(
    extras: npt.ArrayLike,
    states: npt.ArrayLike,
    view: CameraView | None,
    tcp_offset: float,
    prompt_box: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """`extras` (T, E) with the place values appended (T, E + PLACE_DIM; prompt_box as `place_values`); a
    PlaceError without a view."""
    if view is None:
        raise PlaceError(
            "this head reads the target's base-frame position and needs the camera's calibration "
            "(intrinsics and T_base_camera); none was given"
        )
    ex = np.asarray(extras, dtype=np.float32)
    return np.concatenate([ex, place_values(ex, states, view, tcp_offset, prompt_box)], axis=1)
