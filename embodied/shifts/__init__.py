"""Shifts: the catalogue of work and look changes (each with its writer), splits with paired
draws, and model building for a scene the env hands over.

physics = resolve_physics("ood-cup_mass-3", seed)   # every parameter in force, by name
model = build_model(physics, scene)                  # the MjModel for those values
effects = start_effects(physics, episode)            # what acts while the episode runs
"""

from embodied.shifts.catalogue import (
    NOMINAL,
    PARAMS,
    SHIFTS,
    Param,
    Shift,
    validate_physics,
)
from embodied.shifts.model import build_model, start_effects
from embodied.shifts.scene import Effect, EpisodeStart, Scene
from embodied.shifts.splits import (
    Split,
    parse_split,
    resolve_physics,
    start_physics,
    stream_rng,
    valid_splits,
)

__all__ = [
    "NOMINAL",
    "PARAMS",
    "SHIFTS",
    "Effect",
    "EpisodeStart",
    "Param",
    "Scene",
    "Shift",
    "Split",
    "build_model",
    "parse_split",
    "resolve_physics",
    "start_effects",
    "start_physics",
    "stream_rng",
    "valid_splits",
    "validate_physics",
]
