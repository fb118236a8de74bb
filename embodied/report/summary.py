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
from embodied.metrics.stats import Rate, degradation, ood_tell, spearman_bootstrap
from embodied.report.load import CLASSES, Cell, RunData

VIDEO_METRICS = ("psnr", "ssim", "mse")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "mse": False, "success": True, "drop": False}
CORRELATION_PAIRS = (
    ("psnr", "success"),
    ("ssim", "success"),
    ("mse", "success"),
    ("psnr", "drop"),
    ("ssim", "drop"),
)
SCOPES = {"overall": ("id", "ood", "look"), "ID": ("id",), "OOD": ("ood",)}


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
    mean_return: float
    physics_errors: int

    def video(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "episodes": self.episodes,
            "success": self.success.to_dict(),
            "drop": self.drop.to_dict(),
            "video_cells": self.video_cells,
            **{k: _num(getattr(self, k)) for k in (*VIDEO_METRICS, "cup_pos_error")},
            "mean_return": _num(self.mean_return),
            "physics_errors": self.physics_errors,
        }


def _num(x: float | None) -> float | None:
    """JSON-safe number: nan/inf -> None."""
    return float(x) if x is not None and math.isfinite(x) else None


def _weighted(values: list[float], weights: list[float]) -> float:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not pairs:
        return math.nan
    v, w = np.array(pairs, dtype=np.float64).T
    return float(np.average(v, weights=w))


def aggregate(cells: list[Cell]) -> Agg:
    """Pool episodes (rates) and clip-weight video means over cells."""
    vids = [c.video for c in cells if c.video is not None]
    clips = [float(v.clips) for v in vids]
    n = sum(c.episodes for c in cells)
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
        mean_return=_weighted([c.mean_return for c in cells], [float(c.episodes) for c in cells]),
        physics_errors=sum(c.physics_errors for c in cells),
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
        }


@dataclass
class Correlation:
    video: str
    embodied: str
    scope: str
    n: int
    rho: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "embodied": self.embodied,
            "scope": self.scope,
            "n": self.n,
            "rho": _num(self.rho),
            "ci": [_num(self.lo), _num(self.hi)],
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
    by_class: dict[str, dict[str, Agg]]  # agent -> class -> agg (ID, OOD, look)
    by_split: list[tuple[str, str, Agg]]  # (agent, split, agg)
    eligible: list[Cell]
    flagged: list[Cell]
    counts: dict[str, dict[str, int]]  # agent -> class/"flagged"/"episodes" -> count
    versions: list[str]
    seeds: list[int]
    tasks: list[str]
    warnings: list[str] = field(default_factory=list)

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


def _cell_dict(c: Cell, flagged: bool) -> dict[str, Any]:
    v = c.video
    return {
        "cell_id": c.cell_id,
        "agent": c.agent,
        "task": c.task,
        "split": c.split,
        "class": c.cls,
        "seed": c.seed,
        "episodes": c.episodes,
        "success_rate": _num(c.success_rate),
        "drop_rate": _num(c.drop_rate),
        "psnr": v.psnr if v else None,
        "ssim": v.ssim if v else None,
        "mse": v.mse if v else None,
        "flagged": flagged,
    }


def split_order(split: str) -> tuple[int, str, int]:
    """Sort key: train, id, ood-<shift>-<s> by shift then severity, ood-all, look-*."""
    if split in ("train", "id"):
        return (0 if split == "train" else 1, "", 0)
    if split.startswith("ood-"):
        shift, _, sev = split[4:].rpartition("-")
        return (3 if shift == "all" else 2, shift, int(sev) if sev.isdigit() else 0)
    return (4, split, 0)


def cell_value(cell: Cell, metric: str) -> float:
    """A cell's value of a correlation metric (nan where the cell has none)."""
    if metric == "success":
        return cell.success_rate
    if metric == "drop":
        return cell.drop_rate
    return getattr(cell.video, metric) if cell.video is not None else math.nan


def correlations(cells: list[Cell], n_boot: int, seed: int) -> list[Correlation]:
    """Spearman (bootstrap CI) of each video metric against each embodied one, per scope."""
    out = []
    for video, emb in CORRELATION_PAIRS:
        for scope, classes in SCOPES.items():
            group = [c for c in cells if c.cls in classes and c.video is not None]
            x = np.array([cell_value(c, video) for c in group])
            y = np.array([cell_value(c, emb) for c in group])
            rho, lo, hi = spearman_bootstrap(x, y, n_boot=n_boot, seed=seed)
            n = int(np.sum(np.isfinite(x) & np.isfinite(y)))
            out.append(Correlation(video, emb, scope, n, rho, lo, hi))
    return out


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
    group: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in eligible:
        group[c.agent, c.cls].append(c)

    headline = []
    for a in agents:
        id_agg, ood_agg = aggregate(group[a, "id"]), aggregate(group[a, "ood"])
        deg = degradations(id_agg, ood_agg)
        tell, floored = ood_tell(deg["success"], deg["psnr"])
        tell_s, floored_s = ood_tell(deg["success"], deg["ssim"])
        headline.append(
            HeadlineRow(a, families[a], id_agg, ood_agg, deg, tell, floored, tell_s, floored_s)
        )

    look_work: dict[str, dict[tuple[bool, bool], Agg]] = {}
    for a in agents:
        mine = [c for c in eligible if c.agent == a]
        look_work[a] = {
            (lk, wk): aggregate([c for c in mine if c.look == lk and c.work == wk])
            for lk in (False, True)
            for wk in (False, True)
        }

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

    split_groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in eligible:
        split_groups[c.agent, c.split].append(c)
    by_split = [
        (a, s, aggregate(split_groups[a, s]))
        for a, s in sorted(split_groups, key=lambda k: (k[0], split_order(k[1])))
    ]

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
        correlations=correlations(eligible, n_boot, seed),
        look_work=look_work,
        curves=dict(curves),
        by_class={a: {k: aggregate(group[a, k]) for k in ("id", "ood", "look")} for a in agents},
        by_split=by_split,
        eligible=eligible,
        flagged=flagged,
        counts=counts,
        versions=sorted({c.version for c in cells if c.version}),
        seeds=sorted({c.seed for c in cells}),
        tasks=sorted({c.task for c in cells}),
        warnings=list(run.warnings),
    )
