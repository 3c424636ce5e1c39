"""The simulated UR5e pick cell: MJCF model, scenes, environment, rendering and the scripted expert.

Importing this package picks a headless OpenGL backend for MuJoCo before MuJoCo is imported: the user's
`MUJOCO_GL` when set, else EGL when its library is present, else OSMesa.
"""

from __future__ import annotations

import ctypes.util
import os


def _choose_gl_backend() -> str:
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl"  # rendering will then fail with a message naming the system packages to install


os.environ["MUJOCO_GL"] = _choose_gl_backend()
if os.environ["MUJOCO_GL"] == "osmesa":
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
