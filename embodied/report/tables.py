"""The report's tables as plain data (header + rows of strings), and their GitHub markdown.

Both report.md and report.html render the same ``Table`` objects, so the two never disagree.
Missing numbers print as "n/a" (e.g. video metrics of agents that predict no frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import embodied
from embodied.metrics.stats import TELL_FLOOR, GapScore, Rate, SeedSpread
from embodied.report.adaptation import ESTIMATE_TOLERANCE
from embodied.report.difficulty import MARGIN
from embodied.report.summary import (
    ID_WORKS,
    SURVIVORS,
    Agg,
    Correlation,
    Summary,
)

NA = "n/a"
VIDEO_LABEL = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "mse": "MSE",
    "cup_pos_error": "cup error",
    "state_error": "state error",
}
EMBODIED_LABEL = {"success": "success rate", "drop": "drop rate"}

HEADLINE_NOTE = (
    "ID = split `id`; OOD = every `ood-*` split, pooled over tasks and seeds. Rates: pooled "
    "episodes with 95% Wilson intervals. PSNR in dB (clip-weighted mean of the cells' means, "
    "each frame capped at 100 dB). Cup error: distance in mm between the cup position the model "
    "predicts open loop and MuJoCo's, for models that predict one; where the results carry state "
    "probes (embodied.metrics.probes) the column is the state error instead: the cup's position "
    "relative to the hand read from the model's open-loop latent (exact for state-vector "
    "latents, else the MLP probe fitted on `train`), averaged over horizons. "
    "OOD tell = success deg / PSNR deg, where deg (degradation) is the fraction of the ID value "
    "lost OOD: how many times faster success falls than the video metric; a PSNR deg below "
    f"{TELL_FLOOR:.0%} counts as {TELL_FLOOR:.0%} and the tell is marked as a bound (>=). The "
    "gap, success deg minus PSNR deg in percentage points, is the same comparison without the "
    "ratio's sensitivity to a small denominator. Gap closed = (agent - nominal) / (oracle - "
    "nominal) on the pooled success of the OOD cells that bite (where knowing the true physics "
    f"beats knowing the training physics by more than {MARGIN:.2f}, interval included; "
    "docs/difficulty.md), paired on the same episodes' seeds, with a 95% stratified bootstrap "
    "interval over episodes: 0 adapts no better than the training-physics simulator, 1 as "
    "well as the simulator told the truth, negative is worse than the first; n/a without "
    "`nominal` and `oracle` in the run. Every other number is in the details table."
)
DETAILS_NOTE = (
    "deg = degradation, the fraction of the ID value lost OOD (positive = worse OOD; for MSE the "
    "relative increase; for drops the fraction of ID cup-keeping lost, "
    "(drop OOD - drop ID) / (1 - drop ID)). MSE of intensities in [0, 1]. Slip columns appear "
    "when the results carry a slip rate."
)
CORRELATION_NOTE = (
    "Spearman's rho with a 95% percentile bootstrap interval; n is the number of points. "
    "Across models: one point per agent, its metrics averaged over its splits (ID, OOD, look), "
    "so the question is whether the model that predicts better is the better robot. Within a "
    "model: one point per cell (split x seed x task) of that agent, so the question is whether, "
    "for one model, the splits it predicts worse are the ones where it fails. "
    f"An agent whose pooled ID success on a task is below {ID_WORKS:.0%} fails in distribution: "
    "its cells are shown in every table and plot but left out of these correlations (the "
    "column 'all agents' keeps them, to show how much a family that fails at everything "
    "inflates a pooled number). Positive rho for PSNR/SSIM vs success, negative for cup error "
    "vs success, means a better prediction goes with a better robot."
)
SURVIVORS_NOTE = (
    "Success per work shift and severity (ID = split `id`), pooled over tasks and seeds, 95% "
    "Wilson intervals; from the model that knows only the training physics (`nominal`) to the "
    "one told the episode's true physics (`oracle`), whichever of "
    f"{', '.join(SURVIVORS)} ran. The last row is each one's gap-closed score over the OOD "
    "cells that bite (see the headline's note)."
)
ESTIMATES_NOTE = (
    "Physics parameters an agent identified from the episode's own transitions against the "
    "episode's true values (the results' `param_estimates` and `param_truth`), pooled over "
    "seeds: relative error |estimate - truth| / |truth|, and the episodes within "
    f"{ESTIMATE_TOLERANCE:.0%} of the truth (95% Wilson interval)."
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


def fmt_gap(g: GapScore | None) -> str:
    if g is None or not math.isfinite(g.value):
        return NA
    if not math.isfinite(g.lo):
        return f"{g.value:.2f}"
    return f"{g.value:.2f} [{g.lo:.2f}, {g.hi:.2f}]"


def fmt_change(a: float, b: float, scale: float, digits: int) -> str:
    """'a → b' (each scaled), n/a where a side is missing."""
    if not (math.isfinite(a) or math.isfinite(b)):
        return NA
    return f"{fmt_float(scale * a, digits)} → {fmt_float(scale * b, digits)}"


def headline_table(s: Summary) -> Table:
    """What a reader needs at a glance; eight columns, so it fits a screen."""
    # the probes' state error where the results carry it, else the predicted cup's position error
    probed = any(math.isfinite(g.state_error) for r in s.headline for g in (r.id, r.ood))
    state = "state_error" if probed else "cup_pos_error"
    header = ["Agent", "Success ID", "Success OOD", "Gap closed", "Drop OOD", "PSNR ID → OOD"]
    header += [f"{'State' if probed else 'Cup'} error ID → OOD (mm)", "OOD tell"]
    rows = []
    for r in s.headline:
        psnr = fmt_change(*(g.psnr if g.video_cells else math.nan for g in (r.id, r.ood)), 1, 1)
        cup = fmt_change(getattr(r.id, state), getattr(r.ood, state), 1000, 1)
        rows.append(
            [r.agent, fmt_rate(r.id.success), fmt_rate(r.ood.success), fmt_gap(r.gap)]
            + [fmt_rate(r.ood.drop)]
            + [psnr, cup, fmt_tell(r.tell, r.tell_floored, r.tell_gap)]
        )
    return Table(header, rows)


def details_table(s: Summary) -> Table:
    """Every headline number: cells, all video metrics, rates and degradations, slips."""
    slips = any(r.id.slip is not None or r.ood.slip is not None for r in s.headline)
    header = ["Agent", "Family", "Cells ID/OOD"]
    for m in ("psnr", "ssim", "mse"):
        header += [f"{VIDEO_LABEL[m]} ID", f"{VIDEO_LABEL[m]} OOD", f"{VIDEO_LABEL[m]} deg"]
    header += ["Success ID", "Success OOD", "Success deg", "Drop ID", "Drop OOD", "Drop deg"]
    header += ["Slip ID", "Slip OOD"] if slips else []
    header += ["OOD tell"]
    rows = []
    for r in s.headline:
        row = [r.agent, r.family or NA, f"{r.id.cells}/{r.ood.cells}"]
        for m in ("psnr", "ssim", "mse"):
            row += [fmt_video(r.id, m), fmt_video(r.ood, m), fmt_deg(r.deg[m])]
        row += [fmt_rate(r.id.success), fmt_rate(r.ood.success), fmt_deg(r.deg["success"])]
        row += [fmt_rate(r.id.drop), fmt_rate(r.ood.drop), fmt_deg(r.deg["drop"])]
        if slips:
            row += [fmt_rate(g.slip) if g.slip is not None else NA for g in (r.id, r.ood)]
        row += [fmt_tell(r.tell, r.tell_floored, r.tell_gap)]
        rows.append(row)
    return Table(header, rows)


def fmt_corr(c: Correlation) -> str:
    if not math.isfinite(c.rho):
        return f"{NA} (n={c.n})"
    if not math.isfinite(c.lo):
        return f"{c.rho:.2f} (n={c.n})"
    return f"{c.rho:.2f} [{c.lo:.2f}, {c.hi:.2f}] (n={c.n})"


def _pair_label(video: str, emb: str) -> str:
    return f"{VIDEO_LABEL[video]} vs {EMBODIED_LABEL[emb]}"


def across_table(s: Summary) -> Table:
    """Across models: agents that work in distribution, and (for contrast) all agents."""
    by_pair: dict[tuple[str, str], dict[str, Correlation]] = {}
    for c in s.correlations:
        if c.scope in ("across", "across-all"):
            by_pair.setdefault((c.video, c.embodied), {})[c.scope] = c
    header = ["Pair", "Agents that work ID", "All agents (not the answer)"]
    rows = [
        [_pair_label(v, e), fmt_corr(sc["across"]), fmt_corr(sc["across-all"])]
        for (v, e), sc in by_pair.items()
    ]
    return Table(header, rows)


def within_table(s: Summary) -> Table:
    """Within each model: one row per agent, one column per metric pair."""
    pairs = list(dict.fromkeys((c.video, c.embodied) for c in s.correlations))
    fails = s.fails_id()
    failing = {(a, t) for a, t, _ in fails}
    works = {c.agent for c in s.eligible if (c.agent, c.task) not in failing}
    within = {(c.agent, c.video, c.embodied): c for c in s.correlations if c.scope == "within"}
    rows = []
    for a in s.agents:
        if a not in works and any(b == a for b, _, _ in fails):
            rows.append([a] + ["left out: fails ID"] * len(pairs))
        elif any(within[a, v, e].n for v, e in pairs if (a, v, e) in within):
            rows.append([a] + [fmt_corr(within[a, v, e]) for v, e in pairs])
    return Table(["Agent", *(_pair_label(v, e) for v, e in pairs)], rows)


def survivors_table(s: Summary) -> Table:
    rows = [
        ["ID" if r.shift == "id" else r.shift, "-" if r.shift == "id" else str(r.severity)]
        + [fmt_rate(r.success[a].success) for a in s.survivor_agents]
        for r in s.survivors
    ]
    gaps = {r.agent: r.gap for r in s.headline}
    if any(gaps.get(a) for a in s.survivor_agents):
        rows.append(["Gap closed", "biting"] + [fmt_gap(gaps.get(a)) for a in s.survivor_agents])
    return Table(["Shift", "Severity", *s.survivor_agents], rows)


SEEDS_NOTE = (
    "An agent trained with several training seeds (`state`, `state@1`, ...; "
    "`agents=[state,state@1]`): each seed's pooled success, then their interquartile mean "
    "(the mean of two or three seeds) with a 95% two-level bootstrap interval (seeds "
    "resampled, then each seed's episodes). The spread between seeds is training variance that "
    "an interval over one model's episodes does not show."
)


def fmt_spread(g: SeedSpread) -> tuple[str, str]:
    per = " / ".join(f"{r.value:.2f}" if r.n else NA for r in g.per_seed)
    if not math.isfinite(g.iqm):
        return per, NA
    return per, f"{g.iqm:.2f} [{g.lo:.2f}, {g.hi:.2f}]"


def seeds_table(s: Summary) -> Table:
    rows = [
        [r.agent, ", ".join(r.members), *fmt_spread(r.id), *fmt_spread(r.ood)]
        for r in s.training_seeds
    ]
    header = ["Agent", "Seeds", "Success ID per seed", "ID IQM", "Success OOD per seed"]
    return Table([*header, "OOD IQM"], rows)


def estimates_table(s: Summary) -> Table:
    header = ["Agent", "Split", "Parameter", "Episodes", "Mean estimate", "Mean truth"]
    header += ["Median rel. error", f"Within {ESTIMATE_TOLERANCE:.0%}"]
    rows = [
        [e.agent, e.split, e.param, str(e.n), fmt_float(e.mean_estimate, 3)]
        + [fmt_float(e.mean_truth, 3), fmt_deg(e.median_rel_error), fmt_rate(e.within)]
        for e in s.estimates
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
    """Per agent and split; "vs training" says what the split is to the agent's training
    range (extrapolation is OOD proper; covered and interpolation are kept out of OOD)."""
    where: dict[tuple[str, str], set[str]] = {}
    for c in s.eligible:
        where.setdefault((c.agent, c.split), set()).add(c.coverage)
    header = ["Agent", "Split", "vs training", "Cells", "Episodes", "Success", "Drop"]
    header += ["Mean return", "PSNR", "SSIM", "MSE", "Cup pos err (m)"]
    rows = [
        [a, split, "/".join(sorted(where.get((a, split), ()))) or NA, str(g.cells)]
        + [str(g.episodes), fmt_rate(g.success), fmt_rate(g.drop)]
        + [fmt_float(g.mean_return, 2)]
        + [fmt_video(g, m) for m in ("psnr", "ssim", "mse", "cup_pos_error")]
        for a, split, g in s.by_split
    ]
    return Table(header, rows)


def counts_table(s: Summary) -> Table:
    interp = any(s.counts[a]["interp"] for a in s.agents)
    header = ["Agent", "Family", "ID cells", "OOD cells", "Look cells", "Train cells"]
    header += ["Interpolation cells"] if interp else []
    header += [f"Flagged (< {s.min_episodes} episodes)", "Episodes"]
    keys = ("id", "ood", "look", "train", *(("interp",) if interp else ()), "flagged", "episodes")
    rows = [[a, s.families[a] or NA] + [str(s.counts[a][k]) for k in keys] for a in s.agents]
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
