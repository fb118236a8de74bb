"""Which shifts bite: the references' success per task and work split, and the verdict.

A closed-loop planner shrugs some shifts off, so severity k of one shift is not severity k of
another. The yardstick is two simulators: ``nominal`` plans with the training physics, ``oracle``
with the episode's true physics. A split *bites* on a task when knowing the truth buys a clear
margin of success over knowing only the training physics: the 95% interval of
oracle - nominal (Newcombe's) lies above ``MARGIN``. Where it does not, a model that adapts to
nothing does as well as one that adapts perfectly, and the split says nothing about adapting.

The measured table ships with the package (``embodied/shifts/difficulty.json``, written by
``embodied-difficulty``) so the report can label a run's cells without recomputing it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embodied.metrics.stats import Rate, newcombe
from embodied.report.load import CellResult
from embodied.shifts.splits import ALL_SHIFTS, SEVERITIES

REFERENCES = ("scripted", "nominal", "oracle")
MARGIN = 0.10  # oracle - nominal must clear 10 points, its whole interval included
TABLE_PATH = Path(__file__).resolve().parents[1] / "shifts" / "difficulty.json"
WORK_SPLITS = tuple(f"ood-{s}-{k}" for s in ALL_SHIFTS for k in SEVERITIES)
ORDER = {s: i for i, s in enumerate(("id", *WORK_SPLITS))}  # a task's rows in catalogue order


def bites(oracle: Rate, nominal: Rate) -> bool:
    """Whether the truth buys a clear margin over the training physics on these episodes."""
    return bool(oracle.n and nominal.n and newcombe(oracle, nominal)[0] > MARGIN)


@dataclass
class DifficultyRow:
    """The references' pooled success on one task and split, and whether the split bites."""

    task: str
    split: str
    refs: dict[str, Rate]

    @property
    def gap_ci(self) -> tuple[float, float] | None:
        if not {"nominal", "oracle"} <= set(self.refs):
            return None
        return newcombe(self.refs["oracle"], self.refs["nominal"])

    @property
    def bites(self) -> bool | None:
        if not {"nominal", "oracle"} <= set(self.refs):
            return None
        return bites(self.refs["oracle"], self.refs["nominal"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "split": self.split,
            **{a: {"k": r.k, "n": r.n} for a, r in self.refs.items()},
            "oracle_minus_nominal_ci": list(self.gap_ci) if self.gap_ci else None,
            "bites": self.bites,
        }


def difficulty_rows(cells: list[CellResult]) -> list[DifficultyRow]:
    """One row per (task, split) the references ran, pooled over seeds, in catalogue order."""
    pooled: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(dict)
    for c in cells:
        if c.agent in REFERENCES and (c.split == "id" or c.split in WORK_SPLITS):
            k, n = pooled[c.task, c.split].get(c.agent, [0, 0])
            pooled[c.task, c.split][c.agent] = [k + c.successes, n + c.episodes]
    return [
        DifficultyRow(
            task,
            split,
            {a: Rate(*pooled[task, split][a]) for a in REFERENCES if a in pooled[task, split]},
        )
        for task, split in sorted(pooled, key=lambda ts: (ts[0], ORDER[ts[1]]))
    ]


Runs = dict[str, dict[str, Any]]  # task -> how its rows were made (command, episodes, cost)


def write_table(rows: list[DifficultyRow], runs: Runs, path: Path) -> None:
    """The machine-readable table: what the report reads, with how each task's rows were made."""
    path.write_text(
        json.dumps({"margin": MARGIN, "runs": runs, "rows": [r.to_dict() for r in rows]}, indent=1)
        + "\n"
    )


def read_table(path: Path) -> tuple[list[DifficultyRow], Runs]:
    """The rows and runs of a written table; none where it does not exist."""
    if not path.exists():
        return [], {}
    table = json.loads(path.read_text())
    rows = [
        DifficultyRow(
            r["task"], r["split"], {a: Rate(r[a]["k"], r[a]["n"]) for a in REFERENCES if a in r}
        )
        for r in table["rows"]
    ]
    return rows, table.get("runs", {})


def merged(path: Path, rows: list[DifficultyRow], runs: Runs) -> tuple[list[DifficultyRow], Runs]:
    """The table at ``path`` with the tasks of ``rows`` replaced by them: one task measured at
    a time adds to the published table, never erases another's rows."""
    old_rows, old_runs = read_table(path)
    tasks = {r.task for r in rows}
    kept = [r for r in old_rows if r.task not in tasks]
    both = sorted(kept + rows, key=lambda r: (r.task, ORDER[r.split]))
    return both, {**{t: m for t, m in old_runs.items() if t not in tasks}, **runs}


def load_bites(path: Path = TABLE_PATH) -> dict[tuple[str, str], bool]:
    """(task, split) -> bites, from a written table; empty where none has been measured."""
    rows, _ = read_table(path)
    return {(r.task, r.split): r.bites for r in rows if r.bites is not None}


def _cell(row: DifficultyRow) -> str:
    rates = " / ".join(
        f"{row.refs[a].value:.2f}" if a in row.refs else "-" for a in ("nominal", "oracle")
    )
    return f"**{rates}**" if row.bites else rates


def markdown(rows: list[DifficultyRow], runs: Runs) -> str:
    """docs/difficulty.md: per task, nominal / oracle success per shift and severity; bold bites."""
    lines = [
        "# Which shifts bite",
        "",
        "Success of `nominal` (plans with the training physics) / `oracle` (plans with the "
        "episode's true physics) per task, work shift and severity, pooled over seeds. **Bold**: "
        f"the split bites, the 95% interval of oracle - nominal lies above {MARGIN:.2f} "
        "(Newcombe). A split that does not bite cannot tell an adapting model from one that "
        "adapts to nothing. Machine-readable: `embodied/shifts/difficulty.json`; each task's "
        "section says the command that measured it.",
    ]
    by_key = {(r.task, r.split): r for r in rows}
    for task in sorted({r.task for r in rows}):
        head = by_key.get((task, "id"))
        meta = runs.get(task, {})
        lines += [
            "",
            f"## {task}",
            "",
            f"    {meta.get('command', '?')}",
            "",
            f"Episodes per cell: {meta.get('episodes', '?')} x seeds {meta.get('seeds', '?')}; "
            f"cost: {meta.get('cost', '?')}.",
            "",
        ]
        if head:
            lines.append(
                f"ID: {_cell(head)} (scripted {head.refs['scripted'].value:.2f})"
                if "scripted" in head.refs
                else f"ID: {_cell(head)}"
            )
            lines.append("")
        lines.append("| Shift | " + " | ".join(f"Severity {k}" for k in SEVERITIES) + " |")
        lines.append("|---" * (len(SEVERITIES) + 1) + "|")
        for shift in ALL_SHIFTS:
            cells = [by_key.get((task, f"ood-{shift}-{k}")) for k in SEVERITIES]
            if any(cells):
                lines.append(
                    f"| {shift} | " + " | ".join(_cell(c) if c else "" for c in cells) + " |"
                )
        biting = [r for r in rows if r.task == task and r.split != "id" and r.bites]
        lines += [
            "",
            f"{len(biting)} of {sum(r.task == task for r in rows) - bool(head)} "
            "measured splits bite.",
        ]
    return "\n".join(lines) + "\n"
