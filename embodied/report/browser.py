"""report.html checked in a real browser: headless Chromium, judged by the DOM's geometry.

A report people read in a browser can fail in ways no string test sees: a legend drawn over a
panel title, a table so wide that every cell wraps onto two lines. ``check(html)`` loads a copy
of the page with a small script that measures, in Chromium's own layout at a given width,
every plot legend against every panel title and axis label (inline SVG ids, see
embodied.report.plots) and every cell of ``table#headline``, then screenshots the page.

``python -m embodied.report.browser RUN_DIR`` prints what it found and exits 1 on a problem.
Needs a Chromium binary (Debian package ``chromium``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
WIDTH = 1400
MAX_SCREENSHOT_HEIGHT = 16_000
SCREENSHOT = "report_screenshot.png"
RESULT_ID = "embodied-geometry"

# Runs at the end of <body>: layout is complete for inline content (SVG, tables).
PROBE = """
(() => {
  const box = e => {
    const r = e.getBoundingClientRect();
    return [r.left, r.top, r.right, r.bottom];
  };
  const overlap = (a, b) =>
    Math.min(a[2], b[2]) - Math.max(a[0], b[0]) > 0.5 &&
    Math.min(a[3], b[3]) - Math.max(a[1], b[1]) > 0.5;
  const page = document.documentElement;
  const out = {width: window.innerWidth, height: page.scrollHeight, scroll_width: page.scrollWidth,
               figures: 0, legends: 0, titles: 0, overlaps: [], wrapped: [], headline: null};
  for (const svg of document.querySelectorAll("figure svg")) {
    out.figures++;
    const legends = [...svg.querySelectorAll('[id*="-legend-"]')];
    const titles = [...svg.querySelectorAll('[id*="-title-"], [id*="-xlabel-"], [id*="-ylabel-"]')];
    out.legends += legends.length;
    out.titles += titles.length;
    for (const l of legends) for (const t of titles)
      if (overlap(box(l), box(t))) out.overlaps.push([l.id, t.id]);
  }
  const table = document.getElementById("headline");
  if (table) {
    const cells = [...table.querySelectorAll("th, td")];
    out.headline = {right: table.getBoundingClientRect().right,
                    columns: table.rows[0].cells.length, cells: cells.length};
    for (const cell of cells) {
      const range = document.createRange();
      range.selectNodeContents(cell);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0)
                                                       .map(r => Math.round(r.top)));
      if (lines.size > 1) out.wrapped.push(cell.textContent);
    }
  }
  const pre = document.createElement("pre");
  pre.id = "__RESULT_ID__";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
""".replace("__RESULT_ID__", RESULT_ID)


class BrowserError(RuntimeError):
    """No Chromium, or Chromium did not produce a measurement."""


@dataclass
class Geometry:
    """What Chromium measured on the page."""

    width: int
    height: int
    scroll_width: int  # wider than width: the page scrolls sideways
    figures: int
    legends: int
    titles: int
    overlaps: list[tuple[str, str]]
    wrapped: list[str]
    headline_columns: int | None
    headline_cells: int | None
    headline_right: float | None
    screenshot: Path | None = None
    problems: list[str] = field(default_factory=list)


def find_chromium() -> str | None:
    """The first Chromium-like binary on PATH, or None."""
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


def _chromium(binary: str, profile: Path, *args: str, timeout: float) -> str:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        "--mute-audio",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise BrowserError(f"{binary} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measure(
    html_path: Path, width: int = WIDTH, binary: str | None = None, timeout: float = 120
) -> Geometry:
    """Lay the page out at ``width`` px in headless Chromium and measure it (no screenshot)."""
    binary = binary or find_chromium()
    if binary is None:
        raise BrowserError(f"no Chromium found (tried {', '.join(CHROMIUM_NAMES)} on PATH)")
    html_path = Path(html_path).resolve()
    page = html_path.read_text()
    if "</body>" not in page:
        raise BrowserError(f"{html_path} has no </body>: not a report page")
    probe = page.replace("</body>", f"<script>{PROBE}</script></body>")
    # the copy sits beside the original so relative video paths resolve the same way
    fd, tmp = tempfile.mkstemp(prefix=".geometry-", suffix=".html", dir=html_path.parent)
    with tempfile.TemporaryDirectory() as profile:
        try:
            with os.fdopen(fd, "w") as f:
                f.write(probe)
            dom = _chromium(
                binary,
                Path(profile),
                f"--window-size={width},1000",
                "--dump-dom",
                Path(tmp).as_uri(),
                timeout=timeout,
            )
        finally:
            Path(tmp).unlink(missing_ok=True)
    m = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', dom, re.S)
    if m is None:
        raise BrowserError("Chromium ran but the page's measurement did not appear in its DOM")
    raw = json.loads(html.unescape(m.group(1)))
    head = raw["headline"] or {}
    g = Geometry(
        width=int(raw["width"]),
        height=int(raw["height"]),
        scroll_width=int(raw["scroll_width"]),
        figures=int(raw["figures"]),
        legends=int(raw["legends"]),
        titles=int(raw["titles"]),
        overlaps=[tuple(p) for p in raw["overlaps"]],
        wrapped=list(raw["wrapped"]),
        headline_columns=head.get("columns"),
        headline_cells=head.get("cells"),
        headline_right=head.get("right"),
    )
    g.problems = problems(g)
    return g


def problems(g: Geometry) -> list[str]:
    """What a reader would see as broken, in words."""
    out = [f"legend {a} overlaps {b}" for a, b in g.overlaps]
    out += [f"headline cell wraps: {text!r}" for text in g.wrapped]
    if g.headline_columns is None:
        out.append("no table#headline on the page")
    elif g.headline_right is not None and g.headline_right > g.width:
        out.append(f"headline table is {g.headline_right:.0f} px wide, wider than {g.width} px")
    if g.scroll_width > g.width:
        out.append(f"the page is {g.scroll_width} px wide: it scrolls sideways at {g.width} px")
    return out


def check(
    html_path: str | Path,
    width: int = WIDTH,
    screenshot: str | Path | None = None,
    binary: str | None = None,
    timeout: float = 120,
) -> Geometry:
    """Measure the page and screenshot it whole (default: report_screenshot.png beside it)."""
    html_path = Path(html_path).resolve()
    binary = binary or find_chromium()
    g = measure(html_path, width, binary, timeout)
    shot = Path(screenshot) if screenshot else html_path.parent / SCREENSHOT
    height = min(max(g.height, 200), MAX_SCREENSHOT_HEIGHT)
    with tempfile.TemporaryDirectory() as profile:
        _chromium(
            binary,  # type: ignore[arg-type]  # measure() raised if there is none
            Path(profile),
            f"--window-size={width},{height}",
            f"--screenshot={shot.resolve()}",
            html_path.as_uri(),
            timeout=timeout,
        )
    if not shot.is_file():
        raise BrowserError(f"Chromium did not write the screenshot {shot}")
    g.screenshot = shot
    return g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding report.html")
    parser.add_argument("--width", type=int, default=WIDTH, help="viewport width in px")
    args = parser.parse_args(argv)
    page = args.run_dir / "report.html"
    if not page.is_file():
        parser.error(f"{page} does not exist: run embodied-report run_dir={args.run_dir} first")
    try:
        g = check(page, args.width)
    except BrowserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{page} at {g.width} px: {g.figures} figures, {g.legends} legends vs {g.titles} "
        f"titles/labels, headline {g.headline_columns} columns; screenshot {g.screenshot}"
    )
    for p in g.problems:
        print(f"problem: {p}")
    return 1 if g.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
