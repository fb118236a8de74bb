"""Splits (train, id, ood-<shift>-<s>, look-<shift>, ood-all-<s>) and paired per-episode draws.

The training split comes in ranges of physics (``train-<physics>``): ``train`` draws every
parameter from its ID range; ``train-wide-k`` widens every work shift's range toward its OOD
values up to severity k and never onto severity k+1; ``train-mix-k`` draws each episode's
physics from the ID ranges but for one work shift, picked per episode, drawn over its wide-k
range (one factor at a time: wide-k widens them all at once, so its episodes stack a heavy cup
on a weak grip on a slippery pad, which the scripted collector drops); ``train-interp-<shift>``
holds that shift's values on both sides of severities 1..3 (ID below, severities 4..5 above), so
its severities 1..3 are surrounded by training data (phyworld's interpolation case). ``coverage``
says what a test split is to a training range: covered, interpolation or extrapolation.

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
WIDE = (1, 2, 3, 4)  # train-wide-5 would hold every test severity: nothing left to test
INTERP_BAND = (1, 2, 3)  # the severities train-interp-<shift> leaves out, surrounded
TRAIN_PHYSICS_FORMS = "id, wide-<1..4>, mix-<1..4>, interp-<shift>"
Coverage = Literal["id", "look", "covered", "interpolation", "extrapolation"]


@dataclass(frozen=True)
class Split:
    """A parsed split name. ``shift`` is "all" for ood-all, None for train/id."""

    name: str
    kind: SplitKind
    shift: str | None = None
    severity: int | None = None
    train_physics: str = "id"  # train splits: the physics ranges (TRAIN_PHYSICS_FORMS)

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
    names = ["train", *(f"train-{p}" for p in train_physics_names() if p != "id"), "id"]
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
    if prefix == "train":
        if rest not in train_physics_names():
            raise ValueError(
                f"split {split!r}: unknown training physics {rest!r}; valid: "
                f"{TRAIN_PHYSICS_FORMS} ({train_physics_names()})"
            )
        return Split(split, "train", train_physics=rest)
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


def train_physics_names() -> list[str]:
    """Every training range: id, wide-<k>, mix-<k>, interp-<shift> (shifts of ood-all)."""
    return [
        "id",
        *(f"wide-{k}" for k in WIDE),
        *(f"mix-{k}" for k in WIDE),
        *(f"interp-{s}" for s in ALL_SHIFTS),
    ]


def train_split(train_physics: str) -> str:
    """The split name that collects data under ``train_physics`` (``id`` -> ``train``)."""
    name = "train" if train_physics == "id" else f"train-{train_physics}"
    parse_split(name)
    return name


def train_ranges(train_physics: str) -> dict[str, tuple[tuple[float, float], ...]]:
    """The intervals each parameter draws from in ``train-<train_physics>`` (union of them;
    ``mix-k``: those of wide-k, each reached in the episodes that widen its shift)."""
    if train_physics not in train_physics_names():
        raise ValueError(
            f"unknown training physics {train_physics!r}; valid: {train_physics_names()}"
        )
    kind, _, arg = train_physics.partition("-")
    out = {name: (p.id_range,) for name, p in PARAMS.items()}
    for shift in ALL_SHIFTS:
        for p in SHIFTS[shift].params:
            if p.severities is None:
                continue
            if kind in ("wide", "mix"):
                values = (*p.id_range, *p.severities[: int(arg)])
                out[p.name] = ((min(values), max(values)),)
            elif kind == "interp" and shift == arg:
                above = p.severities[INTERP_BAND[-1] :]
                out[p.name] = (p.id_range, (min(above), max(above)))
    return out


def coverage(train_name: str, split: str) -> Coverage:
    """What ``split`` is to data collected in ``train_name`` (a train split): an ``ood-*``
    value inside a training interval is covered, between training values interpolation,
    beyond them extrapolation (ood-all: the farthest of its shifts)."""
    train, test = parse_split(train_name), parse_split(split)
    if train.kind != "train":
        raise ValueError(f"{train_name!r} is not a training split ({TRAIN_PHYSICS_FORMS})")
    if test.kind in ("id", "look", "train"):
        return "look" if test.kind == "look" else "id"
    ranges = train_ranges(train.train_physics)
    order = ("covered", "interpolation", "extrapolation")
    worst = 0
    for shift in test.shifts:
        for p in SHIFTS[shift].params:
            if p.severities is None:
                continue
            v, spans = p.severities[test.severity - 1], ranges[p.name]  # type: ignore[operator]
            lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
            where = 0 if any(a <= v <= b for a, b in spans) else 1 if lo < v < hi else 2
            worst = max(worst, where)
    return order[worst]  # type: ignore[return-value]


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


def _train_draw(p: Param, spans: tuple[tuple[float, float], ...], seed: int) -> float:
    """One interval: exactly the plain train draw of old; several: one picked, then a draw."""
    if len(spans) == 1:
        return _uniform(p, spans[0], seed, "train")
    pick = int(stream_rng(seed, p.name, "train-span").integers(len(spans)))
    return _uniform(p, spans[pick], seed, "train")


def mixed_shift(seed: int) -> str:
    """The work shift a ``train-mix-k`` episode widens: one of ood-all's, uniformly per seed."""
    return ALL_SHIFTS[int(stream_rng(seed, "mix", "train-mix").integers(len(ALL_SHIFTS)))]


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
    ranges = train_ranges(sp.train_physics) if sp.kind == "train" else {}
    if sp.train_physics.startswith("mix-"):  # ID ranges but for the episode's one shift
        widened = {p.name for p in SHIFTS[mixed_shift(seed)].params}
        ranges = {n: r if n in widened else (PARAMS[n].id_range,) for n, r in ranges.items()}
    out: dict[str, float] = {}
    for name, p in PARAMS.items():
        if sp.kind == "train":
            out[name] = _train_draw(p, ranges[name], seed)
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
