"""The declarative catalogue of shifts: what each changes, nominal value, ID range, OOD values.

A *parameter* is one float in ``info["physics"]``; a *shift* is a named group of parameters that a
split can change together (``push`` moves force, time and angle). Work shifts change dynamics only,
look shifts appearance only, ``cup_size`` both. Nominal values equal the values in ``arm.xml``.

OOD values are fixed points, one per severity 1..5 (monotone, 5 furthest from nominal), so a
severity means one physical value ("ood-cup_mass-3" is a 0.40 kg cup), while the parameters a
split does not name keep their paired in-distribution draws. Parameters with no OOD values
(``push_time``, ``push_angle``) keep their ID draw under every split. Look shifts have no
severities: ``look-<shift>`` draws from a wide ``look_range`` well away from the ID range.
"""

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ShiftKind = Literal["work", "look", "both"]
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
    fields: tuple[str, ...]  # MjModel fields written ("opt.gravity"), or "env: ..." effects
    derived: tuple[str, ...] = ()  # fields MuJoCo recomputes from the written ones

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
        fields=("env: delays actions",),
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
        fields=("env: perturbs actions",),
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
        fields=("env: applies xfrc_applied to the cup",),
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
    ),
)

SHIFTS: dict[str, Shift] = {s.name: s for s in _WORK + _LOOK + _BOTH}
PARAMS: dict[str, Param] = {p.name: p for s in SHIFTS.values() for p in s.params}
NOMINAL: dict[str, float] = {name: float(p.nominal) for name, p in PARAMS.items()}
# The parameters that change the model's geometry: build_model rebuilds through MjSpec for them.
GEOMETRY_PARAMS: tuple[str, ...] = ("cup_size",)


def validate_physics(values: Mapping[str, object]) -> dict[str, float]:
    """Explicit parameter values as floats; unknown names or invalid values raise ValueError."""
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in PARAMS:
            raise ValueError(f"unknown physics parameter {name!r}; valid: {sorted(PARAMS)}")
        out[name] = PARAMS[name].check(value)
    return out
