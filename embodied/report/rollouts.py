"""Which rollout videos the report plays inline: per agent, one ID and one OOD cell.

The evaluation writes ``videos/<agent>/<task>/<split>/seed<N>-<kind>.<ext>`` under the run
directory, ``kind`` being ``episode`` (the real closed-loop rollout, bordered green on success,
red on a drop) or ``imagination`` (truth | the model's open-loop prediction | error, under the
same actions). Seeing a model keep its picture and lose the cup says what the table says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embodied.report.load import CellResult, split_class, split_order
from embodied.report.summary import Summary

VIDEO_PATH = re.compile(
    r"(?:.*/)?videos/(?P<agent>[^/]+)/(?P<task>[^/]+)/(?P<split>[^/]+)/"
    r"seed(?P<seed>\d+)-(?P<kind>[a-z]+)\.(?:mp4|webm|gif)$"
)
KINDS = ("episode", "imagination")


@dataclass
class Rollout:
    """The videos of one cell, and the cell's numbers to caption them with."""

    label: str  # "ID" or "OOD"
    agent: str
    task: str
    split: str
    seed: int
    paths: dict[str, str]  # kind -> path relative to the run directory
    cell: CellResult | None


def pick(s: Summary) -> dict[str, list[Rollout]]:
    """Per agent, the first ID cell and the first OOD cell (split order) that have videos."""
    found: dict[tuple[str, str, str, int], dict[str, str]] = {}
    for rel in s.run.videos:
        m = VIDEO_PATH.match(rel)
        if m and m["kind"] in KINDS:
            key = (m["agent"], m["task"], m["split"], int(m["seed"]))
            found.setdefault(key, {})[m["kind"]] = rel
    cells = {c.cell_id: c for c in s.run.cells}
    out: dict[str, list[Rollout]] = {}
    for agent in s.agents:
        mine = [k for k in found if k[0] == agent]
        for label, cls in (("ID", "id"), ("OOD", "ood")):
            keys = [k for k in mine if _class(k[2]) == cls]
            if not keys:
                continue
            a, task, split, seed = min(keys, key=lambda k: (split_order(k[2]), k[1], k[3]))
            cell = cells.get(f"{a}/{task}/{split}/{seed}")
            rollout = Rollout(label, a, task, split, seed, found[a, task, split, seed], cell)
            out.setdefault(agent, []).append(rollout)
    return out


def _class(split: str) -> str | None:
    try:
        return split_class(split)
    except ValueError:
        return None


def caption(r: Rollout) -> str:
    """'ID · CupCarry id seed 0 · cell success 3/10, drops 0/10'."""
    text = f"{r.label} · {r.task} {r.split} seed {r.seed}"
    if r.cell is not None:
        c = r.cell
        text += f" · cell success {c.successes}/{c.episodes}, drops {c.drops}/{c.episodes}"
    return text
