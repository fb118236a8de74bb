"""The arm base env: one MuJoCo scene, Cartesian end-effector actions, shifts applied at reset.

Actions are (dx, dy, dz, grip) in [-1, 1]. The first three move the targets of three Cartesian
position servos on the hand (MuJoCo site actuators with a reference site, i.e. an impedance
controller whose torques reach the joints through the Jacobian), so actuator gain and joint
damping change what the arm does. Grip drives both fingers with a force of
``grip * grip_force`` newtons each. Control runs at 20 Hz over 25 physics substeps of 2 ms.

Tasks subclass :class:`ArmEnv` and define the start state, the reward and the judgement of
success and failure; all judgements read MuJoCo's own sensors (touch = contact normal forces
on the finger pads, frame positions and orientations), never the observation vector.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

from embodied.envs.scene import ARM_JOINTS, SCENE, build_model
from embodied.envs.sensors import Sensors
from embodied.registration import register
from embodied.shifts import (
    NOMINAL,
    Effect,
    EpisodeStart,
    resolve_physics,
    start_effects,
    start_physics,
)

if TYPE_CHECKING:
    from embodied.envs.scripted import ScriptedPolicy

OBS_MODES = ("state", "pixels", "state+pixels")
CONTROL_DT = 0.05
MAX_DELTA = 0.03  # metres of servo-target motion per control step at |a| = 1 (0.6 m/s)
TOUCH_MIN = 0.05  # newtons on a pad for it to count as touching the cup
RESET_OPTIONS = ("shift", "physics")
INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION
# MuJoCo's own divergence checks: each resets the MjData to qpos0 and counts a warning. Their
# codes are consecutive, so one slice reads them (a fancy index costs three times as much).
_BAD = [int(getattr(mujoco.mjtWarning, f"mjWARN_BAD{w}")) for w in ("QPOS", "QVEL", "QACC", "CTRL")]
assert list(range(_BAD[0], _BAD[0] + 4)) == _BAD, _BAD
DIVERGED = slice(_BAD[0], _BAD[0] + 4)
STATE_LABELS: tuple[str, ...] = (
    *(f"q{i}" for i in range(1, 8)),
    "finger",
    *(f"dq{i}" for i in range(1, 8)),
    "dfinger",
    "ee_x", "ee_y", "ee_z",
    "ee_vx", "ee_vy", "ee_vz",
    "cup_x", "cup_y", "cup_z",
    "cup_qw", "cup_qx", "cup_qy", "cup_qz",
    "cup_vx", "cup_vy", "cup_vz",
    "cup_wx", "cup_wy", "cup_wz",
    "target_x", "target_y", "target_z",
    "servo_x", "servo_y", "servo_z",
    "grip_cmd",
    "touch_left", "touch_right",
)  # fmt: skip
# the sensors read into the state, in STATE_LABELS order (ee_x ... cup_wz)
STATE_SENSORS = ("ee_pos", "ee_vel", "cup_pos", "cup_quat", "cup_vel", "cup_angvel")


def _numeric_fields(obj: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(array fields, scalar fields) of an MjModel, MjOption or MjStatistic, looked up once per
    type."""
    kind = type(obj)
    if kind not in _FIELDS:
        names = [n for n in dir(obj) if not n.startswith("_")]
        values = {n: getattr(obj, n) for n in names}
        _FIELDS[kind] = (
            tuple(n for n, v in values.items() if isinstance(v, np.ndarray)),
            tuple(
                n
                for n, v in values.items()
                if isinstance(v, float | int) and not isinstance(v, bool)
            ),
        )
    return _FIELDS[kind]


_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def copy_model_into(dst: mujoco.MjModel, src: mujoco.MjModel) -> None:
    """Overwrite every numeric field of ``dst`` with ``src``'s (same structure), the options
    and the statistics the compiler derives from masses and sizes included.

    Keeps one MjModel object per env, so a renderer built for it stays valid across resets
    (building a renderer costs ~0.2 s; copying the fields well under a millisecond).
    """
    for name in _numeric_fields(src)[0]:
        value = getattr(src, name)
        if value.size:
            np.copyto(getattr(dst, name), value)
    for part in ("opt", "stat"):
        to, of = getattr(dst, part), getattr(src, part)
        arrays, scalars = _numeric_fields(of)
        for name in arrays:
            np.copyto(getattr(to, name), getattr(of, name))
        for name in scalars:
            setattr(to, name, getattr(of, name))


def check_physics_arg(physics: object) -> dict[str, float] | None:
    """``physics=`` as a dict (None for none), or ValueError: it must map names to values."""
    if physics is None:
        return None
    if not isinstance(physics, Mapping):
        raise ValueError(
            f"physics must be a mapping of parameter name -> value, e.g. {{'cup_mass': 0.3}}; "
            f"got {physics!r}"
        )
    return dict(physics)


def check_size(name: str, value: object, lo: int, hi: int) -> int:
    """An image side as an int, or ValueError naming the range the renderer can draw."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(
            f"{name} must be an integer in [{lo}, {hi}] (the scene's offscreen framebuffer); "
            f"got {value!r}"
        )
    return int(value)


def check_action(action: Any) -> np.ndarray:
    """The action as float64 (4,), or ValueError saying what a valid action is."""
    try:
        a = np.asarray(action)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"action must be 4 finite numbers (dx, dy, dz, grip); got {action!r}"
        ) from err
    if a.dtype.kind not in "iuf":
        raise ValueError(
            f"action must be 4 finite real numbers (dx, dy, dz, grip); got dtype {a.dtype}: "
            f"{action!r}"
        )
    if a.shape != (4,):
        raise ValueError(f"action must have shape (4,) = (dx, dy, dz, grip), got {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"action must be finite, got {a}")
    return a


class ArmEnv(gymnasium.Env):
    """Shared mechanics of every task; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / CONTROL_DT))}
    # A subclass that declares its own ``task_name`` is a task: it registers itself as it is
    # defined (``__init_subclass__``), with its time limit ``max_episode_steps`` (control steps)
    # and its version (embodied/<task_name>-v<version>). A change that moves a task's numbers
    # (its reward, say) bumps its version, so data and results of the old one are refused
    # rather than mixed in.
    task_name = "Arm"
    version = 0
    max_episode_steps: int
    # Control steps a planner must look ahead for its actions to pay off in this task's reward
    # (the planners' ``horizon: null``). Measured with the oracle, 10 ID episodes a task
    # (2026-12-02): CupPush 1/10 at 5, 8/10 at 10; CupPickPlace 4/10 at 5, 9/10 at 10 (getting
    # behind the cup, or setting it down, pays off only later); CupCarry 10/10 at 5, and under
    # ood-cup_mass-3 18/20 at both 5 and 10 (seeds 1-2), so it keeps the cheaper 5.
    plan_horizon = 5
    # The state entries (STATE_LABELS) the task's reward compares with its goal (target_x, y,
    # z), one per goal coordinate: a frame model whose proprioception holds them all predicts
    # the reward from their geometry relative to the goal (agents/frames.py). () when none do.
    reward_entries: tuple[str, ...] = ()
    # (point, axes) SAC's progress shaping moves to the target, e.g. ("cup", 2): agents/sb3
    progress_point: tuple[str, int] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "task_name" in vars(cls):
            register(cls)

    def __init__(
        self,
        obs_mode: str = "state",
        shift: str = "train",
        physics: Mapping[str, float] | None = None,
        image_size: int = 64,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (240, 320),
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}; valid: {list(OBS_MODES)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: [None, 'rgb_array']")
        self.obs_mode = obs_mode
        self.shift = shift
        self.explicit_physics = check_physics_arg(physics)
        self.render_mode = render_mode
        # Validate the split and explicit values now, so bad input fails at make().
        self.physics: dict[str, float] = resolve_physics(shift, 0, self.explicit_physics)

        self.model = build_model(NOMINAL)
        width, height = self.model.vis.global_.offwidth, self.model.vis.global_.offheight
        self.image_size = check_size("image_size", image_size, 8, min(width, height))
        if not isinstance(render_size, tuple | list) or len(render_size) != 2:
            raise ValueError(f"render_size must be (height, width); got {render_size!r}")
        self.render_size = (
            check_size("render_size height", render_size[0], 1, height),
            check_size("render_size width", render_size[1], 1, width),
        )
        self.data = mujoco.MjData(self.model)
        self.n_substeps = int(round(CONTROL_DT / self.model.opt.timestep))
        self._ids()
        self._before = np.empty(mujoco.mj_stateSize(self.model, INTEGRATION))  # see _simulate
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._state_model: mujoco.MjModel | None = None
        self._state_data: mujoco.MjData | None = None

        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        state_space = spaces.Box(-np.inf, np.inf, shape=(len(STATE_LABELS),), dtype=np.float32)
        pixel_space = spaces.Box(
            0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8
        )
        self.observation_space = {
            "state": state_space,
            "pixels": pixel_space,
            "state+pixels": spaces.Dict({"state": state_space, "pixels": pixel_space}),
        }[obs_mode]
        self.state_labels = STATE_LABELS
        self.target = np.zeros(3)
        self._effects: list[Effect] = []  # the episode-stage shifts in force (catalogue)
        self._t = 0
        self._slipped = False
        self._episode_seed: int | None = None

    # ----------------------------------------------------------------- structure
    def _ids(self) -> None:
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._arm_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger_qpos = np.array(
            [m.jnt_qposadr[m.joint(j).id] for j in ("left_finger", "right_finger")]
        )
        self._finger_dof = np.array(
            [m.jnt_dofadr[m.joint(j).id] for j in ("left_finger", "right_finger")]
        )
        self._cup_qpos = m.jnt_qposadr[m.joint("cup").id]
        self._cup_dof = m.jnt_dofadr[m.joint("cup").id]
        self._target_mocap = m.body_mocapid[m.body("target").id]
        self._ee_site = m.site("ee").id
        self.pad_half_height = float(m.geom("left_pad").size[2])  # vertical, hand pointing down
        self._servo_lo = m.actuator_ctrlrange[:3, 0].copy()
        self._servo_hi = m.actuator_ctrlrange[:3, 1].copy()
        self._sensor = {
            m.sensor(i).name: slice(m.sensor_adr[i], m.sensor_adr[i] + m.sensor_dim[i])
            for i in range(m.nsensor)
        }
        self._home = m.key("home").qpos.copy()
        self._cup_geom = m.geom("cup").id
        # the state observation as gathers: qpos, qvel and sensor entries (see state_vector)
        sensor_rows = [
            np.arange(self._sensor[n].start, self._sensor[n].stop) for n in STATE_SENSORS
        ]
        self._obs_qpos = np.append(self._arm_qpos, self._finger_qpos[0])
        self._obs_qvel = np.append(self._arm_dof, self._finger_dof[0])
        self._obs_sensors = np.concatenate(sensor_rows)
        self._obs_touch = np.array([self._sensor[n].start for n in ("left_touch", "right_touch")])

    def sensor(self, name: str) -> np.ndarray:
        return self.data.sensordata[self._sensor[name]]

    # ------------------------------------------------------ the scripted controller
    def scripted_policy(self, style: str = "cautious", noise: float = 0.0, seed: int | None = None):
        """This task's scripted controller (privileged; see embodied.envs.scripted)."""
        from embodied.envs.scripted import ScriptedPolicy

        return ScriptedPolicy(self.task_name, style=style, noise=noise, seed=seed)

    def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
        """The script's servo target now (None: hold it) and grip command; the task's job.

        ``script`` keeps the episode's phase (``phase``, ``wait``, ``advance``), its style
        (``arrived``, ``speed``) and its ``variant``.
        """
        raise NotImplementedError(f"{self.task_name} has no scripted controller")

    def script_variant(self, rng: np.random.Generator | None) -> dict[str, float]:
        """The episode's variant of the script: the clean one, or with ``rng`` (a noisy
        script) a sloppy one drawn from it, where the task has one (CupPush)."""
        return {}

    def hold_action(self) -> np.ndarray:
        """The action that changes nothing: no motion, the grip command now in force."""
        return np.array([0.0, 0.0, 0.0, self.data.ctrl[6]], np.float32)

    def nominal_model(self) -> mujoco.MjModel:
        """The simulator at nominal training physics (nominal look too: planning never renders)."""
        return build_model(NOMINAL)

    # ----------------------------------------------------------------- episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if not isinstance(options, Mapping) or set(options) - set(RESET_OPTIONS):
            raise ValueError(f"reset options take the keys {list(RESET_OPTIONS)}; got {options!r}")
        shift = options.get("shift", self.shift)
        explicit = check_physics_arg(options.get("physics", self.explicit_physics))
        episode_seed = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
        self.physics = resolve_physics(shift, episode_seed, explicit)
        # The start state is laid out under nominal dynamics (with this episode's look and
        # geometry), so a work shift leaves it exactly as `id` has it: paired draws.
        copy_model_into(self.model, build_model(start_physics(self.physics)))
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self._home

        task_rng = np.random.default_rng(np.random.SeedSequence([episode_seed, 7_001]))
        self._episode_seed = episode_seed
        self._t = 0
        self._fail_streak = 0
        self._success_streak = 0
        self._slipped = False
        self._setup_episode(task_rng)
        rest_posture = self.model.qpos_spring.copy()
        copy_model_into(self.model, build_model(self.physics))
        self.model.qpos_spring[:] = rest_posture
        episode = EpisodeStart(self.model, SCENE, episode_seed, self.hold_action())
        self._effects = start_effects(self.physics, episode)
        self.data.mocap_pos[self._target_mocap] = self.target
        mujoco.mj_forward(self.model, self.data)
        info = self._info(success=False, failed=False, physics_error=False)
        return self._obs(), info

    def _setup_episode(self, rng: np.random.Generator) -> None:
        """Place the arm, cup and target; the task's job."""
        raise NotImplementedError

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        action = np.minimum(np.maximum(check_action(action), -1.0), 1.0)  # np.clip, faster
        for effect in self._effects:  # noise, latency
            action = effect.action(action)
        ctrl = self.data.ctrl
        ctrl[:3] = np.minimum(
            np.maximum(ctrl[:3] + MAX_DELTA * action[:3], self._servo_lo), self._servo_hi
        )
        ctrl[6] = action[3]

        physics_error = self._simulate()
        self._t += 1
        if physics_error:
            info = self._info(success=False, failed=False, physics_error=True)
            return self._obs(), -float(self.spec.max_episode_steps or 100), False, True, info
        reward, success, failed = self._judge()
        terminated = success or failed
        if failed:
            reward -= self.failure_penalty
        info = self._info(success=success, failed=failed, physics_error=False)
        return self._obs(), float(reward), terminated, False, info

    @property
    def failure_penalty(self) -> float:
        """200 whatever the task (``unwrapped.spec.max_episode_steps`` is None under
        ``gymnasium.make``): more than a Reach, CupCarry or CupPush episode can still lose."""
        return float(
            self.spec.max_episode_steps if self.spec and self.spec.max_episode_steps else 200
        )

    def _simulate(self) -> bool:
        """One control step; on divergence, rewind to the state before it and return True.

        MuJoCo answers a NaN or huge value by resetting the data to qpos0 (the arm would jump
        home mid-episode) and counting a warning; any such warning, a non-finite state or a
        runaway velocity is a physics error. Rewinding keeps the observation, ``render`` and
        ``data`` finite: the last physical state, never NaN for a replay buffer to learn from.
        """
        m, d, before = self.model, self.data, self._before
        mujoco.mj_getState(m, d, before, INTEGRATION)
        counts = d.warning.number[DIVERGED]  # a view of MuJoCo's counters: read live
        warned = counts.sum()
        self._advance()
        bad = counts.sum() > warned
        if bad or not np.isfinite(d.qpos).all() or np.abs(d.qvel).max() > 1e3:
            mujoco.mj_setState(m, d, before, INTEGRATION)
            mujoco.mj_forward(m, d)
            return True
        return False

    def _advance(self) -> None:
        m, d = self.model, self.data
        hooks = [e for e in self._effects if e.per_substep]  # a push
        if not hooks:
            mujoco.mj_step(m, d, nstep=self.n_substeps)
            return
        step0 = self._t * self.n_substeps
        for k in range(self.n_substeps):
            for effect in hooks:
                effect.substep(d, step0 + k)
            mujoco.mj_step(m, d)

    # How many consecutive control steps success / failure must last before they count.
    success_hold = 1
    fail_hold = 1

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reward, success_now, failing_now) from sensor readings; the task's job.

        Vectorised over leading dimensions, so the environment and the simulators that plan
        with ``mujoco.rollout`` judge with the very same code.
        """
        raise NotImplementedError

    def slipping(self, sensordata: np.ndarray) -> np.ndarray:
        """Which failing states are slips, not drops: the cup still held but too far in the hand.

        A slip is a failure that does not end the episode (the cup is still in the hand, and
        the simulation decides whether it falls); the task's job where it carries a cup.
        """
        return np.zeros(np.shape(sensordata)[:-1], dtype=bool)

    def _judge(self) -> tuple[float, bool, bool]:
        """(reward, success, dropped); a slip is remembered in ``self._slipped``."""
        reward, success_now, failing_now = self.score(self.data.sensordata)
        self._success_streak = self._success_streak + 1 if success_now else 0
        self._fail_streak = self._fail_streak + 1 if failing_now else 0
        failing = self._fail_streak >= self.fail_hold
        slipping = failing and bool(self.slipping(self.data.sensordata))
        self._slipped = self._slipped or slipping
        dropped = failing and not slipping
        success = self._success_streak >= self.success_hold and not (dropped or self._slipped)
        return float(reward), success, dropped

    def sensors(self, sensordata: np.ndarray) -> Sensors:
        """Named views into a (..., nsensordata) array."""
        return Sensors(sensordata, self._sensor)

    def _info(self, *, success: bool, failed: bool, physics_error: bool) -> dict[str, Any]:
        """``slipped`` stays true for the rest of the episode; ``seed`` reproduces it:
        ``reset(seed=info["seed"])`` with the same split draws the same physics and start."""
        return {
            "is_success": bool(success),
            "dropped": bool(failed),
            "slipped": self._slipped,
            "physics_error": bool(physics_error),
            "physics": dict(self.physics),
            "seed": self._episode_seed,
        }

    # ----------------------------------------------------------------- helpers for tasks
    @staticmethod
    def pinched(s: Mapping[str, np.ndarray]) -> np.ndarray:
        """Both pads press on the cup (the lesser force above the threshold: both comparisons'
        answer, NaN included, in one)."""
        return np.minimum(s["left_touch"][..., 0], s["right_touch"][..., 0]) > TOUCH_MIN

    @staticmethod
    def touching(s: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.maximum(s["left_touch"][..., 0], s["right_touch"][..., 0]) > TOUCH_MIN

    @staticmethod
    def tilt(s: Mapping[str, np.ndarray]) -> np.ndarray:
        """Angle in radians between the cup's axis and the vertical."""
        q = s["cup_quat"]
        qx, qy = q[..., 1], q[..., 2]
        cos = 1.0 - 2.0 * (qx * qx + qy * qy)  # x * x is x ** 2's bits
        return np.arccos(np.minimum(np.maximum(cos, -1.0), 1.0))  # np.clip's, faster

    def place_hand(self, ee_pos: np.ndarray, opening: float) -> None:
        """Put the hand at ``ee_pos`` (pointing down) by kinematic IK; servos target it."""
        m, d = self.model, self.data
        jac = np.zeros((3, m.nv))
        jacr = np.zeros((3, m.nv))
        target_rot = np.diag([1.0, -1.0, -1.0])
        for _ in range(60):
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err = ee_pos - d.site_xpos[self._ee_site]
            rot = d.site_xmat[self._ee_site].reshape(3, 3)
            rerr = 0.5 * sum(np.cross(rot[:, i], target_rot[:, i]) for i in range(3))
            if np.linalg.norm(err) < 1e-5 and np.linalg.norm(rerr) < 1e-4:
                break
            mujoco.mj_jacSite(m, d, jac, jacr, self._ee_site)
            j = np.vstack([jac[:, self._arm_dof], jacr[:, self._arm_dof]])
            dq = j.T @ np.linalg.solve(j @ j.T + 1e-4 * np.eye(6), np.concatenate([err, rerr]))
            d.qpos[self._arm_qpos] += dq
        d.qpos[self._finger_qpos] = opening
        d.qvel[:] = 0.0
        d.ctrl[:3] = ee_pos
        d.ctrl[3:6] = 0.0
        mujoco.mj_kinematics(m, d)
        # the rest posture of the joint springs is where IK put the arm
        m.qpos_spring[self._arm_qpos] = d.qpos[self._arm_qpos]

    def place_cup(self, pos: np.ndarray) -> None:
        self.data.qpos[self._cup_qpos : self._cup_qpos + 3] = pos
        self.data.qpos[self._cup_qpos + 3 : self._cup_qpos + 7] = (1.0, 0.0, 0.0, 0.0)
        self.data.qvel[self._cup_dof : self._cup_dof + 6] = 0.0

    def settle(self, seconds: float, grip: float) -> None:
        self.data.ctrl[6] = grip
        mujoco.mj_step(self.model, self.data, nstep=int(round(seconds / self.model.opt.timestep)))

    @property
    def cup_radius(self) -> float:
        return float(self.model.geom_size[self._cup_geom, 0])

    @property
    def cup_half_height(self) -> float:
        return float(self.model.geom_size[self._cup_geom, 1])

    # ----------------------------------------------------------------- observations
    def state_vector(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """The ``state`` observation of ``data`` (default: the env's own), laid out as
        STATE_LABELS: gathered into one float64 buffer, then cast (as a concatenation would)."""
        d = self.data if data is None else data
        out = np.empty(len(STATE_LABELS))
        out[0:8] = d.qpos[self._obs_qpos]
        out[8:16] = d.qvel[self._obs_qvel]
        sensordata = d.sensordata
        out[16:35] = sensordata[self._obs_sensors]
        out[35:38] = d.mocap_pos[self._target_mocap]
        ctrl = d.ctrl
        out[38:41] = ctrl[:3]
        out[41] = ctrl[6]
        out[42:44] = np.minimum(sensordata[self._obs_touch], 50.0) / 10.0
        return out.astype(np.float32)

    def _obs(self) -> Any:
        if self.obs_mode == "state":
            return self.state_vector()
        frame = self._render(self.model, self.data, (self.image_size, self.image_size))
        if self.obs_mode == "pixels":
            return frame
        return {"state": self.state_vector(), "pixels": frame}

    def _render(
        self, model: mujoco.MjModel, data: mujoco.MjData, size: tuple[int, int]
    ) -> np.ndarray:
        key = (id(model), *size)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = self._renderers[key] = mujoco.Renderer(model, size[0], size[1])
        renderer.update_scene(data, camera="fixed")
        return renderer.render()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render(self.model, self.data, self.render_size)

    def render_state(self, state: np.ndarray, size: int | None = None) -> np.ndarray:
        """A frame of the scene at a state vector, with the nominal look.

        State world models are scored on video metrics through this: their predicted state is
        rendered by MuJoCo exactly as the true state would be.
        """
        if self._state_model is None:
            self._state_model = build_model(NOMINAL)
            self._state_data = mujoco.MjData(self._state_model)
        m, d = self._state_model, self._state_data
        assert d is not None
        s = np.asarray(state, dtype=np.float64)
        if s.shape != (len(self.state_labels),):
            raise ValueError(
                f"state must be a vector of {len(self.state_labels)} entries (state_labels); "
                f"got shape {s.shape}"
            )
        d.qpos[:] = self._home
        d.qpos[self._arm_qpos] = s[0:7]
        d.qpos[self._finger_qpos] = s[7]
        quat = s[25:29]
        norm = np.linalg.norm(quat)
        d.qpos[self._cup_qpos : self._cup_qpos + 3] = s[22:25]
        d.qpos[self._cup_qpos + 3 : self._cup_qpos + 7] = (
            quat / norm if norm > 1e-6 else (1, 0, 0, 0)
        )
        d.mocap_pos[self._target_mocap] = s[35:38]
        mujoco.mj_kinematics(m, d)
        mujoco.mj_camlight(m, d)
        side = int(size or self.image_size)
        return self._render(m, d, (side, side))

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the renderers: a GL context belongs to one process and cannot be
        pickled or copied; a copy builds its own on its first frame."""
        state = self.__dict__.copy()
        state["_renderers"] = {}
        return state
