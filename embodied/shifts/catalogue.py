"""The declarative catalogue of shifts: what each changes, nominal value, ID range, OOD values.

A *parameter* is one float in ``info["physics"]``; a *shift* is a named group of parameters that a
split can change together (``push`` moves force, time and angle). Work shifts change dynamics only,
look shifts appearance only, ``cup_size`` both. Nominal values equal the values in ``arm.xml``.

OOD values are fixed points, one per severity 1..5 (monotone, 5 furthest from nominal), so a
severity means one physical value ("ood-cup_mass-3" is a 0.40 kg cup), while the parameters a
split does not name keep their paired in-distribution draws. Parameters with no OOD values
(``push_time``, ``push_angle``) keep their ID draw under every split. Look shifts have no
severities: ``look-<shift>`` draws from a wide ``look_range`` well away from the ID range.

Each shift also carries its writer, so it is declared and applied here and nowhere else. A writer
acts at one of three stages: ``edit_spec`` changes the MjSpec before it compiles (geometry,
cached per value), ``write_model`` writes fields of the compiled MjModel, ``start_effect``
starts an :class:`~embodied.shifts.scene.Effect` that acts while the episode runs (episode
effects act in catalogue order: noise before latency, so the noisy command is what is delayed).
Writers name scene elements by role; the env's :class:`~embodied.shifts.scene.Scene` maps the
roles to names, so nothing here knows the scene's assets.
"""

import colorsys
import math
import numbers
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np

from embodied.shifts.scene import Effect, EpisodeStart, Scene

ShiftKind = Literal["work", "look", "both"]
Physics = Mapping[str, float]  # every parameter by name
INF = math.inf


@dataclass(frozen=True)
class Param:
    """One physics parameter: its nominal value, ranges and physically valid interval."""

    name: str
    nominal: float
    id_range: tuple[float, float]  # train and id draw uniformly from it
    valid: tuple[float, float]  # explicit values must lie in it (closed, unless open_low)
    severities: tuple[float, ...] | None = None  # OOD value at severity 1..5
    unit: str = ""
    look_range: tuple[float, float] | None = None  # look-<shift> draws uniformly from it
    signed: bool = False  # look draw: magnitude from look_range, random sign
    integer: bool = False  # values must be whole numbers (stored as floats)
    open_low: bool = False  # the valid interval excludes its lower bound (mass, gravity)

    def check(self, value: object) -> float:
        """The value as a float, or ValueError naming the valid range."""
        lo, hi = self.valid
        left = "(" if self.open_low or lo == -INF else "["
        right = ")" if hi == INF else "]"
        where = f"{self.name} must be {'an integer' if self.integer else 'a finite number'} in "
        where += f"{left}{lo:g}, {hi:g}{right}{(' ' + self.unit) if self.unit else ''}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy reals pass
            raise ValueError(f"{where}; got {value!r}")
        v = float(value)
        low_ok = v > lo if self.open_low else v >= lo
        if not math.isfinite(v) or not low_ok or v > hi or (self.integer and v != round(v)):
            raise ValueError(f"{where}; got {value!r}")
        return v


@dataclass(frozen=True)
class Shift:
    """A named change of the world and the MjModel fields (or env effects) it touches."""

    name: str
    kind: ShiftKind
    description: str
    params: tuple[Param, ...]
    # MjModel fields written ("opt.gravity"), or MjData fields its effect writes ("data.ctrl")
    fields: tuple[str, ...]
    derived: tuple[str, ...] = ()  # fields MuJoCo recomputes from the written ones
    # its writer, exactly one of the three (module docstring)
    edit_spec: Callable[[mujoco.MjSpec, Physics, Scene], None] | None = None
    write_model: Callable[[mujoco.MjModel, Physics, Scene], None] | None = None
    start_effect: Callable[[Physics, EpisodeStart], Effect | None] | None = None

    def __post_init__(self) -> None:
        writers = (self.edit_spec, self.write_model, self.start_effect)
        if sum(w is not None for w in writers) != 1:
            raise ValueError(
                f"shift {self.name!r} needs exactly one writer: edit_spec, write_model or "
                "start_effect"
            )

    @property
    def work(self) -> bool:
        return self.kind in ("work", "both")

    @property
    def look(self) -> bool:
        return self.kind in ("look", "both")

    @property
    def has_severities(self) -> bool:
        return any(p.severities is not None for p in self.params)


# Constants MuJoCo derives from masses (mj_setConst, and the compiler's mean mass and inertia).
MASS_DERIVED = (
    "body_subtreemass",
    "body_invweight0",
    "dof_invweight0",
    "dof_M0",
    "tendon_invweight0",
    "actuator_acc0",
    "cam_poscom0",
    "light_poscom0",
    "stat.meanmass",
    "stat.meaninertia",
)


def _sev(*values: float) -> tuple[float, ...]:
    assert len(values) == 5, "one OOD value per severity 1..5"
    return tuple(float(v) for v in values)


# ----------------------------------------------------------------- writers


def _ids(model: mujoco.MjModel | mujoco.MjSpec, kind: str, scene: Scene, role: str) -> list:
    """The elements of ``kind`` ("body", "pair", ...) that play ``role`` in the scene."""
    return [getattr(model, kind)(name) for name in scene[role]]


def _scale_cup(spec: mujoco.MjSpec, p: Physics, scene: Scene) -> None:
    for geom in _ids(spec, "geom", scene, "cup_geom"):
        geom.size = np.asarray(geom.size) * p["cup_size"]
        geom.mass = geom.mass * p["cup_size"] ** 3  # constant density


def _cup_mass(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    ratio = p["cup_mass"] / NOMINAL["cup_mass"]  # of the mass the geometry stage left
    for body in _ids(m, "body", scene, "cup_body"):
        m.body_mass[body.id] *= ratio
        m.body_inertia[body.id] *= ratio


def _cup_friction(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for pair in _ids(m, "pair", scene, "pad_pairs"):
        m.pair_friction[pair.id, 0:2] = p["cup_friction"]


def _table_friction(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for pair in _ids(m, "pair", scene, "table_pair"):
        m.pair_friction[pair.id, 0:2] = p["table_friction"]


def _grip_force(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for actuator in _ids(m, "actuator", scene, "grip"):
        m.actuator_gainprm[actuator.id, 0] = p["grip_force"]


def _actuator_gain(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for actuator in _ids(m, "actuator", scene, "servos"):
        m.actuator_gainprm[actuator.id, 0] *= p["actuator_gain"]  # kp
        m.actuator_biasprm[actuator.id, 1:3] *= p["actuator_gain"]  # -kp, -kv


def _joint_damping(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for joint in _ids(m, "joint", scene, "arm_joints"):
        m.dof_damping[joint.dofadr[0]] = p["joint_damping"]


def _gravity(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    m.opt.gravity[2] = -p["gravity"]


def _cup_colour(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    if p["cup_hue"] == 0.0:  # the HSV round trip is not bit-exact: nominal stays the XML's
        return
    for geom in _ids(m, "geom", scene, "cup_geom"):
        h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in m.geom_rgba[geom.id, :3]))
        m.geom_rgba[geom.id, :3] = colorsys.hsv_to_rgb((h + p["cup_hue"]) % 1.0, s, v)


def _table_colour(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    if p["table_tint"] == 0.0:
        return
    tint = np.array(colorsys.hsv_to_rgb(p["table_hue"], 1.0, 1.0))
    for material in _ids(m, "material", scene, "table_material"):
        m.mat_rgba[material.id, :3] = (1.0 - p["table_tint"]) + p["table_tint"] * tint


def _light(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for light in _ids(m, "light", scene, "key_light"):
        m.light_diffuse[light.id] *= p["light_level"]


def _camera_jitter(m: mujoco.MjModel, p: Physics, scene: Scene) -> None:
    for camera in _ids(m, "camera", scene, "camera"):
        m.cam_pos[camera.id] += [p["camera_dx"], p["camera_dy"], p["camera_dz"]]


class _Noise(Effect):
    def __init__(self, std: float, seed: int) -> None:
        self.std = std
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7_002]))

    def action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action + self.std * self.rng.standard_normal(action.shape), -1.0, 1.0)


def _action_noise(p: Physics, episode: EpisodeStart) -> Effect | None:
    return _Noise(p["action_noise"], episode.seed) if p["action_noise"] > 0.0 else None


class _Delay(Effect):
    def __init__(self, steps: int, hold: np.ndarray) -> None:
        self.queue = deque(hold.copy() for _ in range(steps))

    def action(self, action: np.ndarray) -> np.ndarray:
        self.queue.append(action)
        return self.queue.popleft()


def _action_latency(p: Physics, episode: EpisodeStart) -> Effect | None:
    # a delayed arm keeps doing what it did before the episode: hold still, same grip
    steps = int(round(p["action_latency"]))
    return _Delay(steps, episode.hold) if steps else None


class _Shove(Effect):
    per_substep = True

    def __init__(self, bodies: list[int], steps: range, force: np.ndarray) -> None:
        self.bodies, self.steps, self.force = bodies, steps, force

    def substep(self, data: mujoco.MjData, step: int) -> None:
        data.xfrc_applied[self.bodies, :3] = self.force if step in self.steps else 0.0


def _push(p: Physics, episode: EpisodeStart) -> Effect | None:
    if p["push_force"] <= 0.0:
        return None
    dt = episode.model.opt.timestep
    start = int(round(p["push_time"] / dt))
    force = p["push_force"] * np.array([np.cos(p["push_angle"]), np.sin(p["push_angle"]), 0.0])
    bodies = [b.id for b in _ids(episode.model, "body", episode.scene, "cup_body")]
    return _Shove(bodies, range(start, start + int(round(0.1 / dt))), force)


# ----------------------------------------------------------------- the catalogue


_WORK = (
    Shift(
        name="cup_mass",
        kind="work",
        description="mass of the cup (inertia scales with it); held by friction 2*mu*F vs m*(g+a)",
        params=(
            Param(
                "cup_mass",
                nominal=0.2,
                id_range=(0.17, 0.23),
                severities=_sev(0.28, 0.34, 0.40, 0.46, 0.55),
                valid=(0.0, INF),
                open_low=True,
                unit="kg",
            ),
        ),
        fields=("body_mass", "body_inertia"),
        derived=MASS_DERIVED,
        write_model=_cup_mass,
    ),
    Shift(
        name="cup_friction",
        kind="work",
        description="sliding friction of the cup-pad contact pairs (not of a geom)",
        params=(
            Param(
                "cup_friction",
                nominal=0.8,
                id_range=(0.72, 0.88),
                severities=_sev(0.55, 0.45, 0.38, 0.33, 0.28),
                valid=(0.0, INF),
            ),
        ),
        fields=("pair_friction",),
        write_model=_cup_friction,
    ),
    Shift(
        name="table_friction",
        kind="work",
        description="sliding friction of the cup-table contact pair",
        params=(
            Param(
                "table_friction",
                nominal=0.5,
                id_range=(0.45, 0.55),
                severities=_sev(0.35, 0.25, 0.17, 0.10, 0.05),
                valid=(0.0, INF),
            ),
        ),
        fields=("pair_friction",),
        write_model=_table_friction,
    ),
    Shift(
        name="grip_force",
        kind="work",
        description="squeeze of each finger at full grip command (gain of the grip actuator)",
        params=(
            Param(
                "grip_force",
                nominal=3.0,
                id_range=(2.7, 3.3),
                severities=_sev(2.15, 1.75, 1.5, 1.3, 1.1),
                valid=(0.0, INF),
                unit="N",
            ),
        ),
        fields=("actuator_gainprm",),
        write_model=_grip_force,
    ),
    Shift(
        name="actuator_gain",
        kind="work",
        description="scale of the stiffness and damping (kp, kv) of the x/y/z end-effector servos",
        params=(
            Param(
                "actuator_gain",
                nominal=1.0,
                id_range=(0.9, 1.1),
                severities=_sev(0.5, 0.3, 0.2, 0.12, 0.06),
                valid=(0.0, INF),
                unit="x",
            ),
        ),
        fields=("actuator_gainprm", "actuator_biasprm"),
        write_model=_actuator_gain,
    ),
    Shift(
        name="joint_damping",
        kind="work",
        description="viscous damping of the seven arm joints",
        params=(
            Param(
                "joint_damping",
                nominal=2.0,
                id_range=(1.7, 2.3),
                severities=_sev(10.0, 25.0, 50.0, 100.0, 200.0),
                valid=(0.0, INF),
                unit="N*m*s/rad",
            ),
        ),
        fields=("dof_damping",),
        write_model=_joint_damping,
    ),
    Shift(
        name="gravity",
        kind="work",
        description="magnitude of gravity (the arm is gravity-compensated; the cup is not)",
        params=(
            Param(
                "gravity",
                nominal=9.81,
                id_range=(9.6, 10.0),
                severities=_sev(11.5, 13.0, 15.0, 17.5, 20.0),
                valid=(0.0, INF),
                open_low=True,
                unit="m/s^2",
            ),
        ),
        fields=("opt.gravity",),
        write_model=_gravity,
    ),
    Shift(
        name="action_noise",
        kind="work",
        description="std of Gaussian noise added to each action (action units, before clipping)",
        params=(
            Param(
                "action_noise",
                nominal=0.0,
                id_range=(0.0, 0.02),
                severities=_sev(0.1, 0.2, 0.3, 0.45, 0.6),
                valid=(0.0, INF),
            ),
        ),
        fields=("data.ctrl",),
        start_effect=_action_noise,
    ),
    Shift(
        name="action_latency",
        kind="work",
        description="control steps (50 ms each) between an action and its effect",
        params=(
            Param(
                "action_latency",
                nominal=0.0,
                id_range=(0.0, 0.0),
                severities=_sev(1, 2, 3, 4, 6),
                valid=(0.0, 50.0),
                integer=True,
                unit="steps",
            ),
        ),
        fields=("data.ctrl",),
        start_effect=_action_latency,
    ),
    Shift(
        name="push",
        kind="work",
        description="a horizontal shove on the cup push_time s after reset, towards push_angle",
        params=(
            Param(
                "push_force",
                nominal=0.0,
                id_range=(0.0, 0.0),
                severities=_sev(3.0, 4.0, 5.0, 6.5, 8.0),
                valid=(0.0, INF),
                unit="N",
            ),
            Param("push_time", nominal=0.3, id_range=(0.1, 0.5), valid=(0.0, INF), unit="s"),
            Param(
                "push_angle",
                nominal=0.0,
                id_range=(-math.pi, math.pi),
                valid=(-INF, INF),
                unit="rad",
            ),
        ),
        fields=("data.xfrc_applied",),
        start_effect=_push,
    ),
)

_LOOK = (
    Shift(
        name="cup_colour",
        kind="look",
        description="hue of the cup, rotated from the scene's red (in turns)",
        params=(
            Param(
                "cup_hue",
                nominal=0.0,
                id_range=(-0.02, 0.02),
                look_range=(0.2, 0.8),
                valid=(-1.0, 1.0),
                unit="turns",
            ),
        ),
        fields=("geom_rgba",),
        write_model=_cup_colour,
    ),
    Shift(
        name="table_colour",
        kind="look",
        description="tint of the table's checker texture: strength (0 = none) and hue",
        params=(
            Param(
                "table_tint",
                nominal=0.0,
                id_range=(0.0, 0.05),
                look_range=(0.5, 0.9),
                valid=(0.0, 1.0),
            ),
            Param(
                "table_hue",
                nominal=0.0,
                id_range=(0.0, 1.0),
                look_range=(0.0, 1.0),
                valid=(0.0, 1.0),
                unit="turns",
            ),
        ),
        fields=("mat_rgba",),
        write_model=_table_colour,
    ),
    Shift(
        name="light",
        kind="look",
        description="brightness of the key light (scale of its diffuse colour)",
        params=(
            Param(
                "light_level",
                nominal=1.0,
                id_range=(0.9, 1.1),
                look_range=(0.2, 0.55),
                valid=(0.0, 3.0),
                unit="x",
            ),
        ),
        fields=("light_diffuse",),
        write_model=_light,
    ),
    Shift(
        name="camera_jitter",
        kind="look",
        description="offset of the fixed camera's position (look draws: random sign per axis)",
        params=tuple(
            Param(
                f"camera_d{axis}",
                nominal=0.0,
                id_range=(-0.005, 0.005),
                look_range=(0.02, 0.05),
                signed=True,
                valid=(-0.2, 0.2),
                unit="m",
            )
            for axis in "xyz"
        ),
        fields=("cam_pos",),
        write_model=_camera_jitter,
    ),
)

_BOTH = (
    Shift(
        name="cup_size",
        kind="both",
        description="scale of the cup radius and height; mass follows (constant density: x size^3)",
        params=(
            Param(
                "cup_size",
                nominal=1.0,
                id_range=(1.0, 1.0),
                severities=_sev(1.08, 1.16, 1.24, 1.32, 1.40),
                valid=(0.5, 1.5),
                unit="x",
            ),
        ),
        fields=("geom_size", "body_mass", "body_inertia"),
        derived=MASS_DERIVED + ("geom_rbound", "geom_aabb", "dof_length", "stat.meansize"),
        edit_spec=_scale_cup,
    ),
)

SHIFTS: dict[str, Shift] = {s.name: s for s in _WORK + _LOOK + _BOTH}
PARAMS: dict[str, Param] = {p.name: p for s in SHIFTS.values() for p in s.params}
NOMINAL: dict[str, float] = {name: float(p.nominal) for name, p in PARAMS.items()}
# The parameters that change the geometry: build_model compiles (and caches) a base per value.
GEOMETRY_PARAMS: tuple[str, ...] = tuple(
    p.name for s in SHIFTS.values() if s.edit_spec is not None for p in s.params
)


def validate_physics(values: Mapping[str, object]) -> dict[str, float]:
    """Explicit parameter values as floats; unknown names or invalid values raise ValueError."""
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in PARAMS:
            raise ValueError(f"unknown physics parameter {name!r}; valid: {sorted(PARAMS)}")
        out[name] = PARAMS[name].check(value)
    return out
