"""report.md: the whole report as GitHub-flavoured markdown (plots linked as PNG files)."""

from __future__ import annotations

from embodied.report import tables
from embodied.report.plots import Plot
from embodied.report.summary import Summary

TITLE = "embodied-ood report"
HEADLINE_TITLE = "Headline: video vs embodied metrics, in and out of distribution"
CORRELATION_TITLE = "Does a better-looking prediction mean a better robot?"
LOOK_WORK_TITLE = "Look vs work"
SPLIT_TITLE = "Per split (pooled over tasks and seeds)"
FLAGGED_TITLE = "Flagged cells"
VIDEOS_TITLE = "Videos"
TRACE_TITLE = "Traceability"


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
    md += [f"## {HEADLINE_TITLE}", "", tables.to_markdown(tables.headline_table(s)), ""]
    md += [tables.HEADLINE_NOTE, ""]
    md += [f"## {CORRELATION_TITLE}", "", tables.to_markdown(tables.correlation_table(s)), ""]
    md += [tables.CORRELATION_NOTE, ""]
    md += ["## Plots", ""]
    for p in plots:
        md += [f"### {p.title}", ""]
        if p.png is not None:
            md += [f"![{p.title}]({plot_paths[p.name]})", ""]
        md += [p.caption, ""]
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
