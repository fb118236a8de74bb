"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each figure comes back as PNG bytes for the markdown to link and as SVG text for the HTML to
inline (or None with the reason there is nothing to draw). Inline SVG keeps the page
self-contained and lets a browser test measure the figures: every legend, panel title and axis
label carries an id (``<plot>-legend-<i>``, ``<plot>-title-<i>``, ...) in the SVG's DOM.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure

from embodied.metrics.stats import Rate
from embodied.report.summary import Summary

CLASS_STYLE = {  # split class -> (label, marker, bar colour)
    "id": ("ID", "o", "tab:blue"),
    "ood": ("OOD", "^", "tab:red"),
    "look": ("look", "s", "tab:gray"),
    "interp": ("interpolation", "D", "tab:green"),
}


@dataclass
class Plot:
    name: str  # file stem
    title: str
    caption: str
    png: bytes | None  # None: nothing to draw (caption says why)
    svg: str | None = None  # the same figure for the HTML, with ids on legends and titles


def _label_ids(fig: Figure, name: str) -> list:
    """Give legends, panel titles and axis labels DOM ids; returns the legends."""
    legends = [*fig.legends]
    for i, ax in enumerate(fig.axes):
        ax.title.set_gid(f"{name}-title-{i}")
        ax.xaxis.label.set_gid(f"{name}-xlabel-{i}")
        ax.yaxis.label.set_gid(f"{name}-ylabel-{i}")
        legends += [a for a in (*ax.artists, ax.get_legend()) if a is not None]
    for j, legend in enumerate(legends):
        legend.set_gid(f"{name}-legend-{j}")
    return legends


def _render(fig: Figure, name: str) -> tuple[bytes, str]:
    """PNG bytes and SVG text of a figure (deterministic: fixed hash salt, no date)."""
    legends = _label_ids(fig, name)
    # Lay out once, freeze it, and crop both files to one tight box (legends placed outside
    # the axes count too): drawing is most of a report's time.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    box = fig.get_tightbbox(bbox_extra_artists=legends).padded(0.1)
    png, svg = io.BytesIO(), io.StringIO()
    fig.savefig(png, format="png", dpi=100, bbox_inches=box)
    with rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        fig.savefig(svg, format="svg", metadata={"Date": None}, bbox_inches=box)
    text = svg.getvalue()
    return png.getvalue(), text[text.index("<svg") :]  # inline: no XML prolog or doctype


def _plot(name: str, title: str, caption: str, fig: Figure) -> Plot:
    return Plot(name, title, caption, *_render(fig, name))


def _colours(s: Summary) -> dict[str, tuple[float, ...]]:
    cmap = colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(s.agents)}


def _yerr(rates: list[Rate]) -> np.ndarray:
    lo = [r.value - r.ci[0] if r.n else 0.0 for r in rates]
    hi = [r.ci[1] - r.value if r.n else 0.0 for r in rates]
    return np.array([lo, hi])


def _rate_bars(ax, x: np.ndarray, rates: list[Rate], width: float, colour: str, label: str):
    """Bars of rates with their Wilson intervals as whiskers; a rate of no episodes draws 0."""
    ax.bar(
        x,
        [r.value if r.n else 0.0 for r in rates],
        width,
        color=colour,
        label=label,
        yerr=_yerr(rates),
        capsize=3,
        ecolor="black",
    )


def tell_at_a_glance(s: Summary) -> Plot:
    """Per agent, success ID/OOD beside PSNR ID/OOD: the OOD tell without reading a number."""
    title = "The tell at a glance: success and PSNR, ID vs OOD"
    caption = (
        "Left: pooled success rate per agent, ID (blue) and OOD (red), whiskers 95% Wilson "
        "intervals. Right: the same agents' PSNR of open-loop predicted frames, ID and OOD "
        "(no bar: the agent predicts no frames). A model that only renders keeps its PSNR OOD "
        "and loses its success."
    )
    rows = [r for r in s.headline if r.id.cells or r.ood.cells]
    if not rows:
        return Plot("tell", title, "No ID or OOD cells.", None)
    fig = Figure(figsize=(max(8.0, 1.1 * len(rows) + 4), 3.6), layout="constrained")
    ax_s, ax_p = fig.subplots(1, 2)
    x = np.arange(len(rows))
    width = 0.38
    for i, cls in enumerate(("id", "ood")):
        label, _, colour = CLASS_STYLE[cls]
        rates = [getattr(r, cls).success for r in rows]
        _rate_bars(ax_s, x + (i - 0.5) * width, rates, width, colour, label)
        psnr = [getattr(r, cls).psnr if getattr(r, cls).video_cells else 0.0 for r in rows]
        ax_p.bar(x + (i - 0.5) * width, psnr, width, color=colour, label=label)
    names = [r.agent for r in rows]
    ax_s.set_xticks(x, names, rotation=20, ha="right")
    ax_p.set_xticks(x, names, rotation=20, ha="right")
    ax_s.set_ylim(0, 1.05)
    ax_s.set_ylabel("success rate")
    ax_p.set_ylabel("PSNR (dB)")
    ax_s.set_title("success", fontsize=10)
    ax_p.set_title("PSNR of predicted frames", fontsize=10)
    for ax in (ax_s, ax_p):
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax_s.get_legend_handles_labels(), loc="outside upper center", ncols=2, fontsize=8)
    return _plot("tell", title, caption, fig)


def success_vs_psnr(s: Summary) -> Plot:
    """One point per cell: PSNR against success rate, colour = agent, marker = split class."""
    cells = [c for c in s.eligible if c.video is not None]
    caption = (
        "Each point is one cell (agent x task x split x seed) with video metrics; "
        "circles ID, triangles OOD, squares look shifts. Hollow points: the agent fails in "
        "distribution on that task (shown, but left out of the correlations). Agents without "
        "video metrics are absent."
    )
    title = "Success rate vs PSNR"
    if not cells:
        return Plot("success_vs_psnr", title, "No cell has video metrics.", None)
    colours = _colours(s)
    failing = {(a, t) for a, t, _ in s.fails_id()}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for c in cells:
        _, marker, _ = CLASS_STYLE[c.cls]
        fails = (c.agent, c.task) in failing
        ax.scatter(
            c.video.psnr,
            c.success_rate,
            facecolors="none" if fails else colours[c.agent],
            marker=marker,
            s=45,
            edgecolors=colours[c.agent] if fails else "black",
            linewidths=1.2 if fails else 0.4,
        )
    agent_handles = [
        ax.scatter([], [], color=colours[a], marker="o", label=a)
        for a in s.agents
        if any(c.agent == a for c in cells)
    ]
    class_handles = [
        ax.scatter([], [], color="white", edgecolors="black", marker=m, label=lbl)
        for k, (lbl, m, _) in CLASS_STYLE.items()
        if any(c.cls == k for c in cells)
    ]
    if any((c.agent, c.task) in failing for c in cells):
        class_handles.append(
            ax.scatter([], [], facecolors="none", edgecolors="black", label="fails ID")
        )
    first = ax.legend(
        handles=agent_handles,
        title="agent",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    ax.add_artist(first)
    ax.legend(
        handles=class_handles,
        title="split",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        fontsize=8,
    )
    ax.set_xlabel("PSNR (dB)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    return _plot("success_vs_psnr", title, caption, fig)


def drop_rates(s: Summary) -> Plot:
    """Bars of pooled drop rates per agent and split class, with Wilson intervals."""
    title = "Drop rate by agent"
    caption = (
        "Pooled drop rate per agent for ID, OOD and look cells; whiskers are 95% Wilson intervals."
    )
    fig = Figure(figsize=(max(6.0, 1.3 * len(s.agents) + 2), 3.8))
    ax = fig.add_subplot()
    x = np.arange(len(s.agents))
    shown = [k for k in CLASS_STYLE if any(s.by_class[a][k].drop.n for a in s.agents)]
    width = 0.8 / max(3, len(shown))
    for i, k in enumerate(shown):
        lbl, _, colour = CLASS_STYLE[k]
        rates = [s.by_class[a][k].drop for a in s.agents]
        _rate_bars(ax, x + (i - 1) * width, rates, width, colour, lbl)
    if not shown:
        return Plot("drop_rates", title, "No cell has episodes to count drops in.", None)
    ax.set_xticks(x, s.agents, rotation=20, ha="right")
    ax.set_ylabel("drop rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _plot("drop_rates", title, caption, fig)


def robustness(s: Summary, metric: str) -> Plot:
    """Small multiples, one per work shift: success (or PSNR) over severity, one line per agent."""
    label = {"success": "success rate", "psnr": "PSNR (dB)"}[metric]
    name = f"robustness_{metric}"
    title = f"Robustness: {label} over severity"
    caption = (
        f"{'Success rate' if metric == 'success' else 'PSNR'} per work shift and severity "
        "(0 = the agent's pooled ID cells)"
        + (
            "; whiskers are 95% Wilson intervals."
            if metric == "success"
            else "; agents without video metrics are absent."
        )
    )
    series = {
        shift: {
            a: [(sev, g) for sev, g in pts if metric == "success" or g.video_cells]
            for a, pts in per.items()
        }
        for shift, per in s.curves.items()
    }
    series = {k: {a: p for a, p in v.items() if p} for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        why = "No OOD severity cells" + (" with video metrics." if metric == "psnr" else ".")
        return Plot(name, title, why, None)
    colours = _colours(s)
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    # constrained layout with the legend "outside": it gets its own band above the panels'
    # titles instead of being drawn over them (as it was with tight_layout and a bbox anchor)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (shift, per) in zip(axes.flat, series.items(), strict=False):
        for a, pts in per.items():
            sev = [p[0] for p in pts]
            if metric == "success":
                rates = [p[1].success for p in pts]
                ax.errorbar(
                    sev,
                    [r.value for r in rates],
                    yerr=_yerr(rates),
                    color=colours[a],
                    marker="o",
                    capsize=3,
                    label=a,
                )
            else:
                ax.plot(sev, [p[1].psnr for p in pts], color=colours[a], marker="o", label=a)
        ax.set_title(shift, fontsize=10)
        ax.set_xticks(range(6))
        ax.set_xlabel("severity")
        if metric == "success":
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(series) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(label)
    handles, labels = {}, {}
    for ax in axes.flat[: len(series)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
            labels[lab] = lab
    fig.legend(
        list(handles.values()),
        list(labels),
        loc="outside upper center",
        ncols=min(6, len(handles)),
        fontsize=8,
    )
    return _plot(name, title, caption, fig)


def all_plots(s: Summary) -> list[Plot]:
    """The report's figures in reading order."""
    return [
        tell_at_a_glance(s),
        success_vs_psnr(s),
        drop_rates(s),
        robustness(s, "success"),
        robustness(s, "psnr"),
    ]
