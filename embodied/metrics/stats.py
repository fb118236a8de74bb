"""Small-sample statistics for the report: Wilson intervals, bootstrap Spearman, degradation.

Episodes are few (tens per cell), so every rate carries a 95% Wilson score interval (sound at
0 and n successes, unlike the normal approximation), and rank correlations across cells carry
a percentile bootstrap interval over resampled cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_BOOT_CHUNK = 256  # bootstrap resamples ranked at once: bounds memory on large grids


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0 (nothing known)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class Rate:
    """k of n, the proportion and its 95% Wilson interval (all nan-free; n may be 0)."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict[str, float | int | list[float] | None]:
        return {
            "k": self.k,
            "n": self.n,
            "rate": self.value if self.n else None,
            "ci": list(self.ci) if self.n else None,
        }


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def resample_ranks(groups: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of each row of resampled values.

    ``groups`` are the values' dense ranks (0..G-1, as from np.unique(return_inverse=True)),
    ``idx`` (B, n) the resampled positions. Equal to ``scipy.stats.rankdata(values[idx],
    axis=1)`` but O(n) per row by counting, which keeps a 2000-resample bootstrap over a full
    grid's thousands of cells to a second.
    """
    g = groups[idx]
    b, n_groups = idx.shape[0], int(groups.max()) + 1
    flat = (g + (np.arange(b) * n_groups)[:, None]).ravel()
    counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
    below = np.cumsum(counts, axis=1) - counts
    return np.take_along_axis(below + (counts + 1) / 2.0, g, axis=1)


def spearman_bootstrap(
    x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Spearman's rho of paired samples and a percentile bootstrap interval (resampling pairs).

    Pairs with a non-finite member are dropped. Returns (nan, nan, nan) with fewer than 3
    pairs or when either side is constant; resamples that come out constant are skipped.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    from scipy.stats import spearmanr  # here: scipy.stats costs every process ~1 s to import

    rho = float(spearmanr(x, y).statistic)
    gx, gy = np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    boots = []
    for start in range(0, n_boot, _BOOT_CHUNK):
        idx = rng.integers(0, n, size=(min(_BOOT_CHUNK, n_boot - start), n))
        boots.append(_rowwise_pearson(resample_ranks(gx, idx), resample_ranks(gy, idx)))
    values = np.concatenate(boots) if boots else np.array([])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return rho, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return rho, float(lo), float(hi)


def degradation(
    id_value: float | None, ood_value: float | None, higher_is_better: bool = True
) -> float:
    """Fraction of the in-distribution value lost out of distribution; positive = worse OOD.

    Higher-is-better metrics (success, PSNR, SSIM): (id - ood) / |id|. Lower-is-better ones
    (MSE): (ood - id) / |id|. 0.25 reads "25% worse OOD"; negative means OOD did better.
    nan when either value is missing/non-finite or id is 0 (no baseline to be relative to).
    For drop rates the report applies this to the keep rate, 1 - drop.
    """
    if id_value is None or ood_value is None:
        return math.nan
    a, b = float(id_value), float(ood_value)
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
        return math.nan
    loss = (a - b) if higher_is_better else (b - a)
    return loss / abs(a)


TELL_FLOOR = 0.01


def ood_tell(success_deg: float, video_deg: float, floor: float = TELL_FLOOR) -> tuple[float, bool]:
    """How many times more success degrades than the video metric: success_deg / video_deg.

    A video degradation below ``floor`` (1%, including negative: the video metric held or
    improved) is counted as ``floor``, so a model that looks unchanged but fails stays visible
    as a large ratio; the second value says the floor was used (the ratio is then a bound).
    nan when either degradation is nan.
    """
    if not (math.isfinite(success_deg) and math.isfinite(video_deg)):
        return math.nan, False
    floored = video_deg < floor
    return success_deg / max(video_deg, floor), floored


def newcombe(a: Rate, b: Rate) -> tuple[float, float]:
    """95% interval of a - b for two independent proportions (Newcombe's hybrid score method:
    Wilson intervals combined; sound at 0 and n successes, where the Wald interval is not)."""
    if not (a.n and b.n):
        return -1.0, 1.0
    (la, ua), (lb, ub) = a.ci, b.ci
    pa, pb = a.value, b.value
    lo = pa - pb - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = pa - pb + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return max(-1.0, lo), min(1.0, hi)


@dataclass(frozen=True)
class GapScore:
    """(agent - nominal) / (oracle - nominal) on pooled success, with a bootstrap interval."""

    value: float
    lo: float
    hi: float
    cells: int  # biting (task, split, seed) cells pooled

    def to_dict(self) -> dict[str, float | int | list[float] | None]:
        finite = math.isfinite(self.value)
        return {
            "value": self.value if finite else None,
            "ci": [self.lo, self.hi] if finite and math.isfinite(self.lo) else None,
            "cells": self.cells,
        }


def gap_closed(
    agent: list[Rate],
    nominal: list[Rate],
    oracle: list[Rate],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> GapScore:
    """The share of the nominal-to-oracle success gap an agent closes, pooled over cells.

    Cell i holds the three references' successes on the same episodes' seeds: ``agent[i]``,
    ``nominal[i]``, ``oracle[i]``. 0: no better than knowing only the training physics;
    1: as good as knowing the truth; negative: worse than the training-physics simulator.
    The interval resamples each cell's episodes (stratified bootstrap: a binomial draw per
    cell and reference); resamples whose gap closes to <= 0 have no score and are dropped.
    """
    if not (len(agent) == len(nominal) == len(oracle)):
        raise ValueError("agent, nominal and oracle need one rate per cell each")
    if not agent:
        return GapScore(math.nan, math.nan, math.nan, 0)

    def pooled(rates: list[Rate], k: np.ndarray | None = None) -> np.ndarray:
        ks = np.array([r.k for r in rates], dtype=np.float64) if k is None else k
        return ks.sum(axis=-1) / sum(r.n for r in rates)

    def score(a: np.ndarray, n: np.ndarray, o: np.ndarray) -> np.ndarray:
        gap = o - n
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (a - n) / gap, np.nan)

    value = float(score(pooled(agent), pooled(nominal), pooled(oracle)))
    rng = np.random.default_rng(seed)
    draws = [
        pooled(r, rng.binomial([x.n for x in r], [x.value for x in r], size=(n_boot, len(r))))
        for r in (agent, nominal, oracle)
    ]
    boots = score(*draws)
    boots = boots[np.isfinite(boots)]
    if not math.isfinite(value) or len(boots) < n_boot // 2:
        return GapScore(value, math.nan, math.nan, len(agent))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return GapScore(value, float(lo), float(hi), len(agent))


@dataclass(frozen=True)
class SeedSpread:
    """A rate over training seeds: each seed's own, their interquartile mean (IQM) and its
    stratified bootstrap interval (seeds resampled, then each seed's episodes), as the field
    reports runs of several seeds (Agarwal et al. 2021, rliable)."""

    per_seed: tuple[Rate, ...]
    iqm: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_seed": [r.to_dict() for r in self.per_seed],
            "iqm": self.iqm if math.isfinite(self.iqm) else None,
            "ci": [self.lo, self.hi] if math.isfinite(self.lo) else None,
        }


def seed_spread(rates: list[Rate], n_boot: int = 2000, seed: int = 0) -> SeedSpread:
    """IQM over training seeds (scipy's 25% trimmed mean: the mean of two or three seeds,
    the middle half of more) with a two-level bootstrap interval: seeds, then episodes."""
    from scipy.stats import trim_mean  # here: see spearman_bootstrap

    measured = [r for r in rates if r.n]
    if not measured:
        return SeedSpread(tuple(rates), math.nan, math.nan, math.nan)
    p = np.array([r.value for r in measured])
    n = np.array([r.n for r in measured])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(measured), size=(n_boot, len(measured)))
    boots = trim_mean(rng.binomial(n[pick], p[pick]) / n[pick], 0.25, axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return SeedSpread(tuple(rates), float(trim_mean(p, 0.25)), float(lo), float(hi))
