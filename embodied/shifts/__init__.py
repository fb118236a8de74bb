"""Shifts: the catalogue of work and look changes, splits with paired draws, and model building.

physics = resolve_physics("ood-cup_mass-3", seed)   # every parameter in force, by name
model = build_model(physics)                         # the MjModel for those values
"""

from embodied.shifts.catalogue import (
    NOMINAL,
    PARAMS,
    SHIFTS,
    Param,
    Shift,
    validate_physics,
)
from embodied.shifts.model import build_model
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
    "Param",
    "Shift",
    "Split",
    "build_model",
    "parse_split",
    "resolve_physics",
    "start_physics",
    "stream_rng",
    "valid_splits",
    "validate_physics",
]
