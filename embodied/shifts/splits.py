"""Splits (train, id, ood-<shift>-<s>, look-<shift>, ood-all-<s>) and paired per-episode draws.

Every parameter draws from its own random stream keyed by (seed, parameter, stream). ``train``
uses stream "train" throughout; every other split uses stream "id" for each parameter it does not
name. So ``id`` and ``ood-cup_mass-3`` at one seed differ in ``cup_mass`` alone (common random
numbers), and ``id`` draws are held out from ``train``'s by stream rather than by seed.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embodied.shifts.catalogue import NOMINAL, PARAMS, SHIFTS, Param, validate_physics

SplitKind = Literal["train", "id", "ood", "look", "all"]
SEVERITIES = (1, 2, 3, 4, 5)
OOD_SHIFTS: tuple[str, ...] = tuple(n for n, s in SHIFTS.items() if s.has_severities)
LOOK_SHIFTS: tuple[str, ...] = tuple(n for n, s in SHIFTS.items() if s.kind == "look")
# ood-all-<s> moves every pure work shift; cup_size is left out so that ood-all stays invisible.
ALL_SHIFTS: tuple[str, ...] = tuple(n for n in OOD_SHIFTS if SHIFTS[n].kind == "work")
SPLIT_FORMS = "train, id, ood-<shift>-<1..5>, look-<shift>, ood-all-<1..5>"


@dataclass(frozen=True)
class Split:
    """A parsed split name. ``shift`` is "all" for ood-all, None for train/id."""

    name: str
    kind: SplitKind
    shift: str | None = None
    severity: int | None = None

    @property
    def shifts(self) -> tuple[str, ...]:
        """The shifts this split moves away from their ID draws."""
        if self.kind == "all":
            return ALL_SHIFTS
        return (self.shift,) if self.shift else ()

    @property
    def look(self) -> bool:
        return any(SHIFTS[s].look for s in self.shifts)

    @property
    def work(self) -> bool:
        return any(SHIFTS[s].work for s in self.shifts)


def valid_splits() -> list[str]:
    """Every split name."""
    names = ["train", "id"]
    names += [f"ood-{s}-{k}" for s in OOD_SHIFTS for k in SEVERITIES]
    names += [f"look-{s}" for s in LOOK_SHIFTS]
    names += [f"ood-all-{k}" for k in SEVERITIES]
    return names


def _severity(split: str, text: str) -> int:
    if text not in {str(k) for k in SEVERITIES}:
        raise ValueError(
            f"split {split!r}: severity must be one of {list(SEVERITIES)}, got {text!r}"
        )
    return int(text)


def parse_split(split: str) -> Split:
    """Parse a split name, or raise ValueError listing the valid forms and shifts."""
    if not isinstance(split, str):
        raise ValueError(f"split must be a string ({SPLIT_FORMS}); got {split!r}")
    if split in ("train", "id"):
        return Split(split, split)  # type: ignore[arg-type]
    prefix, _, rest = split.partition("-")
    if prefix == "look":
        if rest not in LOOK_SHIFTS:
            raise ValueError(
                f"split {split!r}: unknown look shift {rest!r}; "
                f"valid look shifts: {list(LOOK_SHIFTS)}"
            )
        return Split(split, "look", rest)
    if prefix == "ood":
        shift, _, sev = rest.rpartition("-")
        if not shift:
            raise ValueError(f"split {split!r}: expected ood-<shift>-<severity> ({SPLIT_FORMS})")
        if shift == "all":
            return Split(split, "all", "all", _severity(split, sev))
        if shift not in OOD_SHIFTS:
            raise ValueError(
                f"split {split!r}: unknown shift {shift!r}; valid: {list(OOD_SHIFTS) + ['all']}"
            )
        return Split(split, "ood", shift, _severity(split, sev))
    raise ValueError(f"unknown split {split!r}; valid forms: {SPLIT_FORMS}")


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def check_seed(seed: object) -> int:
    """The seed as an int, or ValueError: streams need a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def stream_rng(seed: int, name: str, stream: str) -> np.random.Generator:
    """The random stream keyed by (seed, name, stream): identical in every process."""
    return np.random.default_rng(
        np.random.SeedSequence([check_seed(seed), _key(name), _key(stream)])
    )


def _uniform(p: Param, bounds: tuple[float, float], seed: int, stream: str) -> float:
    lo, hi = bounds
    if lo == hi:
        return float(lo)
    rng = stream_rng(seed, p.name, stream)
    if p.integer:
        return float(rng.integers(int(lo), int(hi), endpoint=True))
    return float(rng.uniform(lo, hi))


def _look(p: Param, seed: int) -> float:
    assert p.look_range is not None
    rng = stream_rng(seed, p.name, "look")
    value = float(rng.uniform(*p.look_range))
    return -value if p.signed and rng.random() < 0.5 else value


def resolve_physics(
    split: str, seed: int, explicit: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Every parameter in force for an episode of ``split`` at ``seed``; explicit ones override."""
    sp = parse_split(split)
    seed = check_seed(seed)
    named = {p.name for s in sp.shifts for p in SHIFTS[s].params}
    out: dict[str, float] = {}
    for name, p in PARAMS.items():
        if sp.kind == "train":
            out[name] = _uniform(p, p.id_range, seed, "train")
        elif name in named and sp.kind == "look":
            out[name] = _look(p, seed)
        elif name in named and p.severities is not None:
            out[name] = float(p.severities[sp.severity - 1])  # type: ignore[operator]
        else:
            out[name] = _uniform(p, p.id_range, seed, "id")
    if explicit:
        out.update(validate_physics(explicit))
    return out


def start_physics(physics: Mapping[str, float]) -> dict[str, float]:
    """The physics to place the start state under: nominal dynamics, this episode's look and
    geometry. Settling the grasp under it and only then switching to ``physics`` keeps the start
    state (and first frame) of every work shift identical to id's at the same seed."""
    out = {**NOMINAL, **validate_physics(physics)}
    for shift in SHIFTS.values():
        if shift.kind == "work":
            out.update({p.name: NOMINAL[p.name] for p in shift.params})
    return out
