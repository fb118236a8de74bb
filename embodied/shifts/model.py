"""Build the MjModel for a physics dict in a scene, and start the effects of an episode.

``build_model`` is a pure function of the dict (and the scene): the same values give the same
model, so ``info["physics"]`` reproduces an episode. A compiled base is cached per geometry
(the shifts with an ``edit_spec`` writer: ``cup_size``); every call copies it (~0.1 ms) and
each shift's ``write_model`` writes its fields into the copy, work shifts first. When the
masses moved, ``mj_setConst`` then recomputes the constants MuJoCo derives from them, so the
copy matches a model compiled from XML with those masses; the look shifts write last.

The scene is always passed in by the env package (``embodied.envs.scene.build_model`` binds
its own); this module never reads a scene asset.
"""

import copy
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache

import mujoco
import numpy as np

from embodied.shifts.catalogue import GEOMETRY_PARAMS, NOMINAL, SHIFTS, Shift, validate_physics
from embodied.shifts.scene import Effect, EpisodeStart, Scene

_SCRATCH_LOCK = threading.Lock()  # guards the scratch MjData that mj_setConst writes into


@lru_cache(maxsize=8)
def _base_model(scene: Scene, geometry: tuple[float, ...]) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """The compiled scene at this geometry and a scratch MjData for it (creating one costs more
    than the rest of build_model); never handed out."""
    spec = mujoco.MjSpec.from_string(scene.xml)
    values = {**NOMINAL, **dict(zip(GEOMETRY_PARAMS, geometry, strict=True))}
    for shift in SHIFTS.values():
        if shift.edit_spec is not None:
            shift.edit_spec(spec, values, scene)
    model = spec.compile()
    return model, mujoco.MjData(model)


def _sequential_sum(values: np.ndarray) -> float:
    """Left-to-right sum, as MuJoCo's C loops add (numpy's pairwise sum rounds differently)."""
    total = 0.0
    for v in values.tolist():
        total += v
    return total


def build_model(physics: Mapping[str, float], scene: Scene) -> mujoco.MjModel:
    """A fresh MjModel of ``scene`` with every parameter in ``physics`` applied (missing ones
    are nominal)."""
    p = {**NOMINAL, **validate_physics(physics)}
    base, scratch = _base_model(scene, tuple(p[name] for name in GEOMETRY_PARAMS))
    m = copy.copy(base)
    write_work(m, base, p, scene, scratch)
    # The look last: mj_setConst would fold a moved camera into its constants, and a look shift
    # moves its own fields only.
    for shift in SHIFTS.values():
        if shift.write_model is not None and not shift.work:
            shift.write_model(m, p, scene)
    return m


WORK_WRITERS = tuple(s for s in SHIFTS.values() if s.work and s.write_model is not None)


def write_work(
    m: mujoco.MjModel,
    base: mujoco.MjModel,
    physics: Mapping[str, float],
    scene: Scene,
    scratch: mujoco.MjData,
    shifts: Sequence[Shift] = WORK_WRITERS,
) -> None:
    """Rewrite ``m``, a copy of ``base``, in place at ``physics`` (every parameter given): the
    fields ``shifts`` own and what MuJoCo derives from them reset to ``base``'s (all first: two
    shifts may share a field), each writer applied in catalogue order, and the mass constants
    recomputed if the masses moved. build_model runs it on a fresh copy; sysid rewrites its
    candidate models with it, no copy or compile per candidate."""
    for path in {f for shift in shifts for f in shift.fields + shift.derived}:
        part, _, name = path.rpartition(".")
        to, of = (getattr(m, part), getattr(base, part)) if part else (m, base)
        if isinstance(getattr(of, name), np.ndarray):
            np.copyto(getattr(to, name), getattr(of, name))
        else:
            setattr(to, name, getattr(of, name))
    for shift in shifts:
        shift.write_model(m, physics, scene)
    if not (
        np.array_equal(m.body_mass, base.body_mass)
        and np.array_equal(m.body_inertia, base.body_inertia)
    ):
        _set_mass_constants(m, scratch)


def _set_mass_constants(m: mujoco.MjModel, scratch: mujoco.MjData) -> None:
    """What MuJoCo derives from the masses, recomputed after they moved."""
    with _SCRATCH_LOCK:
        mujoco.mj_setConst(m, scratch)
    # The compiler's means, which mj_setConst leaves alone (the solver scales by meaninertia).
    m.stat.meanmass = _sequential_sum(m.body_mass[1:]) / (m.nbody - 1)
    m.stat.meaninertia = _sequential_sum(m.dof_M0) / m.nv


def start_effects(physics: Mapping[str, float], episode: EpisodeStart) -> list[Effect]:
    """The effects of the episode-stage shifts that ``physics`` moves, in catalogue order."""
    p = {**NOMINAL, **validate_physics(physics)}
    effects = (s.start_effect(p, episode) for s in SHIFTS.values() if s.start_effect)
    return [e for e in effects if e is not None]
