"""The report's tables as plain data (header + rows of strings), and their GitHub markdown.

Both report.md and report.html render the same ``Table`` objects, so the two never disagree.
Missing numbers print as "n/a" (e.g. video metrics of agents that predict no frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import embodied
from embodied.metrics.stats import TELL_FLOOR, Rate
from embodied.report.summary import Agg, Correlation, Summary

NA = "n/a"
VIDEO_LABEL = {"psnr": "PSNR", "ssim": "SSIM", "mse": "MSE"}
EMBODIED_LABEL = {"success": "success rate", "drop": "drop rate"}

HEADLINE_NOTE = (
    "ID = split `id`; OOD = every `ood-*` split, pooled over tasks and seeds. "
    "Rates: pooled episodes with 95% Wilson intervals. Video metrics: clip-weighted means of the "
    "cells' means (PSNR in dB, each frame capped at 100 dB; MSE of intensities in [0, 1]). "
    "deg = degradation, the fraction of the ID value lost OOD (positive = worse OOD; for MSE the "
    "relative increase; for drops the fraction of ID cup-keeping lost, "
    "(drop OOD - drop ID) / (1 - drop ID)). "
    "OOD tell = success deg / PSNR deg: how many times faster success falls than the video "
    f"metric; a PSNR deg below {TELL_FLOOR:.0%} counts as {TELL_FLOOR:.0%} and the tell is "
    "marked as a bound (>=). The gap, success deg minus PSNR deg in percentage points, is the "
    "same comparison without the ratio's sensitivity to a small denominator."
)
CORRELATION_NOTE = (
    "Spearman's rho across cells (one point per agent x task x split x seed cell with video "
    "metrics), with a 95% percentile bootstrap interval over resampled cells. Overall = ID, OOD "
    "and look cells. Positive rho for PSNR/SSIM vs success (or MSE vs drops) means "
    "better-looking predictions go with a better robot."
)
LOOK_WORK_NOTE = (
    "Each agent's cells by the results' `look` and `work` flags: no/no is `id`, work-only the "
    "dynamics shifts, look-only the appearance shifts, both e.g. cup size."
)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


def fmt_float(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else NA


def fmt_rate(r: Rate) -> str:
    if r.n == 0:
        return NA
    lo, hi = r.ci
    return f"{r.value:.2f} [{lo:.2f}, {hi:.2f}]"


VIDEO_DIGITS = {"psnr": 1, "ssim": 3, "mse": 4, "cup_pos_error": 3}


def fmt_video(agg: Agg, metric: str) -> str:
    return fmt_float(getattr(agg, metric), VIDEO_DIGITS[metric]) if agg.video_cells else NA


def fmt_deg(x: float) -> str:
    return f"{100 * x:.0f}%" if math.isfinite(x) else NA


def fmt_tell(x: float, floored: bool, gap: float) -> str:
    if not math.isfinite(x):
        return NA
    ratio = f">= {x:.1f}x" if floored and x > 0 else f"{x:.1f}x"
    return f"{ratio} (gap {100 * gap:+.0f} pts)"


def headline_table(s: Summary) -> Table:
    header = ["Agent", "Family", "Cells ID/OOD"]
    for m in ("psnr", "ssim", "mse"):
        header += [f"{VIDEO_LABEL[m]} ID", f"{VIDEO_LABEL[m]} OOD", f"{VIDEO_LABEL[m]} deg"]
    header += ["Success ID", "Success OOD", "Success deg", "Drop ID", "Drop OOD", "Drop deg"]
    header += ["OOD tell"]
    rows = []
    for r in s.headline:
        row = [r.agent, r.family or NA, f"{r.id.cells}/{r.ood.cells}"]
        for m in ("psnr", "ssim", "mse"):
            row += [fmt_video(r.id, m), fmt_video(r.ood, m), fmt_deg(r.deg[m])]
        row += [fmt_rate(r.id.success), fmt_rate(r.ood.success), fmt_deg(r.deg["success"])]
        row += [fmt_rate(r.id.drop), fmt_rate(r.ood.drop), fmt_deg(r.deg["drop"])]
        row += [fmt_tell(r.tell, r.tell_floored, r.tell_gap)]
        rows.append(row)
    return Table(header, rows)


def fmt_corr(c: Correlation) -> str:
    if not math.isfinite(c.rho):
        return f"{NA} (n={c.n})"
    if not math.isfinite(c.lo):
        return f"{c.rho:.2f} (n={c.n})"
    return f"{c.rho:.2f} [{c.lo:.2f}, {c.hi:.2f}] (n={c.n})"


def correlation_table(s: Summary) -> Table:
    header = ["Video metric", "Embodied metric", "Overall", "Within ID", "Within OOD"]
    by_pair: dict[tuple[str, str], dict[str, Correlation]] = {}
    for c in s.correlations:
        by_pair.setdefault((c.video, c.embodied), {})[c.scope] = c
    rows = [
        [VIDEO_LABEL[v], EMBODIED_LABEL[e], *(fmt_corr(sc[k]) for k in ("overall", "ID", "OOD"))]
        for (v, e), sc in by_pair.items()
    ]
    return Table(header, rows)


def fmt_agg(g: Agg) -> str:
    if g.cells == 0:
        return "no cells"
    parts = [f"success {fmt_rate(g.success)}", f"drop {fmt_rate(g.drop)}"]
    if g.video_cells:
        parts += [f"PSNR {fmt_video(g, 'psnr')}", f"SSIM {fmt_video(g, 'ssim')}"]
    else:
        parts += [f"PSNR {NA}", f"SSIM {NA}"]
    parts.append(f"{g.cells} cell" + ("" if g.cells == 1 else "s"))
    return " · ".join(parts)


def look_work_table(s: Summary) -> Table:
    rows = []
    for a in s.agents:
        q = s.look_work[a]
        for look in (False, True):
            rows.append(
                [a, "yes" if look else "no", fmt_agg(q[look, False]), fmt_agg(q[look, True])]
            )
    return Table(["Agent", "Look shift", "No work shift", "Work shift"], rows)


def split_table(s: Summary) -> Table:
    header = ["Agent", "Split", "Cells", "Episodes", "Success", "Drop", "Mean return"]
    header += ["PSNR", "SSIM", "MSE", "Cup pos err (m)"]
    rows = [
        [a, split, str(g.cells), str(g.episodes), fmt_rate(g.success), fmt_rate(g.drop)]
        + [fmt_float(g.mean_return, 2)]
        + [fmt_video(g, m) for m in ("psnr", "ssim", "mse", "cup_pos_error")]
        for a, split, g in s.by_split
    ]
    return Table(header, rows)


def counts_table(s: Summary) -> Table:
    header = ["Agent", "Family", "ID cells", "OOD cells", "Look cells", "Train cells"]
    header += [f"Flagged (< {s.min_episodes} episodes)", "Episodes"]
    rows = [
        [a, s.families[a] or NA]
        + [str(s.counts[a][k]) for k in ("id", "ood", "look", "train", "flagged", "episodes")]
        for a in s.agents
    ]
    return Table(header, rows)


def flagged_table(s: Summary) -> Table:
    rows = [
        [c.cell_id, str(c.episodes), f"{c.successes}/{c.episodes}", f"{c.drops}/{c.episodes}"]
        for c in s.flagged
    ]
    return Table(["Cell (not in any aggregate)", "Episodes", "Successes", "Drops"], rows)


def trace_items(s: Summary) -> list[tuple[str, str]]:
    """What every number in the report can be traced back to."""
    run = s.run
    total = sum(c.episodes for c in run.cells)
    return [
        ("Run directory", str(run.run_dir)),
        ("Results", f"results.jsonl: {len(run.cells)} cells, sha256 {run.results_sha256}"),
        ("Cells in aggregates", f"{len(s.eligible)} (flagged: {len(s.flagged)})"),
        ("Episodes", str(total)),
        ("Physics errors", str(sum(c.physics_errors for c in run.cells))),
        ("Tasks", ", ".join(s.tasks)),
        ("Cell seeds", ", ".join(str(x) for x in s.seeds)),
        ("Package version (results)", ", ".join(s.versions) or NA),
        ("Package version (report)", embodied.__version__),
        ("Minimum episodes per cell", str(s.min_episodes)),
        ("Bootstrap", f"{s.n_boot} resamples, seed {s.seed}, percentile 95% interval"),
        (
            "Config",
            "config.yaml (below)" if run.config_text is not None else "config.yaml not found",
        ),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(t: Table) -> str:
    """A GitHub-flavoured markdown table: header row, separator, one line per row."""
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |"]
    lines.append("|" + "|".join("---" for _ in t.header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)
