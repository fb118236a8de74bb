"""The report: video metrics against embodied metrics, in and out of distribution.

``build_report(run_dir)`` reads ``<run_dir>/results.jsonl`` and writes, into the run directory,
``report.md``, a self-contained ``report.html``, ``summary.csv`` (the headline, one row per
agent), ``summary.json`` (every number, per cell too) and the plots as PNG under
``report_plots/`` (linked by report.md; report.html embeds them).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from embodied.atomic import write_atomic
from embodied.report import html, markdown
from embodied.report.load import ReportError, RunData, load_run
from embodied.report.plots import all_plots
from embodied.report.summary import Summary, summarize

PLOTS_DIR = "report_plots"

__all__ = [
    "ReportError",
    "ReportPaths",
    "RunData",
    "Summary",
    "build_report",
    "load_run",
    "summarize",
]


@dataclass
class ReportPaths:
    """Where build_report wrote each file."""

    markdown: Path
    html: Path
    summary_csv: Path
    summary_json: Path
    plots: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        return [self.markdown, self.html, self.summary_csv, self.summary_json, *self.plots]


def _write(path: Path, data: bytes | str) -> Path:
    """A reader never sees half a report: :func:`embodied.atomic.write_atomic`."""
    return write_atomic(path, data)


def _csv_value(x: object) -> object:
    return "" if x is None else x


def summary_csv(s: Summary) -> str:
    """The headline as CSV, one row per agent; empty fields where a number is n/a."""
    buf = io.StringIO()
    rows = []
    for r in s.headline:
        d = r.to_dict()
        row: dict[str, object] = {"agent": r.agent, "family": r.family}
        for cls in ("id", "ood"):
            agg = d[cls]
            row[f"cells_{cls}"] = agg["cells"]
            row[f"episodes_{cls}"] = agg["episodes"]
            for m in ("psnr", "ssim", "mse", "cup_pos_error", "state_error"):
                row[f"{m}_{cls}"] = agg[m]
            for m in ("success", "drop", "slip"):
                rate = agg[m] or {"rate": None, "ci": None, "k": None}
                row[f"{m}_{cls}"] = rate["rate"]
                row[f"{m}_{cls}_lo"] = rate["ci"][0] if rate["ci"] else None
                row[f"{m}_{cls}_hi"] = rate["ci"][1] if rate["ci"] else None
                row[f"{m}_{cls}_k"] = rate["k"]
        for m, v in d["degradation"].items():
            row[f"{m}_deg"] = v
        row["ood_tell_psnr"] = d["ood_tell_psnr"]
        row["ood_tell_psnr_floored"] = d["ood_tell_psnr_floored"]
        row["ood_tell_psnr_gap"] = d["ood_tell_psnr_gap"]
        rows.append({k: _csv_value(v) for k, v in row.items()})
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def build_report(
    run_dir: str | Path, min_episodes: int = 10, n_boot: int = 2000, seed: int = 0
) -> ReportPaths:
    """Read a run directory and write its report files into it; ReportError on bad input."""
    s = summarize(load_run(run_dir), min_episodes=min_episodes, n_boot=n_boot, seed=seed)
    out = s.run.run_dir
    plots = all_plots(s)
    if any(p.png is not None for p in plots):
        (out / PLOTS_DIR).mkdir(exist_ok=True)
    plot_paths = {p.name: f"{PLOTS_DIR}/{p.name}.png" for p in plots if p.png is not None}
    written = [_write(out / plot_paths[p.name], p.png) for p in plots if p.png is not None]
    for p in plots:  # a figure with nothing to draw now must not leave last run's PNG behind
        if p.png is None:
            (out / PLOTS_DIR / f"{p.name}.png").unlink(missing_ok=True)
    return ReportPaths(
        markdown=_write(out / "report.md", markdown.render(s, plots, plot_paths)),
        html=_write(out / "report.html", html.render(s, plots)),
        summary_csv=_write(out / "summary.csv", summary_csv(s)),
        summary_json=_write(
            out / "summary.json", json.dumps(s.to_dict(), indent=2, allow_nan=False) + "\n"
        ),
        plots=written,
    )
