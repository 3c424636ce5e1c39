"""MJCF of the cell, written by the project: a UR5e built from its DH parameters, a parallel gripper with an
85 mm stroke, the table, the drop bin, the objects of a scene, lights and cameras.

Body frames of the arm are the DH frames, so the model's forward kinematics is the published one by construction
(and `tests/test_sim_model.py` checks it against `robot.kinematics`). Geometry is simplified (capsules and
cylinders of the real link sizes); masses follow the published link masses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot.intrinsics import look_at
from robot.kinematics import UR5E_A, UR5E_ALPHA, UR5E_D
from robot.sim.catalogue import Shape
from robot.sim.scene import PlacedObject, SceneSpec

#: Names of the arm joints in the model, in DH order.
ARM_JOINTS: tuple[str, ...] = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
#: Gripper stroke: full opening in metres (each finger travels half of it).
GRIPPER_STROKE = 0.085
#: Distance (metres) from the flange to the TCP, the centre of the finger pads, along the flange z axis.
TCP_OFFSET = 0.150
#: Published UR5e link masses, kilograms (shoulder, upper arm, forearm, wrist 1, wrist 2, wrist 3).
LINK_MASSES: tuple[float, ...] = (3.761, 8.058, 2.846, 1.37, 1.3, 0.365)
#: Bin (drop zone) centre on the table and its inner half sizes, metres.
BIN_CENTRE: tuple[float, float] = (0.20, 0.46)
BIN_HALF: tuple[float, float, float] = (0.11, 0.09, 0.05)
#: Contact classes: the arm collides with the world but not with itself.
_ARM_CONTACT = 'contype="2" conaffinity="1"'
_WORLD_CONTACT = 'contype="1" conaffinity="3"'


@dataclass(frozen=True)
class ModelOptions:
    """Physics and rendering settings of the generated model.

    physics_dt: seconds per physics step; grip_force: newtons, the gripper's force bound;
    image_width, image_height: pixels of the offscreen buffer (cameras render at most this size);
    fovy_deg: vertical field of view of the fixed camera in degrees; wrist_camera: add a camera on the gripper.
    """

    physics_dt: float = 0.002
    grip_force: float = 40.0
    image_width: int = 640
    image_height: int = 480
    fovy_deg: float = 42.6
    wrist_camera: bool = False


def _quat_rx(alpha: float) -> str:
    return f"{math.cos(alpha / 2):.9f} {math.sin(alpha / 2):.9f} 0 0"


def _fmt(values: tuple[float, ...] | list[float] | np.ndarray) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _arm_xml() -> str:
    """Nested bodies of the six links; body i holds joint i about its z axis, the DH frame i-1."""
    d, a, alpha = UR5E_D, UR5E_A, UR5E_ALPHA
    visuals = [
        # shoulder: vertical column up to the shoulder axis
        f'<geom type="cylinder" fromto="0 0 0.02 0 0 {d[0]}" size="0.06" {_ARM_CONTACT} mass="{LINK_MASSES[0]}" '
        'material="ur_blue"/>',
        # upper arm along -x (a2 < 0) of frame 1
        f'<geom type="capsule" fromto="0 0 0.0 {a[1] * 0.92:.4f} 0 0" size="0.054" {_ARM_CONTACT} '
        f'mass="{LINK_MASSES[1]}" material="ur_grey"/>'
        f'<geom type="cylinder" fromto="0 0 -0.07 0 0 0.07" size="0.062" {_ARM_CONTACT} mass="0.01" '
        'material="ur_blue"/>',
        # forearm
        f'<geom type="capsule" fromto="0 0 0 {a[2] * 0.9:.4f} 0 0" size="0.042" {_ARM_CONTACT} '
        f'mass="{LINK_MASSES[2]}" material="ur_grey"/>'
        f'<geom type="cylinder" fromto="0 0 -0.06 0 0 0.06" size="0.05" {_ARM_CONTACT} mass="0.01" '
        'material="ur_blue"/>',
        # wrist 1 column up to wrist 2
        f'<geom type="cylinder" fromto="0 0 0.03 0 0 {d[3] + 0.02:.4f}" size="0.038" {_ARM_CONTACT} '
        f'mass="{LINK_MASSES[3]}" material="ur_blue"/>',
        f'<geom type="cylinder" fromto="0 0 -0.02 0 0 {d[4] - 0.03:.4f}" size="0.038" {_ARM_CONTACT} '
        f'mass="{LINK_MASSES[4]}" material="ur_blue"/>',
        f'<geom type="cylinder" fromto="0 0 -0.01 0 0 {d[5] - 0.005:.4f}" size="0.038" {_ARM_CONTACT} '
        f'mass="{LINK_MASSES[5]}" material="ur_grey"/>',
    ]
    opening = ""
    closing = ""
    child_pose = 'pos="0 0 0"'
    for i, name in enumerate(ARM_JOINTS):
        limit = math.pi if i == 2 else 2 * math.pi  # elbow ±π, every other joint ±2π
        armature, damping = (0.2, 2.0) if i < 3 else (0.05, 0.5)
        opening += (
            f'<body name="{name}_link" {child_pose} gravcomp="1">'
            f'<joint name="{name}" type="hinge" axis="0 0 1" range="{-limit:.6f} {limit:.6f}" '
            f'armature="{armature}" damping="{damping}"/>'
            f"{visuals[i]}"
        )
        closing = "</body>" + closing
        child_pose = f'pos="{a[i]:.6f} 0 {d[i]:.6f}" quat="{_quat_rx(alpha[i])}"'
    # The flange frame: DH frame 6 (z out of the flange); the gripper hangs from it.
    flange = f'<body name="flange" {child_pose} gravcomp="1"><site name="flange" size="0.005"/>{_gripper_xml()}</body>'
    # DH frame 0 is the UR `base` frame turned 180° about z (see robot.kinematics.BASE_TO_DH).
    base = (
        '<body name="base" quat="0 0 0 1">'
        f'<geom type="cylinder" fromto="0 0 0 0 0 0.09" size="0.075" {_ARM_CONTACT} mass="4.0" material="ur_grey"/>'
    )
    return base + opening + flange + closing + "</body>"


def _gripper_xml() -> str:
    """Palm and two fingers sliding along the flange y axis; finger joints measure half the opening (metres)."""
    half = GRIPPER_STROKE / 2
    pad_z = TCP_OFFSET
    finger = (
        '<body name="finger_{side}" gravcomp="1">'
        '<joint name="finger_{side}" type="slide" axis="0 {sign}1 0" range="0 {half:.4f}" armature="0.01" '
        'damping="20"/>'
        '<geom name="finger_{side}_link" type="box" pos="0 {sign}0.013 {link_z:.4f}" size="0.011 0.006 0.045" '
        f'{_ARM_CONTACT} mass="0.05" material="gripper_dark"/>'
        '<geom name="finger_{side}_pad" type="box" pos="0 {sign}0.004 {pad_z:.4f}" size="0.011 0.004 0.02" '
        'contype="4" conaffinity="1" condim="4" friction="1.5 0.02 0.002" solref="0.005 1" mass="0.02" '
        'material="pad"/>'
        "</body>"
    )
    fingers = "".join(
        finger.format(side=side, sign=sign, half=half, link_z=pad_z - 0.04, pad_z=pad_z)
        for side, sign in (("left", ""), ("right", "-"))
    )
    return (
        '<body name="gripper" gravcomp="1">'
        f'<geom name="coupling" type="cylinder" fromto="0 0 0 0 0 0.02" size="0.038" {_ARM_CONTACT} mass="0.1" '
        'material="gripper_dark"/>'
        f'<geom name="palm" type="box" pos="0 0 0.05" size="0.03 0.058 0.03" {_ARM_CONTACT} mass="0.6" '
        'material="gripper_dark"/>'
        f'<site name="tcp" pos="0 0 {TCP_OFFSET:.4f}" size="0.004" rgba="1 0 1 0.5"/>'
        f"{fingers}"
        "</body>"
    )


def _object_xml(obj: PlacedObject) -> str:
    spec = obj.kind.spec
    hx, hy, hz = spec.half_extents
    rgba = f"{obj.rgb[0]:.4f} {obj.rgb[1]:.4f} {obj.rgb[2]:.4f} 1"
    common = f'{_WORLD_CONTACT} condim="4" friction="1.0 0.01 0.001" rgba="{rgba}"'
    name = obj.instance
    shape = obj.kind.shape
    if shape in (Shape.CUBE, Shape.BOX):
        geoms = f'<geom name="{name}" type="box" size="{hx} {hy} {hz}" mass="{spec.mass}" {common}/>'
    elif shape == Shape.CAN:
        geoms = f'<geom name="{name}" type="cylinder" size="{hx} {hz}" mass="{spec.mass}" {common}/>'
    elif shape == Shape.BALL:
        geoms = f'<geom name="{name}" type="sphere" size="{hz}" mass="{spec.mass}" {common}/>'
    else:  # cup: body of radius hy, a handle on +x, a dark inside on top
        r = hy
        geoms = (
            f'<geom name="{name}" type="cylinder" size="{r} {hz}" mass="{spec.mass * 0.9:.4f}" {common}/>'
            f'<geom name="{name}_handle" type="box" pos="{r + 0.006:.4f} 0 0.004" size="0.007 0.005 {hz * 0.55:.4f}" '
            f'mass="{spec.mass * 0.1:.4f}" {common}/>'
            f'<geom name="{name}_inside" type="cylinder" pos="0 0 {hz - 0.0005:.4f}" size="{r * 0.85:.4f} 0.001" '
            f'contype="0" conaffinity="0" mass="0.0001" rgba="{obj.rgb[0] * 0.35:.3f} {obj.rgb[1] * 0.35:.3f} '
            f'{obj.rgb[2] * 0.35:.3f} 1"/>'
        )
    quat = f"{math.cos(obj.yaw / 2):.9f} 0 0 {math.sin(obj.yaw / 2):.9f}"
    return (
        f'<body name="{name}" pos="{obj.x:.5f} {obj.y:.5f} {hz + 0.0005:.5f}" quat="{quat}">'
        f'<freejoint name="{name}"/>{geoms}</body>'
    )


def _bin_xml() -> str:
    cx, cy = BIN_CENTRE
    hx, hy, hz = BIN_HALF
    t = 0.006
    walls = [
        (0.0, 0.0, t / 2, hx + t, hy + t, t / 2),
        (hx + t / 2, 0.0, hz, t / 2, hy + t, hz),
        (-hx - t / 2, 0.0, hz, t / 2, hy + t, hz),
        (0.0, hy + t / 2, hz, hx, t / 2, hz),
        (0.0, -hy - t / 2, hz, hx, t / 2, hz),
    ]
    geoms = "".join(
        f'<geom name="bin_{i}" type="box" pos="{x:.4f} {y:.4f} {z:.4f}" size="{sx:.4f} {sy:.4f} {sz:.4f}" '
        f'{_WORLD_CONTACT} material="bin"/>'
        for i, (x, y, z, sx, sy, sz) in enumerate(walls)
    )
    return f'<body name="bin" pos="{cx} {cy} 0">{geoms}</body>'


def _camera_xml(scene: SceneSpec, fovy_deg: float) -> str:
    rot = look_at(scene.camera.position, scene.camera.target)
    xy = np.concatenate([rot[:, 0], rot[:, 1]])
    return f'<camera name="front" pos="{_fmt(scene.camera.position)}" xyaxes="{_fmt(xy)}" fovy="{fovy_deg:.4f}"/>'


def build_mjcf(scene: SceneSpec, options: ModelOptions | None = None) -> str:
    """The cell holding `scene`, as an MJCF string ready for `mujoco.MjModel.from_xml_string`."""
    opt = options or ModelOptions()
    light = scene.lighting
    kd = light.key_diffuse
    key_pos = np.array([0.45, 0.0, 0.0]) + 2.5 * np.array(light.key_direction)
    key_dir = -np.array(light.key_direction)
    wrist_cam = (
        '<camera name="wrist" pos="0 -0.07 0.06" xyaxes="1 0 0 0 -0.95 0.3" fovy="70"/>' if opt.wrist_camera else ""
    )
    arm = _arm_xml().replace('<body name="gripper" gravcomp="1">', f'<body name="gripper" gravcomp="1">{wrist_cam}')
    actuators = "".join(
        f'<position name="{j}" joint="{j}" kp="{kp}" kv="{kv}" forcerange="{-fr} {fr}" ctrlrange="{lo:.6f} {hi:.6f}"/>'
        for j, (kp, kv, fr), (lo, hi) in zip(
            ARM_JOINTS,
            [
                (4000, 400, 150),
                (4000, 400, 150),
                (3000, 300, 150),
                (800, 60, 28),
                (800, 60, 28),
                (500, 40, 28),
            ],
            [(-2 * math.pi, 2 * math.pi)] * 2 + [(-math.pi, math.pi)] + [(-2 * math.pi, 2 * math.pi)] * 3,
            strict=True,
        )
    )
    objects = "".join(_object_xml(o) for o in scene.objects)
    t = scene.table_rgb
    return f"""<mujoco model="sam2grasp_cell">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{opt.physics_dt}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="{opt.image_width}" offheight="{opt.image_height}"/>
    <headlight ambient="{light.ambient:.3f} {light.ambient:.3f} {light.ambient:.3f}" diffuse="0.25 0.25 0.25"
      specular="0 0 0"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
    <material name="ur_blue" rgba="0.45 0.62 0.78 1"/>
    <material name="ur_grey" rgba="0.72 0.74 0.76 1"/>
    <material name="gripper_dark" rgba="0.18 0.18 0.2 1"/>
    <material name="pad" rgba="0.1 0.1 0.1 1"/>
    <material name="bin" rgba="0.3 0.34 0.4 1"/>
    <material name="table" rgba="{t[0]:.3f} {t[1]:.3f} {t[2]:.3f} 1"/>
    <material name="floor" rgba="0.32 0.32 0.33 1"/>
  </asset>
  <default><geom solimp="0.95 0.99 0.001" solref="0.004 1"/></default>
  <worldbody>
    <light name="key" pos="{_fmt(key_pos)}" dir="{_fmt(key_dir)}" directional="true" castshadow="false"
      diffuse="{kd:.3f} {kd:.3f} {kd:.3f}" specular="0.1 0.1 0.1"/>
    <light name="fill" pos="0.5 0 2.0" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.2 0.2 0.2"/>
    <geom name="floor" type="plane" pos="0 0 -0.76" size="3 3 0.1" material="floor" contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0.35 0 -0.02" size="0.55 0.7 0.02" material="table" {_WORLD_CONTACT}/>
    <geom name="robot_mount" type="cylinder" pos="0 0 0.01" size="0.09 0.01" material="gripper_dark"
      contype="0" conaffinity="0"/>
    {arm}
    {_bin_xml()}
    {objects}
    {_camera_xml(scene, opt.fovy_deg)}
  </worldbody>
  <equality>
    <joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
    {actuators}
    <position name="gripper" joint="finger_left" kp="1500" kv="40" forcerange="{-opt.grip_force} {opt.grip_force}"
      ctrlrange="0 {GRIPPER_STROKE / 2:.4f}"/>
  </actuator>
</mujoco>
"""
