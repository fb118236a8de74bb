"""report.html in headless Chromium at 1400 px, judged by the DOM's geometry (and a screenshot).

Skipped only where no Chromium is installed and the environment is not CI; in CI (``CI`` set,
as `.ci/run` and hosted runners do) a missing browser fails the test instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from test_report import write_run

from embodied.report import build_report, plots
from embodied.report.browser import SCREENSHOT, check, find_chromium, measure, problems

if find_chromium() is None and not os.environ.get("CI"):
    pytest.skip(
        "Chromium is not installed (Debian package `chromium`); CI installs it and runs this",
        allow_module_level=True,
    )


def _colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 6) -> np.ndarray:
    return np.all(np.abs(img[..., :3].astype(np.int16) - rgb) <= tol, axis=-1)


def _colours(img: np.ndarray) -> int:
    """How many distinct RGB colours (packed in one integer each: np.unique over rows of a
    7-megapixel screenshot takes 20 s, over integers under one)."""
    rgb = img[..., :3].astype(np.uint32)
    return len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))


def test_report_in_chromium_at_1400px_has_no_overlaps_or_wrapped_headline(tmp_path: Path):
    run_dir = write_run(tmp_path / "run")
    paths = build_report(run_dir, n_boot=200)
    html = paths.html.read_text()
    # Self-contained: plots inline as SVG, the only relative reference is the video.
    assert html.count("<svg") == 5 and 'src="data:image/png' not in html
    assert 'src="videos/pixel_CupCarry_id_0.gif"' in html
    assert not re.search(r"(src|href)=\"(https?:|file:)", html)

    g = check(paths.html, width=1400)
    assert g.width == 1400
    # The measurement saw what it judges: five figures, their legends and titles.
    assert g.figures == 5 and g.legends >= 6 and g.titles >= 15
    assert g.headline_columns == 8 and g.headline_cells == 8 * 6  # header + 5 agents
    assert g.problems == [], g.problems
    assert g.headline_right <= 1400

    # The screenshot is kept in the run dir and shows the page: table headers (#dde7f5),
    # the flagged-cell warning (#fff3cd), the first figure's ID/OOD bars (tab:blue, tab:red).
    assert g.screenshot == run_dir / SCREENSHOT
    img = iio.imread(g.screenshot)
    assert img.shape[1] == 1400 and img.shape[0] >= 1000
    assert _colours(img) > 50
    assert _colour_pixels(img, (0xDD, 0xE7, 0xF5), tol=2).sum() > 10_000
    assert _colour_pixels(img, (0xFF, 0xF3, 0xCD), tol=2).sum() > 10_000
    for rgb in ((214, 39, 40), (31, 119, 180)):
        assert _colour_pixels(img, rgb).sum() > 500, rgb


def test_the_checker_sees_a_legend_over_a_title(tmp_path: Path, monkeypatch):
    """The robustness plot's old legend placement (anchored above, tight_layout) is caught."""
    run_dir = write_run(tmp_path / "run")

    def old_legend(fig, *args, **kwargs):
        kwargs.update(loc="upper center", bbox_to_anchor=(0.5, 0.97))  # over the panel titles
        return Figure_legend(fig, *args, **kwargs)

    from matplotlib.figure import Figure

    Figure_legend = Figure.legend
    monkeypatch.setattr(Figure, "legend", old_legend)
    monkeypatch.setattr("embodied.report.all_plots", lambda s: [plots.robustness(s, "success")] * 2)
    paths = build_report(run_dir, n_boot=50)
    g = measure(paths.html, width=1400)
    assert any("robustness_success-legend" in a and "-title-" in b for a, b in g.overlaps)
    assert any(p.startswith("legend robustness_success-legend") for p in problems(g))


def test_the_checker_sees_a_wrapped_headline_cell(tmp_path: Path):
    run_dir = write_run(tmp_path / "run")
    paths = build_report(run_dir, n_boot=50)
    # a narrow window squeezes the headline until its cells wrap
    g = measure(paths.html, width=500)
    assert g.wrapped and any("headline cell wraps" in p for p in g.problems)
    assert g.scroll_width > 500 and any("scrolls sideways" in p for p in g.problems)
