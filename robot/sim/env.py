"""The simulated pick cell as a Gymnasium-style environment: `reset(seed, options)` and `step(action)`."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import numpy.typing as npt

from robot.camera_view import CameraView
from robot.kinematics import IKError, forward, pose_to_vector, solve_ik, vector_to_pose
from robot.sim.catalogue import UnknownObjectError, parse_object_name
from robot.sim.config import HOME_Q, ActionMode, CellConfig
from robot.sim.mjcf import ARM_JOINTS, GRIPPER_STROKE, TCP_OFFSET, ModelOptions, build_mjcf
from robot.sim.naming import pick_command
from robot.sim.outcome import CellState, Outcome, OutcomeMonitor
from robot.sim.render import CameraRenderer, mask_box
from robot.sim.scene import SceneError, SceneSpec, sample_scene

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ResetOptions:
    """Options of `reset`: a ready scene (else one is drawn from the seed) and the target, as an instance id
    ("red_cup_0") or a name that is unique in the scene ("red cup"); else a random object."""

    scene: SceneSpec | None = None
    target: str | None = None


@dataclass(frozen=True)
class Observation:
    """What the robot knows at one control step.

    time: seconds since reset; joints: (6,) radians; gripper_width: metres; tcp_pose: (6,) TCP xyz metres +
    axis-angle radians in the base frame; rgb: (H, W, 3) uint8 or None when rendering is off; depth_mm: (H, W)
    uint16 or None; instance_map: (H, W) int16 index into the scene's objects per pixel (-1 = none) or None;
    target_mask: (H, W) bool or None; target_box: (4,) float32 pixels x0, y0, x1, y1 (zeros when hidden);
    wrist_rgb: wrist image or None.
    """

    time: float
    joints: F64
    gripper_width: float
    tcp_pose: F64
    rgb: npt.NDArray[np.uint8] | None
    depth_mm: npt.NDArray[np.uint16] | None
    instance_map: npt.NDArray[np.int16] | None
    target_mask: npt.NDArray[np.bool_] | None
    target_box: npt.NDArray[np.float32]
    wrist_rgb: npt.NDArray[np.uint8] | None = None

    @property
    def state(self) -> npt.NDArray[np.float32]:
        """(7,) float32 proprioception: joints (radians) + gripper opening (metres)."""
        return np.append(self.joints, self.gripper_width).astype(np.float32)


@dataclass(frozen=True)
class ResetInfo:
    """The episode's scene, target instance id and the command that names it."""

    scene: SceneSpec
    target: str
    command: str


@dataclass(frozen=True)
class StepInfo:
    """Per-step facts: outcome once decided, seconds since reset, target rise (metres), and whether an
    end-effector action was unreachable (the previous joint targets were then kept)."""

    outcome: Outcome | None
    time: float
    target_rise: float
    ik_failed: bool = False


class PickEnv:
    """UR5e + parallel gripper over a table of objects. Not thread-safe; one episode at a time."""

    def __init__(self, config: CellConfig | None = None) -> None:
        self.config = config or CellConfig()
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._front: CameraRenderer | None = None
        self._wrist: CameraRenderer | None = None
        self.scene: SceneSpec | None = None
        self.target: str = ""
        self._monitor: OutcomeMonitor | None = None
        self._t0 = 0.0  # simulated time (seconds) at which the current episode began

    # ---------------------------------------------------------------- reset
    def reset(self, seed: int, options: ResetOptions | None = None) -> tuple[Observation, ResetInfo]:
        """Build the scene for `seed` (or `options.scene`), put the arm home, and return the first observation."""
        opts = options or ResetOptions()
        scene = opts.scene if opts.scene is not None else sample_scene(seed, self.config.scene)
        if not scene.objects:
            raise SceneError("the scene holds no objects; a pick needs at least one")
        rng = np.random.default_rng([seed, 1])
        target = self._resolve_target(scene, opts.target, rng)
        self.close()
        cfg = self.config
        xml = build_mjcf(
            scene,
            ModelOptions(
                physics_dt=cfg.physics_dt,
                grip_force=cfg.grip_force,
                image_width=max(cfg.image_width, cfg.wrist_width),
                image_height=max(cfg.image_height, cfg.wrist_height),
                fovy_deg=cfg.fovy_deg,
                wrist_camera=cfg.wrist_camera,
            ),
        )
        self.model = model = mujoco.MjModel.from_xml_string(xml)
        self.data = data = mujoco.MjData(model)
        self.scene, self.target = scene, target
        self._index_model(scene)
        q0 = np.asarray(HOME_Q) + rng.uniform(-cfg.start_jitter, cfg.start_jitter, size=6)
        data.qpos[self._arm_qadr] = q0
        data.qpos[self._finger_qadr] = GRIPPER_STROKE / 2
        self._q_cmd = q0.copy()
        self._grip_cmd = GRIPPER_STROKE
        data.ctrl[:6] = q0
        data.ctrl[6] = GRIPPER_STROKE / 2
        mujoco.mj_forward(model, data)
        for _ in range(round(cfg.settle_s / cfg.physics_dt)):
            mujoco.mj_step(model, data)
        data.time = 0.0
        self._t0 = 0.0
        self._start_z = data.xpos[self._obj_body, 2].copy()
        self._monitor = OutcomeMonitor(cfg.rules)
        if cfg.render:
            self._front = CameraRenderer(model, "front", cfg.image_width, cfg.image_height, depth=cfg.depth)
            if cfg.wrist_camera:
                self._wrist = CameraRenderer(
                    model, "wrist", cfg.wrist_width, cfg.wrist_height, depth=False, segmentation=False
                )
        return self._observe(), ResetInfo(scene, target, pick_command(scene, target))

    @staticmethod
    def _resolve_target(scene: SceneSpec, target: str | None, rng: np.random.Generator) -> str:
        if target is None:
            return scene.objects[int(rng.integers(len(scene.objects)))].instance
        if any(o.instance == target for o in scene.objects):
            return target
        try:
            matches = scene.instances_named(target)
        except UnknownObjectError:
            matches = []
        if len(matches) == 1:
            return matches[0].instance
        valid = ", ".join(f"{o.instance} ({o.name})" for o in scene.objects)
        if len(matches) > 1:
            raise SceneError(f"target {target!r} matches {len(matches)} objects; name one instance of: {valid}")
        if " " in target.strip():
            parse_object_name(target)  # an unknown colour or shape gets the catalogue's error naming the valid ones
        raise UnknownObjectError(f"target {target!r} is not in this scene; objects: {valid}")

    def retarget(self, target: str) -> None:
        """Start a new pick episode in the current scene, without rebuilding it (opt-in, for a session that picks
        several objects in turn): `target` is an instance id or a name unique in the scene. Object heights are
        re-measured as the new start, the outcome is undecided again, and episode time (`StepInfo.time`, the
        timeout) counts from now; the arm, the gripper and the objects stay where they are."""
        _, data = self._require()
        scene = self.scene
        if scene is None:
            raise RuntimeError("call reset() before retarget()")
        self.target = self._resolve_target(scene, target, np.random.default_rng(0))
        self._target_idx = next(i for i, o in enumerate(scene.objects) if o.instance == self.target)
        self._start_z = data.xpos[self._obj_body, 2].copy()
        self._monitor = OutcomeMonitor(self.config.rules)
        self._t0 = float(data.time)

    def _index_model(self, scene: SceneSpec) -> None:
        m = self.model
        if m is None:
            raise RuntimeError("no model")
        self._arm_qadr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_dadr = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")])
        self._obj_body = np.array([m.body(o.instance).id for o in scene.objects])
        self._target_idx = next(i for i, o in enumerate(scene.objects) if o.instance == self.target)
        # geom id -> object index (-1 for everything that is not an object)
        self._geom_obj = np.full(m.ngeom + 1, -1, dtype=np.int16)
        for i, body in enumerate(self._obj_body):
            self._geom_obj[np.flatnonzero(m.geom_bodyid == body)] = i
        self._pads = {m.geom("finger_left_pad").id, m.geom("finger_right_pad").id}
        world = {m.geom("table").id} | {g for g in range(m.ngeom) if m.geom(g).name.startswith("bin_")}
        self._world_geoms = world
        self._arm_geoms = {g for g in range(m.ngeom) if int(m.geom_contype[g]) == 2}
        self._tcp_site = m.site("tcp").id

    # ---------------------------------------------------------------- step
    def step(self, action: npt.ArrayLike) -> tuple[Observation, float, bool, bool, StepInfo]:
        """Apply one action for `control_dt` seconds; returns (obs, reward, terminated, truncated, info).

        The action is 7 finite numbers read per `config.action_mode`. Joint targets move at most
        `max_joint_speed` per second towards the request (as the UR controller's speed limit does) and are
        interpolated over the physics steps, like servoJ. Reward is 1 on success, else 0.
        """
        model, data = self._require()
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(
                f"action must be 7 finite numbers ({self.config.action_mode.value} mode: "
                + (
                    "6 joint targets in radians + gripper opening in metres"
                    if self.config.action_mode == ActionMode.JOINT
                    else "x y z metres, rx ry rz axis-angle radians + gripper opening in metres"
                )
                + f"), got shape {a.shape}"
            )
        cfg = self.config
        ik_failed = False
        if cfg.action_mode == ActionMode.EE:
            try:
                q_req = solve_ik(vector_to_pose(a[:6]), self._q_cmd, tcp_offset=TCP_OFFSET)
            except IKError:
                q_req, ik_failed = self._q_cmd, True
        else:
            q_req = a[:6]
        lo, hi = model.actuator_ctrlrange[:6, 0], model.actuator_ctrlrange[:6, 1]
        max_dq = cfg.max_joint_speed * cfg.control_dt
        q_new = self._q_cmd + np.clip(np.clip(q_req, lo, hi) - self._q_cmd, -max_dq, max_dq)
        max_dg = cfg.gripper_speed * cfg.control_dt
        g_new = self._grip_cmd + float(np.clip(np.clip(a[6], 0.0, GRIPPER_STROKE) - self._grip_cmd, -max_dg, max_dg))
        n = cfg.substeps
        for k in range(1, n + 1):
            frac = k / n
            data.ctrl[:6] = self._q_cmd + frac * (q_new - self._q_cmd)
            data.ctrl[6] = (self._grip_cmd + frac * (g_new - self._grip_cmd)) / 2.0
            mujoco.mj_step(model, data)
        self._q_cmd, self._grip_cmd = q_new, g_new
        state = self._cell_state()
        monitor = self._monitor
        if monitor is None:
            raise RuntimeError("call reset() before step()")
        outcome = monitor.update(state)
        terminated = outcome is not None and outcome not in (Outcome.TIMEOUT, Outcome.EMPTY_GRASP)
        truncated = outcome in (Outcome.TIMEOUT, Outcome.EMPTY_GRASP)
        reward = 1.0 if outcome == Outcome.SUCCESS else 0.0
        info = StepInfo(outcome, state.time, state.target_rise, ik_failed)
        return self._observe(), reward, terminated, truncated, info

    def _require(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        if self.model is None or self.data is None:
            raise RuntimeError("call reset() before using the environment")
        return self.model, self.data

    def _cell_state(self) -> CellState:
        model, data = self._require()
        rises = data.xpos[self._obj_body, 2] - self._start_z
        in_fingers = arm_hit = False
        force = np.zeros(6)
        for i, c in enumerate(data.contact[: data.ncon]):
            g1, g2 = int(c.geom1), int(c.geom2)
            for a, b in ((g1, g2), (g2, g1)):
                if a in self._pads and self._geom_obj[b] == self._target_idx:
                    in_fingers = True
                if a in self._arm_geoms and b in self._world_geoms:
                    arm_hit = True
                if a in self._pads and b in self._world_geoms:
                    mujoco.mj_contactForce(model, data, i, force)
                    arm_hit = arm_hit or abs(force[0]) > self.config.rules.max_pad_press
        others = tuple(float(r) for i, r in enumerate(rises) if i != self._target_idx)
        return CellState(
            time=float(data.time) - self._t0,
            target_rise=float(rises[self._target_idx]),
            other_rises=others,
            target_in_fingers=in_fingers,
            gripper_width=self.gripper_width,
            arm_hit_world=arm_hit,
        )

    # ---------------------------------------------------------------- observation
    @property
    def joints(self) -> F64:
        """Measured joint angles, radians."""
        _, data = self._require()
        return np.array(data.qpos[self._arm_qadr], dtype=np.float64)

    @property
    def gripper_width(self) -> float:
        """Measured gripper opening, metres."""
        _, data = self._require()
        return float(np.clip(data.qpos[self._finger_qadr].sum(), 0.0, GRIPPER_STROKE))

    @property
    def joint_command(self) -> F64:
        """The joint targets the arm is servoing to, radians."""
        self._require()
        return np.array(self._q_cmd, dtype=np.float64)

    def camera_view(self) -> CameraView:
        """The fixed camera's true calibration for this episode's scene: its intrinsics at the cell's image size
        and its pose in the base frame (the scene's jittered camera)."""
        if self.scene is None:
            raise RuntimeError("the environment has no scene yet: call reset(seed) first")
        cam = self.scene.camera
        return CameraView.from_look_at(cam.position, cam.target, self.config.intrinsics)

    def object_position(self, instance: str) -> F64:
        """World position (metres) of an object's centre."""
        model, data = self._require()
        return np.array(data.xpos[model.body(instance).id], dtype=np.float64)

    def object_yaw(self, instance: str) -> float:
        """Yaw (radians about z) of an object."""
        model, data = self._require()
        mat = data.xmat[model.body(instance).id].reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def _observe(self) -> Observation:
        _, data = self._require()
        joints = self.joints
        tcp = np.eye(4)
        tcp[:3, :3] = data.site_xmat[self._tcp_site].reshape(3, 3)
        tcp[:3, 3] = data.site_xpos[self._tcp_site]
        rgb = depth = inst = mask = wrist = None
        box = np.zeros(4, dtype=np.float32)
        if self._front is not None:
            images = self._front.render(data)
            rgb, depth = images.rgb, images.depth_mm
            if images.segmentation is not None:
                inst = self._geom_obj[images.segmentation]  # -1 indexes the trailing "none" slot
                mask = inst == self._target_idx
                box = mask_box(mask)
        if self._wrist is not None:
            wrist = self._wrist.render(data).rgb
        return Observation(
            time=float(data.time),
            joints=joints,
            gripper_width=self.gripper_width,
            tcp_pose=pose_to_vector(tcp),
            rgb=rgb,
            depth_mm=depth,
            instance_map=inst,
            target_mask=mask,
            target_box=box,
            wrist_rgb=wrist,
        )

    def tcp_pose_of(self, q: npt.ArrayLike) -> F64:
        """TCP pose (4x4, base frame) of joint angles `q` by the model's kinematics."""
        return forward(q, TCP_OFFSET)

    def close(self) -> None:
        """Free renderers (the model is rebuilt at the next reset)."""
        for r in (self._front, self._wrist):
            if r is not None:
                r.close()
        self._front = self._wrist = None

    def __enter__(self) -> PickEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
