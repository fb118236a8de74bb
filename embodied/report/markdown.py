"""report.md: the whole report as GitHub-flavoured markdown (plots linked as PNG files)."""

from __future__ import annotations

from embodied.report import rollouts, tables
from embodied.report.plots import Plot
from embodied.report.summary import Summary

TITLE = "embodied-ood report"
HEADLINE_TITLE = "Headline: video vs embodied metrics, in and out of distribution"
DETAILS_TITLE = "Details"
SURVIVORS_TITLE = "Who survives out of distribution"
SEEDS_TITLE = "Over training seeds"
ESTIMATES_TITLE = "Identified physics vs the truth"
CORRELATION_TITLE = "Does a better prediction mean a better robot?"
ACROSS_TITLE = "Across models"
WITHIN_TITLE = "Within each model"
ROLLOUTS_TITLE = "Look, don't read: one ID and one OOD rollout per agent"
ROLLOUTS_NOTE = (
    "Left: the real closed-loop episode (border green on success, red on a drop). Right: the "
    "model's open-loop imagination under a held-out clip's real actions, truth | prediction | "
    "error."
)
LOOK_WORK_TITLE = "Look vs work"
SPLIT_TITLE = "Per split (pooled over tasks and seeds)"
FLAGGED_TITLE = "Flagged cells"
VIDEOS_TITLE = "Videos"
TRACE_TITLE = "Traceability"


def excluded_note(s: Summary) -> str:
    """Which agent-task pairs the correlations leave out, and why."""
    out = s.fails_id()
    if not out:
        return "Every agent works in distribution: every cell counts in the correlations."
    items = [
        f"`{a}` on {t} (ID success {tables.fmt_rate(r) if r is not None else 'unknown'})"
        for a, t, r in out
    ]
    return (
        "Left out of the correlations because they fail in distribution (shown everywhere "
        "else): " + "; ".join(items) + "."
    )


def warnings(s: Summary) -> list[str]:
    """The notices that go at the top of the report, most important first."""
    out = []
    if s.flagged:
        out.append(
            f"{len(s.flagged)} cell(s) have fewer than {s.min_episodes} episodes and are left out "
            f'of every aggregate (listed under "{FLAGGED_TITLE}"); set min_episodes= to change '
            "the threshold."
        )
    if not s.eligible:
        out.append("No cell is left to aggregate: every table below is empty (n/a).")
    out += s.warnings
    return out


def _figure(p: Plot, plot_paths: dict[str, str]) -> list[str]:
    out = [f"### {p.title}", ""]
    if p.png is not None:
        out += [f"![{p.title}]({plot_paths[p.name]})", ""]
    return out + [p.caption, ""]


def _rollouts(s: Summary) -> list[str]:
    picked = rollouts.pick(s)
    if not picked:
        return ["No rollout videos in the run directory.", ""]
    md = [ROLLOUTS_NOTE, ""]
    for agent, rs in picked.items():
        links = [
            f"{rollouts.caption(r)}: "
            + ", ".join(f"[{kind}]({path})" for kind, path in sorted(r.paths.items()))
            for r in rs
        ]
        md.append(f"- **{agent}**: " + "; ".join(links))
    return [*md, ""]


def render(s: Summary, plots: list[Plot], plot_paths: dict[str, str]) -> str:
    """The markdown document; ``plot_paths`` maps plot name -> path relative to the run dir."""
    md = [f"# {TITLE}", ""]
    md.append(
        f"Run `{s.run.run_dir}` · {len(s.run.cells)} cells · agents: {', '.join(s.agents)} · "
        f"tasks: {', '.join(s.tasks)}"
    )
    md.append("")
    for w in warnings(s):
        md += [f"> **Warning:** {w}", ""]
    first, rest = plots[0], plots[1:]
    md += _figure(first, plot_paths)
    md += [f"## {HEADLINE_TITLE}", "", tables.to_markdown(tables.headline_table(s)), ""]
    md += [tables.HEADLINE_NOTE, ""]
    md += [f"## {DETAILS_TITLE}", "", "<details><summary>Every headline number</summary>", ""]
    md += [tables.to_markdown(tables.details_table(s)), "", "</details>", ""]
    md += [tables.DETAILS_NOTE, ""]
    if s.training_seeds:
        md += [f"## {SEEDS_TITLE}", "", tables.to_markdown(tables.seeds_table(s)), ""]
        md += [tables.SEEDS_NOTE, ""]
    if s.survivor_agents:
        md += [f"## {SURVIVORS_TITLE}", "", tables.to_markdown(tables.survivors_table(s)), ""]
        md += [tables.SURVIVORS_NOTE, ""]
    if s.estimates:
        md += [f"### {ESTIMATES_TITLE}", "", tables.to_markdown(tables.estimates_table(s)), ""]
        md += [tables.ESTIMATES_NOTE, ""]
    md += [f"## {CORRELATION_TITLE}", "", excluded_note(s), ""]
    md += [f"### {ACROSS_TITLE}", "", tables.to_markdown(tables.across_table(s)), ""]
    md += [f"### {WITHIN_TITLE}", "", tables.to_markdown(tables.within_table(s)), ""]
    md += [tables.CORRELATION_NOTE, ""]
    md += [f"## {ROLLOUTS_TITLE}", "", *_rollouts(s)]
    md += ["## Plots", ""]
    for p in rest:
        md += _figure(p, plot_paths)
    md += [f"## {LOOK_WORK_TITLE}", "", tables.to_markdown(tables.look_work_table(s)), ""]
    md += [tables.LOOK_WORK_NOTE, ""]
    md += [f"## {SPLIT_TITLE}", "", "<details><summary>Every split of every agent</summary>", ""]
    md += [tables.to_markdown(tables.split_table(s)), "", "</details>", ""]
    md += [f"## {FLAGGED_TITLE}", ""]
    if s.flagged:
        md += [
            f"Fewer than {s.min_episodes} episodes: shown here as raw counts, used nowhere else.",
            "",
            tables.to_markdown(tables.flagged_table(s)),
            "",
        ]
    else:
        md += [f"None: every cell has at least {s.min_episodes} episodes.", ""]
    md += [f"## {VIDEOS_TITLE}", ""]
    if s.run.videos:
        md += [f"- [{v}]({v})" for v in s.run.videos] + [""]
    else:
        md += ["No videos in the run directory.", ""]
    md += [f"## {TRACE_TITLE}", ""]
    md += [f"- **{k}**: {v}" for k, v in tables.trace_items(s)] + [""]
    md += ["### Cell counts", "", tables.to_markdown(tables.counts_table(s)), ""]
    if s.run.version_text is not None:
        md += ["### Version info", "", "```", s.run.version_text.rstrip(), "```", ""]
    if s.run.config_text is not None:
        md += ["### config.yaml", "", "```yaml", s.run.config_text.rstrip(), "```", ""]
    return "\n".join(md)
