"""Build the MjModel for a physics dict: geometry through MjSpec (cached), the rest in place.

``build_model`` is a pure function of the dict: the same values give the same model, so
``info["physics"]`` reproduces an episode. A compiled base model is cached per geometry
(``cup_size``); every call copies it (~0.1 ms) and writes the remaining parameters into the copy.
After a mass change ``mj_setConst`` recomputes the constants MuJoCo derives from masses, so the
copy matches a model compiled from XML with that mass.
"""

import colorsys
import copy
import threading
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

import mujoco
import numpy as np

from embodied.shifts.catalogue import GEOMETRY_PARAMS, NOMINAL, validate_physics

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
SERVOS = ("x", "y", "z")
PAD_PAIRS = ("cup_left_pad", "cup_right_pad")


def scene_xml() -> str:
    """The packaged MJCF scene."""
    return resources.files("embodied.envs").joinpath("assets/arm.xml").read_text()


_SCRATCH_LOCK = threading.Lock()  # guards the scratch MjData that mj_setConst writes into


@lru_cache(maxsize=8)
def _base_model(cup_size: float) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """The compiled scene at this geometry (nominal cup mass scaled by size^3) and a scratch
    MjData for it (creating one costs more than the rest of build_model); never handed out."""
    spec = mujoco.MjSpec.from_string(scene_xml())
    if cup_size != NOMINAL["cup_size"]:
        cup = spec.geom("cup")
        cup.size = np.asarray(cup.size) * cup_size
        cup.mass = cup.mass * cup_size**3
    model = spec.compile()
    return model, mujoco.MjData(model)


def _sequential_sum(values: np.ndarray) -> float:
    """Left-to-right sum, as MuJoCo's C loops add (numpy's pairwise sum rounds differently)."""
    total = 0.0
    for v in values.tolist():
        total += v
    return total


def _rotate_hue(rgb: np.ndarray, turns: float) -> list[float]:
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb))
    return list(colorsys.hsv_to_rgb((h + turns) % 1.0, s, v))


def build_model(physics: Mapping[str, float]) -> mujoco.MjModel:
    """A fresh MjModel with every parameter in ``physics`` applied (missing ones are nominal)."""
    p = {**NOMINAL, **validate_physics(physics)}
    base, scratch = _base_model(*(p[name] for name in GEOMETRY_PARAMS))
    m = copy.copy(base)

    cup = m.body("cup").id
    ratio = p["cup_mass"] / NOMINAL["cup_mass"]
    if ratio != 1.0:
        m.body_mass[cup] = base.body_mass[cup] * ratio
        m.body_inertia[cup] = base.body_inertia[cup] * ratio
        with _SCRATCH_LOCK:
            mujoco.mj_setConst(m, scratch)
        # The compiler's means, which mj_setConst leaves alone (the solver scales by meaninertia).
        m.stat.meanmass = _sequential_sum(m.body_mass[1:]) / (m.nbody - 1)
        m.stat.meaninertia = _sequential_sum(m.dof_M0) / m.nv

    for name in PAD_PAIRS:
        m.pair_friction[m.pair(name).id, 0:2] = p["cup_friction"]
    m.pair_friction[m.pair("cup_table").id, 0:2] = p["table_friction"]
    m.actuator_gainprm[m.actuator("grip").id, 0] = p["grip_force"]
    for name in SERVOS:
        a = m.actuator(name).id
        m.actuator_gainprm[a, 0] *= p["actuator_gain"]
        m.actuator_biasprm[a, 1:3] *= p["actuator_gain"]
    for name in ARM_JOINTS:
        m.dof_damping[m.joint(name).dofadr[0]] = p["joint_damping"]
    m.opt.gravity[2] = -p["gravity"]

    if p["cup_hue"] != 0.0:
        g = m.geom("cup").id
        m.geom_rgba[g, :3] = _rotate_hue(base.geom_rgba[g, :3], p["cup_hue"])
    if p["table_tint"] != 0.0:
        tint = np.array(colorsys.hsv_to_rgb(p["table_hue"], 1.0, 1.0))
        mat = m.material("table").id
        m.mat_rgba[mat, :3] = (1.0 - p["table_tint"]) + p["table_tint"] * tint
    m.light_diffuse[m.light("key").id] *= p["light_level"]
    m.cam_pos[m.camera("fixed").id] += [p["camera_dx"], p["camera_dy"], p["camera_dz"]]
    return m
