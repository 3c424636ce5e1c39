"""Offscreen rendering of the cell's cameras: colour, depth (millimetres) and per-object segmentation."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mujoco
import numpy as np
import numpy.typing as npt

from robot.masks import mask_box as mask_box  # re-exported: the box of a rendered mask

#: Debian packages that provide each headless backend.
GL_PACKAGES: dict[str, str] = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6"}
#: Depth beyond this range (metres) reads as 0, "no reading", like a RealSense.
MAX_DEPTH_M = 6.0


class RenderingUnavailableError(RuntimeError):
    """No headless OpenGL context could be created."""


@dataclass(frozen=True)
class CameraImages:
    """Images of one camera at one instant.

    rgb: (H, W, 3) uint8; depth_mm: (H, W) uint16 millimetres along the optical axis (0 = none) or None;
    segmentation: (H, W) int32 geom id per pixel (-1 = background) or None.
    """

    rgb: npt.NDArray[np.uint8]
    depth_mm: npt.NDArray[np.uint16] | None
    segmentation: npt.NDArray[np.int32] | None


def _select_gl_backend() -> None:
    """Make MuJoCo's renderer use the headless backend named by MUJOCO_GL even when `mujoco` was imported
    before `robot.sim` set it (MuJoCo picks its GL context class once, at import)."""
    backend = os.environ.get("MUJOCO_GL", "")
    if backend not in ("egl", "osmesa"):
        return
    import importlib

    cls = importlib.import_module(f"mujoco.{backend}").GLContext
    for module_name in ("mujoco.rendering.classic.gl_context", "mujoco.gl_context"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if getattr(module, "GLContext", None) is not cls:
            setattr(module, "GLContext", cls)  # noqa: B010


def open_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """A MuJoCo offscreen renderer, or an error naming the backend and the system packages it needs."""
    if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
        raise ValueError(
            f"image {width}x{height} exceeds the model's offscreen buffer "
            f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}"
        )
    backend = os.environ.get("MUJOCO_GL", "")
    try:
        _select_gl_backend()
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:
        hint = GL_PACKAGES.get(backend, " or ".join(GL_PACKAGES.values()))
        raise RenderingUnavailableError(
            f"cannot create a headless OpenGL context with MUJOCO_GL={backend!r} ({exc}); install the Debian "
            f"package(s) {hint} (`make setup` does), or set MUJOCO_GL to one of: egl, osmesa"
        ) from exc


class CameraRenderer:
    """Renders one named camera of a model; `depth` and `segmentation` add their passes (about 25 ms each)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        camera: str,
        width: int,
        height: int,
        *,
        depth: bool = True,
        segmentation: bool = True,
    ) -> None:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"model has no camera {camera!r}")
        self._renderer = open_renderer(model, width, height)
        self.camera = camera
        self.depth = depth
        self.segmentation = segmentation

    def render(self, data: mujoco.MjData) -> CameraImages:
        """Render the current state of `data` (call after mj_forward or mj_step)."""
        r = self._renderer
        r.update_scene(data, camera=self.camera)
        rgb = np.ascontiguousarray(r.render(), dtype=np.uint8)
        depth_mm = seg = None
        if self.depth:
            r.enable_depth_rendering()
            try:
                depth_m = r.render()
            finally:
                r.disable_depth_rendering()
            depth_m = np.where((depth_m > 0) & (depth_m < MAX_DEPTH_M), depth_m, 0.0)
            depth_mm = np.round(depth_m * 1000.0).astype(np.uint16)
        if self.segmentation:
            r.enable_segmentation_rendering()
            try:
                raw = r.render()
            finally:
                r.disable_segmentation_rendering()
            is_geom = raw[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
            seg = np.where(is_geom, raw[..., 0], -1).astype(np.int32)
        return CameraImages(rgb, depth_mm, seg)

    def close(self) -> None:
        """Free the GL context."""
        self._renderer.close()
