"""How agents adapt, beyond raw success: the share of the nominal-to-oracle gap they close,
their spread over training seeds, and the physics they identified against the truth."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from embodied.grid import split_seed
from embodied.metrics.stats import GapScore, Rate, SeedSpread, gap_closed, seed_spread
from embodied.report.difficulty import bites
from embodied.report.load import CellResult, split_order
from embodied.report.load import json_number as _num

if TYPE_CHECKING:
    from embodied.report.summary import HeadlineRow

ESTIMATE_TOLERANCE = 0.2  # an estimate within 20% of the truth counts as identified


def gap_scores(
    cells: list[CellResult],
    agents: list[str],
    table: dict[tuple[str, str], bool],
    n_boot: int,
    seed: int,
) -> dict[str, GapScore]:
    """Each agent's gap-closed score over the OOD work cells that bite, where the run holds
    `nominal` and `oracle` on the same task, split and seed (the references of those episodes).

    Whether a (task, split) bites comes from the measured table (``table``), or where it has
    no entry, from the run's own references pooled over seeds.
    """
    refs = {
        (c.agent, c.task, c.split, c.seed): c for c in cells if c.agent in ("nominal", "oracle")
    }
    work = [c for c in cells if c.cls == "ood" and c.work]
    pooled: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (agent, task, split, _), c in refs.items():
        pooled[agent, task, split][0] += c.successes
        pooled[agent, task, split][1] += c.episodes

    def biting(task: str, split: str) -> bool:
        if (task, split) in table:
            return table[task, split]
        return bites(Rate(*pooled["oracle", task, split]), Rate(*pooled["nominal", task, split]))

    out = {}
    for a in agents:
        triples = [
            (c, refs["nominal", c.task, c.split, c.seed], refs["oracle", c.task, c.split, c.seed])
            for c in work
            if c.agent == a
            and ("nominal", c.task, c.split, c.seed) in refs
            and ("oracle", c.task, c.split, c.seed) in refs
            and biting(c.task, c.split)
        ]
        if triples:
            rates = [[Rate(x.successes, x.episodes) for x in t] for t in triples]
            out[a] = gap_closed(*map(list, zip(*rates, strict=True)), n_boot=n_boot, seed=seed)
    return out


@dataclass
class SeedRow:
    """One agent trained with several seeds (``state``, ``state@1``, ...): success per seed."""

    agent: str
    members: list[str]
    id: SeedSpread
    ood: SeedSpread

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "members": self.members,
            "id": self.id.to_dict(),
            "ood": self.ood.to_dict(),
        }


def seed_rows(headline: list[HeadlineRow], n_boot: int, seed: int) -> list[SeedRow]:
    """Agents present with two or more training seeds, their rates pooled per seed."""
    groups: dict[str, list[HeadlineRow]] = defaultdict(list)
    for r in headline:
        groups[split_seed(r.agent)[0]].append(r)
    return [
        SeedRow(
            base,
            [r.agent for r in rows],
            seed_spread([r.id.success for r in rows], n_boot, seed),
            seed_spread([r.ood.success for r in rows], n_boot, seed),
        )
        for base, rows in sorted(groups.items())
        if len(rows) > 1
    ]


@dataclass
class Estimate:
    """How well an agent identified one physics parameter on one split, over its episodes."""

    agent: str
    split: str
    param: str
    n: int
    median_rel_error: float
    within: Rate  # episodes whose estimate is within ESTIMATE_TOLERANCE of the truth
    mean_estimate: float
    mean_truth: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "split": self.split,
            "param": self.param,
            "n": self.n,
            "median_rel_error": _num(self.median_rel_error),
            "within_tolerance": self.within.to_dict(),
            "tolerance": ESTIMATE_TOLERANCE,
            "mean_estimate": _num(self.mean_estimate),
            "mean_truth": _num(self.mean_truth),
        }


def estimates(cells: list[CellResult]) -> list[Estimate]:
    """Estimate vs truth per (agent, split, parameter), pooled over seeds."""
    pairs: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for c in cells:
        for param, est in c.param_estimates.items():
            pairs[c.agent, c.split, param] += list(zip(est, c.param_truth[param], strict=True))
    out = []
    for (agent, split, param), values in sorted(
        pairs.items(), key=lambda kv: (kv[0][0], split_order(kv[0][1]), kv[0][2])
    ):
        est, truth = np.array(values, dtype=np.float64).T
        ok = np.isfinite(est) & np.isfinite(truth) & (truth != 0)
        rel = np.abs(est[ok] - truth[ok]) / np.abs(truth[ok])
        out.append(
            Estimate(
                agent,
                split,
                param,
                int(ok.sum()),
                float(np.median(rel)) if len(rel) else math.nan,
                Rate(int(np.sum(rel <= ESTIMATE_TOLERANCE)), int(ok.sum())),
                float(np.mean(est[ok])) if ok.any() else math.nan,
                float(np.mean(truth[ok])) if ok.any() else math.nan,
            )
        )
    return out
