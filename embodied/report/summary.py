"""Aggregation: from cells to the report's numbers (headline, correlations, 2x2, curves).

Rules the report states: episodes are pooled across the cells of an agent and split class
(ID = split "id", OOD = any "ood-*", look = any "look-*") and the rate's Wilson interval is
computed on the pooled counts; video metrics are clip-weighted means of the cells' means;
cells with fewer than ``min_episodes`` episodes are flagged and left out of every aggregate
(never silently averaged); "train" cells are counted but not reported on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import embodied
from embodied.metrics.stats import (
    GapScore,
    Rate,
    degradation,
    ood_tell,
    spearman_bootstrap,
)
from embodied.report.adaptation import (
    Estimate,
    SeedRow,
    estimates,
    gap_scores,
    seed_rows,
)
from embodied.report.difficulty import load_bites
from embodied.report.load import CLASSES, CellResult, RunData, split_order
from embodied.report.load import json_number as _num

VIDEO_METRICS = ("psnr", "ssim", "mse")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "mse": False, "success": True, "drop": False}
CORRELATION_PAIRS = (
    ("psnr", "success"),
    ("ssim", "success"),
    ("cup_pos_error", "success"),
    ("psnr", "drop"),
)
CORRELATED_CLASSES = ("id", "ood", "look")
REPORTED_CLASSES = ("id", "ood", "look", "interp")  # "train" cells are counted, not reported
# An agent "works in distribution" on a task when its pooled ID success is at least this; one
# that does not is shown everywhere but left out of "does a better prediction mean a better
# robot": its points would measure which family is broken, not whether prediction predicts.
ID_WORKS = 0.5
# "Who survives": from the model that knows only the training physics to the one told the truth.
SURVIVORS = ("nominal", "state", "adaptive", "sysid", "oracle")


@dataclass
class Agg:
    """Pooled numbers of a group of cells."""

    cells: int
    episodes: int
    success: Rate
    drop: Rate
    video_cells: int
    psnr: float
    ssim: float
    mse: float
    cup_pos_error: float
    state_error: float
    mean_return: float
    physics_errors: int
    slip: Rate | None = None  # None: no cell's results line carries a slip rate

    def video(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "episodes": self.episodes,
            "success": self.success.to_dict(),
            "drop": self.drop.to_dict(),
            "video_cells": self.video_cells,
            **{k: _num(getattr(self, k)) for k in (*VIDEO_METRICS, "cup_pos_error", "state_error")},
            "mean_return": _num(self.mean_return),
            "physics_errors": self.physics_errors,
            "slip": self.slip.to_dict() if self.slip is not None else None,
        }


def _weighted(values: list[float], weights: list[float]) -> float:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not pairs:
        return math.nan
    v, w = np.array(pairs, dtype=np.float64).T
    return float(np.average(v, weights=w))


def aggregate(cells: list[CellResult]) -> Agg:
    """Pool episodes (rates) and clip-weight video means over cells."""
    vids = [c.video for c in cells if c.video is not None]
    clips = [float(v.clips) for v in vids]
    n = sum(c.episodes for c in cells)
    slipping = [c for c in cells if c.slips is not None]
    return Agg(
        cells=len(cells),
        episodes=n,
        success=Rate(sum(c.successes for c in cells), n),
        drop=Rate(sum(c.drops for c in cells), n),
        video_cells=len(vids),
        psnr=_weighted([v.psnr for v in vids], clips),
        ssim=_weighted([v.ssim for v in vids], clips),
        mse=_weighted([v.mse for v in vids], clips),
        cup_pos_error=_weighted([v.cup_pos_error for v in vids], clips),
        state_error=_weighted([v.state_error for v in vids], clips),
        mean_return=_weighted([c.mean_return for c in cells], [float(c.episodes) for c in cells]),
        physics_errors=sum(c.physics_errors for c in cells),
        slip=Rate(sum(c.slips or 0 for c in slipping), sum(c.episodes for c in slipping))
        if slipping
        else None,
    )


def degradations(id_agg: Agg, ood_agg: Agg) -> dict[str, float]:
    """Degradation (embodied.metrics.stats.degradation) of every headline metric.

    Drops use the keep rate (1 - drop rate): the fraction of ID cup-keeping lost OOD.
    """
    out = {
        m: degradation(id_agg.video(m), ood_agg.video(m), HIGHER_IS_BETTER[m])
        for m in VIDEO_METRICS
    }
    out["success"] = degradation(id_agg.success.value, ood_agg.success.value)
    out["drop"] = degradation(1 - id_agg.drop.value, 1 - ood_agg.drop.value)
    return out


@dataclass
class HeadlineRow:
    agent: str
    family: str
    id: Agg
    ood: Agg
    deg: dict[str, float]
    tell: float  # success degradation / PSNR degradation
    tell_floored: bool  # PSNR degradation was below the floor: the ratio is a bound
    tell_ssim: float
    tell_ssim_floored: bool
    gap: GapScore | None = None  # share of the nominal-to-oracle gap closed on biting cells

    @property
    def tell_gap(self) -> float:
        """Success degradation minus PSNR degradation (stable where the ratio is not)."""
        return self.deg["success"] - self.deg["psnr"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "family": self.family,
            "id": self.id.to_dict(),
            "ood": self.ood.to_dict(),
            "degradation": {k: _num(v) for k, v in self.deg.items()},
            "ood_tell_psnr": _num(self.tell),
            "ood_tell_psnr_floored": self.tell_floored,
            "ood_tell_psnr_gap": _num(self.tell_gap),
            "ood_tell_ssim": _num(self.tell_ssim),
            "ood_tell_ssim_floored": self.tell_ssim_floored,
            "gap_closed": self.gap.to_dict() if self.gap else None,
        }


@dataclass
class Correlation:
    """Spearman's rho of a video (or state) metric against an embodied one, over some points.

    scope "across": one point per agent that works in distribution (its mean over splits);
    "across-all": the same with every agent; "within": one point per cell of ``agent``.
    """

    video: str
    embodied: str
    scope: str
    n: int
    rho: float
    lo: float
    hi: float
    agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "embodied": self.embodied,
            "scope": self.scope,
            "agent": self.agent,
            "n": self.n,
            "rho": _num(self.rho),
            "ci": [_num(self.lo), _num(self.hi)],
        }


@dataclass
class SurvivorRow:
    """Success of the SURVIVORS agents present on one split (severity 0 = ``id``)."""

    shift: str
    severity: int
    success: dict[str, Agg]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "severity": self.severity,
            "success": {a: g.success.to_dict() for a, g in self.success.items()},
        }


@dataclass
class Summary:
    """Every number in the report, with the run it came from."""

    run: RunData
    min_episodes: int
    n_boot: int
    seed: int
    agents: list[str]
    families: dict[str, str]
    headline: list[HeadlineRow]
    correlations: list[Correlation]
    look_work: dict[str, dict[tuple[bool, bool], Agg]]
    curves: dict[str, dict[str, list[tuple[int, Agg]]]]  # shift -> agent -> (severity, agg)
    by_class: dict[str, dict[str, Agg]]  # agent -> class -> agg (REPORTED_CLASSES)
    by_split: list[tuple[str, str, Agg]]  # (agent, split, agg)
    eligible: list[CellResult]
    flagged: list[CellResult]
    counts: dict[str, dict[str, int]]  # agent -> class/"flagged"/"episodes" -> count
    versions: list[str]
    seeds: list[int]
    tasks: list[str]
    id_success: dict[tuple[str, str], Rate] = field(default_factory=dict)  # (agent, task)
    survivor_agents: list[str] = field(default_factory=list)
    survivors: list[SurvivorRow] = field(default_factory=list)
    estimates: list[Estimate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    training_seeds: list[SeedRow] = field(default_factory=list)

    def fails_id(self) -> list[tuple[str, str, Rate | None]]:
        """(agent, task, ID success) of every agent-task left out of the correlations."""
        pairs = sorted({(c.agent, c.task) for c in self.eligible})
        return [
            (a, t, self.id_success.get((a, t)))
            for a, t in pairs
            if not (r := self.id_success.get((a, t))) or r.n == 0 or r.value < ID_WORKS
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run.run_dir),
            "results_sha256": self.run.results_sha256,
            "report_version": embodied.__version__,
            "result_versions": self.versions,
            "min_episodes": self.min_episodes,
            "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "interval": "percentile 95%"},
            "seeds": self.seeds,
            "tasks": self.tasks,
            "counts": self.counts,
            "headline": [r.to_dict() for r in self.headline],
            "correlations": [c.to_dict() for c in self.correlations],
            "works_id_threshold": ID_WORKS,
            "fails_id": [
                {"agent": a, "task": t, "id_success": r.to_dict() if r else None}
                for a, t, r in self.fails_id()
            ],
            "survivors": {
                "agents": self.survivor_agents,
                "rows": [r.to_dict() for r in self.survivors],
            },
            "estimates": [e.to_dict() for e in self.estimates],
            "training_seeds": [r.to_dict() for r in self.training_seeds],
            "look_work": {
                a: {f"look={lk},work={wk}": g.to_dict() for (lk, wk), g in q.items()}
                for a, q in self.look_work.items()
            },
            "curves": {
                s: {
                    a: [{"severity": sev, **g.to_dict()} for sev, g in pts]
                    for a, pts in per.items()
                }
                for s, per in self.curves.items()
            },
            "by_split": [{"agent": a, "split": s, **g.to_dict()} for a, s, g in self.by_split],
            "cells": [_cell_dict(c, flagged=False) for c in self.eligible]
            + [_cell_dict(c, flagged=True) for c in self.flagged],
            "flagged_cells": [c.cell_id for c in self.flagged],
            "warnings": self.warnings,
        }


def _cell_dict(c: CellResult, flagged: bool) -> dict[str, Any]:
    v = c.video
    return {
        "cell_id": c.cell_id,
        "agent": c.agent,
        "task": c.task,
        "split": c.split,
        "class": c.cls,
        "coverage": c.coverage,
        "seed": c.seed,
        "episodes": c.episodes,
        "success_rate": _num(c.success_rate),
        "drop_rate": _num(c.drop_rate),
        "slip_rate": _num(c.slips / c.episodes) if c.slips is not None and c.episodes else None,
        "psnr": v.psnr if v else None,
        "ssim": v.ssim if v else None,
        "mse": v.mse if v else None,
        "cup_pos_error": v.cup_pos_error if v else None,
        "state_error": v.state_error if v else None,
        "flagged": flagged,
    }


def cell_value(cell: CellResult, metric: str) -> float:
    """A cell's value of a correlation metric (nan where the cell has none)."""
    if metric == "success":
        return cell.success_rate
    if metric == "drop":
        return cell.drop_rate
    value = getattr(cell.video, metric) if cell.video is not None else None
    return math.nan if value is None else float(value)


def agg_value(g: Agg, metric: str) -> float:
    """A pooled group's value of a correlation metric (nan where it has none)."""
    if metric in ("success", "drop"):
        return getattr(g, metric).value
    return g.video(metric) if g.video_cells else math.nan


def id_success(cells: list[CellResult]) -> dict[tuple[str, str], Rate]:
    """Pooled ID success per (agent, task)."""
    out: dict[tuple[str, str], list[CellResult]] = defaultdict(list)
    for c in cells:
        if c.cls == "id":
            out[c.agent, c.task].append(c)
    return {k: aggregate(v).success for k, v in out.items()}


def works_id(cell: CellResult, id_rates: dict[tuple[str, str], Rate]) -> bool:
    """Whether the cell's agent works in distribution on its task (no ID cells: not known)."""
    rate = id_rates.get((cell.agent, cell.task))
    return rate is not None and rate.n > 0 and rate.value >= ID_WORKS


def _spearman(
    x: list[float], y: list[float], n_boot: int, seed: int
) -> tuple[int, float, float, float]:
    xa, ya = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
    rho, lo, hi = spearman_bootstrap(xa, ya, n_boot=n_boot, seed=seed)
    return int(np.sum(np.isfinite(xa) & np.isfinite(ya))), rho, lo, hi


def correlations(
    cells: list[CellResult], id_rates: dict[tuple[str, str], Rate], n_boot: int, seed: int
) -> list[Correlation]:
    """Across models (one point per agent: its mean over splits) and within each model.

    Only cells of agents that work in distribution count, except in the "across-all" scope,
    kept to show how much agents that fail at everything inflate a pooled correlation.
    """
    pool = [c for c in cells if c.cls in CORRELATED_CLASSES]
    counted = [c for c in pool if works_id(c, id_rates)]
    agents = sorted({c.agent for c in pool})
    probed = any(c.video is not None and c.video.state_error is not None for c in pool)
    out = []
    for video, emb in CORRELATION_PAIRS + ((("state_error", "success"),) if probed else ()):
        for scope, group in (("across", counted), ("across-all", pool)):
            xs, ys = [], []
            for a in agents:
                mine = [c for c in group if c.agent == a]
                splits = sorted({c.split for c in mine})
                if not splits:
                    continue
                aggs = [aggregate([c for c in mine if c.split == s]) for s in splits]
                xs.append(float(np.mean([agg_value(g, video) for g in aggs])))
                ys.append(float(np.mean([agg_value(g, emb) for g in aggs])))
            out.append(Correlation(video, emb, scope, *_spearman(xs, ys, n_boot, seed)))
        for a in agents:
            mine = [c for c in counted if c.agent == a]
            x = [cell_value(c, video) for c in mine]
            y = [cell_value(c, emb) for c in mine]
            out.append(Correlation(video, emb, "within", *_spearman(x, y, n_boot, seed), agent=a))
    return out


def survivors(cells: list[CellResult], agents: list[str]) -> tuple[list[str], list[SurvivorRow]]:
    """Success per work shift and severity of the SURVIVORS agents present, ID first."""
    present = [a for a in SURVIVORS if a in agents]
    if not present:
        return [], []
    mine = [c for c in cells if c.agent in present]
    keys = sorted(
        {("id", 0)} | {(c.shift, int(c.severity)) for c in mine if c.cls == "ood" and c.work},
        key=lambda k: (k != ("id", 0), k[0] == "all", k),
    )
    rows = []
    for shift, sev in keys:
        if shift == "id":
            group = [c for c in mine if c.cls == "id"]
        else:
            group = [c for c in mine if c.cls == "ood" and c.shift == shift and c.severity == sev]
        rows.append(
            SurvivorRow(
                str(shift), sev, {a: aggregate([c for c in group if c.agent == a]) for a in present}
            )
        )
    return present, rows


def headline_rows(
    agents: list[str],
    families: dict[str, str],
    group: dict[tuple[str, str], list[CellResult]],
    gaps: dict[str, GapScore],
) -> list[HeadlineRow]:
    """Each agent's ID and OOD aggregates, their degradations, tells and gap-closed score."""
    rows = []
    for a in agents:
        id_agg, ood_agg = aggregate(group[a, "id"]), aggregate(group[a, "ood"])
        deg = degradations(id_agg, ood_agg)
        tell, floored = ood_tell(deg["success"], deg["psnr"])
        tell_s, floored_s = ood_tell(deg["success"], deg["ssim"])
        rows.append(
            HeadlineRow(
                a, families[a], id_agg, ood_agg, deg, tell, floored, tell_s, floored_s, gaps.get(a)
            )
        )
    return rows


def look_work_quadrants(mine: list[CellResult]) -> dict[tuple[bool, bool], Agg]:
    """One agent's cells by (look, work) flag: no/no is id, work-only the dynamics shifts."""
    return {
        (lk, wk): aggregate([c for c in mine if c.look == lk and c.work == wk])
        for lk in (False, True)
        for wk in (False, True)
    }


def severity_curves(
    eligible: list[CellResult], agents: list[str], group: dict[tuple[str, str], list[CellResult]]
) -> dict[str, dict[str, list[tuple[int, Agg]]]]:
    """shift -> agent -> (severity, agg), severity 0 being the agent's ID cells."""
    curves: dict[str, dict[str, list[tuple[int, Agg]]]] = defaultdict(dict)
    ood_cells = [c for c in eligible if c.cls == "ood" and c.severity is not None and c.shift]
    for shift in sorted({c.shift for c in ood_cells}, key=lambda s: (s == "all", s)):
        for a in agents:
            mine = [c for c in ood_cells if c.agent == a and c.shift == shift]
            if not mine:
                continue
            points = [(0, aggregate(group[a, "id"]))] if group[a, "id"] else []
            for sev in sorted({int(c.severity) for c in mine}):
                points.append((sev, aggregate([c for c in mine if c.severity == sev])))
            curves[shift][a] = points
    return dict(curves)


def summarize(run: RunData, min_episodes: int = 10, n_boot: int = 2000, seed: int = 0) -> Summary:
    """All the report's numbers from a loaded run (see the module doc for the rules)."""
    if min_episodes < 1:
        raise ValueError(f"min_episodes must be >= 1, got {min_episodes}")
    cells = run.cells
    flagged = sorted((c for c in cells if c.episodes < min_episodes), key=lambda c: c.cell_id)
    eligible = [c for c in cells if c.episodes >= min_episodes and c.cls != "train"]
    agents = sorted({c.agent for c in cells})
    families = {
        a: "/".join(sorted({c.family for c in cells if c.agent == a and c.family})) for a in agents
    }
    group: dict[tuple[str, str], list[CellResult]] = defaultdict(list)
    for c in eligible:
        group[c.agent, c.cls].append(c)

    gaps = gap_scores(eligible, agents, load_bites(), n_boot, seed)
    headline = headline_rows(agents, families, group, gaps)
    look_work = {a: look_work_quadrants([c for c in eligible if c.agent == a]) for a in agents}
    curves = severity_curves(eligible, agents, group)

    split_groups: dict[tuple[str, str], list[CellResult]] = defaultdict(list)
    for c in eligible:
        split_groups[c.agent, c.split].append(c)
    by_split = [
        (a, s, aggregate(split_groups[a, s]))
        for a, s in sorted(split_groups, key=lambda k: (k[0], split_order(k[1])))
    ]

    id_rates = id_success(eligible)
    survivor_agents, survivor_rows = survivors(eligible, agents)
    estimate_rows = estimates(eligible)
    counts = {
        a: {
            **{k: sum(1 for c in cells if c.agent == a and c.cls == k) for k in CLASSES},
            "flagged": sum(1 for c in flagged if c.agent == a),
            "episodes": sum(c.episodes for c in cells if c.agent == a),
        }
        for a in agents
    }
    return Summary(
        run=run,
        min_episodes=min_episodes,
        n_boot=n_boot,
        seed=seed,
        agents=agents,
        families=families,
        headline=headline,
        correlations=correlations(eligible, id_rates, n_boot, seed),
        look_work=look_work,
        curves=curves,
        by_class={a: {k: aggregate(group[a, k]) for k in REPORTED_CLASSES} for a in agents},
        by_split=by_split,
        eligible=eligible,
        flagged=flagged,
        counts=counts,
        versions=sorted({c.version for c in cells if c.version}),
        seeds=sorted({c.seed for c in cells}),
        tasks=sorted({c.task for c in cells}),
        id_success=id_rates,
        survivor_agents=survivor_agents,
        survivors=survivor_rows,
        estimates=estimate_rows,
        warnings=run.warnings,
        training_seeds=seed_rows(headline, n_boot, seed),
    )
