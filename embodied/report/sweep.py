"""A sweep's analysis: ID success, OOD success and the OOD gap against each axis, and a verdict.

A sweep point is one bench run; ``sweep.jsonl`` holds one line per (point, agent) with pooled
successes. Along one axis, every other axis (training seeds included) is pooled: the value at
an axis setting is the mean over the points that have it, and the interval is a percentile
bootstrap over those points (resampled within each setting). The slope of the OOD gap per 10x
of a numeric axis is a least-squares fit on log10 of the axis, bootstrapped the same way.

Why not rliable's interquartile mean: with the 2-3 training seeds a CPU sweep affords, the
IQM of a setting is its middle point or two, and its stratified bootstrap over so few runs is
the one we do here; a dependency buys nothing until sweeps hold tens of seeds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

METRICS = {"id": "ID success", "ood": "OOD success", "gap": "OOD gap (ID - OOD, points)"}


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        return f"{self.value:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}]"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def metric(line: dict[str, Any], name: str) -> float:
    """A line's success rate (ID or OOD, in points) or its OOD gap; nan where unmeasured."""
    rates = {k: line[k]["k"] / line[k]["n"] if line[k]["n"] else math.nan for k in ("id", "ood")}
    if name == "gap":
        return 100 * (rates["id"] - rates["ood"])
    return 100 * rates[name]


def numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values)


def _groups(lines: list[dict], agent: str, axis: str, name: str) -> dict[Any, np.ndarray]:
    out: dict[Any, list[float]] = defaultdict(list)
    for ln in lines:
        if ln["agent"] == agent and axis in ln["point"]:
            out[ln["point"][axis]].append(metric(ln, name))
    return {k: np.array([v for v in vs if math.isfinite(v)]) for k, vs in out.items()}


def _resample(groups: dict[Any, np.ndarray], rng: np.random.Generator) -> dict[Any, np.ndarray]:
    return {k: rng.choice(v, size=len(v)) for k, v in groups.items() if len(v)}


def _interval(values: list[float], point: float) -> Estimate:
    finite = [v for v in values if math.isfinite(v)]
    if not finite or not math.isfinite(point):
        return Estimate(point, math.nan, math.nan)
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))


def setting_means(
    lines: list[dict], agent: str, axis: str, name: str, n_boot: int = 1000, seed: int = 0
) -> dict[Any, Estimate]:
    """Mean of ``name`` at each setting of ``axis`` (other axes pooled), bootstrap interval."""
    rng = np.random.default_rng(seed)
    out = {}
    for value, ys in _groups(lines, agent, axis, name).items():
        boots = (
            [float(rng.choice(ys, size=len(ys)).mean()) for _ in range(n_boot)] if len(ys) else []
        )
        out[value] = _interval(boots, float(ys.mean()) if len(ys) else math.nan)
    return out


def _slope(groups: dict[Any, np.ndarray]) -> float:
    xs = np.concatenate([np.full(len(v), math.log10(k)) for k, v in groups.items()])
    ys = np.concatenate(list(groups.values()))
    if len(set(xs.tolist())) < 2:
        return math.nan
    return float(np.polyfit(xs, ys, 1)[0])


def gap_slope(
    lines: list[dict], agent: str, axis: str, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """The OOD gap's change per 10x of a numeric axis, in points, with a bootstrap interval."""
    groups = _groups(lines, agent, axis, "gap")
    if not numeric(list(groups)) or len(groups) < 2:
        return Estimate(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = [_slope(_resample(groups, rng)) for _ in range(n_boot)]
    return _interval(boots, _slope(groups))


def verdicts(lines: list[dict], axes: dict[str, list[Any]], n_boot: int = 1000) -> list[str]:
    """One sentence per agent and varied axis: how far its range moves the OOD gap."""
    out = []
    agents = sorted({ln["agent"] for ln in lines})
    for axis, values in axes.items():
        if axis == "seed" or len(values) < 2:
            continue
        for agent in agents:
            if numeric(values):
                ratio = max(values) / min(values)
                s = gap_slope(lines, agent, axis, n_boot)
                moved = Estimate(*(v * math.log10(ratio) for v in (s.value, s.lo, s.hi)))
                out.append(
                    f"{ratio:g}x {axis} moves the OOD gap of `{agent}` by {moved} points "
                    f"({s} per 10x)."
                )
            else:
                means = setting_means(lines, agent, axis, "gap", n_boot)
                first, last = means.get(values[0]), means.get(values[-1])
                if first and last:
                    out.append(
                        f"{axis} {values[0]} -> {values[-1]} moves the OOD gap of `{agent}` "
                        f"from {first.value:.1f} to {last.value:.1f} points "
                        f"({first} -> {last})."
                    )
    return out


def figure(lines: list[dict], axis: str, values: list[Any]) -> bytes:
    """ID success, OOD success and OOD gap against one axis; one line per agent (PNG)."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    log = numeric(values)
    for ax, (name, label) in zip(fig.subplots(1, 3), METRICS.items(), strict=True):
        for agent in sorted({ln["agent"] for ln in lines}):
            means = setting_means(lines, agent, axis, name)
            keys = [v for v in values if v in means and math.isfinite(means[v].value)]
            if not keys:
                continue
            xs = keys if log else list(range(len(keys)))
            ys = np.array([means[k].value for k in keys])
            err = np.array(
                [[means[k].value - means[k].lo, means[k].hi - means[k].value] for k in keys]
            ).T
            ax.errorbar(xs, ys, yerr=np.nan_to_num(err), marker="o", capsize=3, label=agent)
            if not log:
                ax.set_xticks(range(len(keys)), [str(k) for k in keys])
        if log:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_ylim(-105 if name == "gap" else -5, 105)
        ax.set_xlabel(axis)
        ax.set_title(label)
    fig.axes[0].legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def table(lines: list[dict], axes: dict[str, list[Any]]) -> list[str]:
    """Markdown rows: each agent at each setting of each axis, ID / OOD / gap with intervals."""
    rows = [
        "| Axis | Setting | Agent | Points | ID success | OOD success | OOD gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for axis, values in axes.items():
        for agent in sorted({ln["agent"] for ln in lines}):
            m = {name: setting_means(lines, agent, axis, name) for name in METRICS}
            for v in values:
                if v not in m["id"]:
                    continue
                n = sum(1 for ln in lines if ln["agent"] == agent and ln["point"].get(axis) == v)
                cells = [
                    f"{m[k][v].value:.0f} [{m[k][v].lo:.0f}, {m[k][v].hi:.0f}]" for k in METRICS
                ]
                rows.append(f"| {axis} | {v} | {agent} | {n} | " + " | ".join(cells) + " |")
    return rows


def write(out_dir: Path, axes: dict[str, list[Any]], command: str) -> tuple[Path, Path]:
    """sweep.md and a self-contained sweep.html (figures inline) from sweep.jsonl."""
    lines = read_lines(out_dir / "sweep.jsonl")
    varied = {a: v for a, v in axes.items() if len(v) > 1 and a != "seed"}
    pngs = {axis: figure(lines, axis, values) for axis, values in varied.items()}
    for axis, png in pngs.items():
        (out_dir / f"sweep_{axis}.png").write_bytes(png)
    said = verdicts(lines, axes)
    md = [
        "# Sweep: does scale close the gap?",
        "",
        f"`{command}`: {len({json.dumps(ln['point'], sort_keys=True) for ln in lines})} points, "
        f"axes {json.dumps(axes)}. Success in points (0-100); each setting pools the points "
        "that have it (other axes and training seeds), 95% bootstrap intervals over points.",
        "",
        *table(lines, axes),
        "",
        *(f"![{a}](sweep_{a}.png)" for a in pngs),
        "",
        "## Verdict",
        "",
        *(f"- {v}" for v in said),
    ]
    md_path = out_dir / "sweep.md"
    md_path.write_text("\n".join(md) + "\n")
    imgs = "".join(
        f'<h2>{html.escape(a)}</h2><img alt="{html.escape(a)}" '
        f'src="data:image/png;base64,{base64.b64encode(p).decode()}">'
        for a, p in pngs.items()
    )
    body = "".join(f"<li>{html.escape(v)}</li>" for v in said)
    page = (
        "<!doctype html><meta charset='utf-8'><title>embodied-ood sweep</title>"
        f"<h1>Sweep</h1><p><code>{html.escape(command)}</code></p>{imgs}"
        f"<h2>Verdict</h2><ul>{body}</ul><pre>{html.escape(chr(10).join(table(lines, axes)))}</pre>"
    )
    html_path = out_dir / "sweep.html"
    html_path.write_text(page)
    return md_path, html_path
