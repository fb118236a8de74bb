"""The evaluation grid: every (agent, task, split, seed) cell, with a stable id.

A cell is the unit of parallel work and of the results file; its id is what a rerun
uses to skip work already done, so it must never depend on ordering or on the machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Cell:
    """One evaluation: an agent on a task under a split, with one seed."""

    agent: str
    task: str
    split: str
    seed: int

    @property
    def cell_id(self) -> str:
        return f"{self.agent}/{self.task}/{self.split}/{self.seed}"

    @classmethod
    def from_id(cls, cell_id: str) -> Cell:
        """The inverse of ``cell_id``; splits never contain a slash."""
        parts = cell_id.split("/")
        if len(parts) != 4:
            raise ValueError(f"a cell id is 'agent/Task/split/seed', got {cell_id!r}")
        agent, task, split, seed = parts
        return cls(agent, task, split, int(seed))


def expand(
    agents: Sequence[str], tasks: Sequence[str], splits: Sequence[str], seeds: Iterable[int]
) -> list[Cell]:
    """Every combination, in the order given (agents outermost), without duplicates."""
    seeds = [int(s) for s in seeds]
    cells = [Cell(*combo) for combo in itertools.product(agents, tasks, splits, seeds)]
    return list(dict.fromkeys(cells))


def split_seed(name: str) -> tuple[str, int | None]:
    """``state@1`` -> ("state", 1): agent ``state`` trained with training seed 1, a grid agent
    of its own (its own checkpoint, its own cells); ``state`` -> ("state", None)."""
    base, at, seed = name.partition("@")
    if not at:
        return name, None
    if not seed.isdigit():
        raise ValueError(f"agent {name!r}: expected <agent>@<training seed>, e.g. state@1")
    return base, int(seed)


def check_names(kind: str, names: Iterable[str], valid: Iterable[str]) -> None:
    """Fail before any work starts when a name is unknown, listing the valid choices."""
    valid = sorted(valid)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; valid {kind}: {valid}")
