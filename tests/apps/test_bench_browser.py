"""``embodied-bench`` runs the Chromium check after the report: its findings are printed, and
neither a missing Chromium nor a failed check stops the bench (the report is written)."""

from __future__ import annotations

from pathlib import Path

from embodied.apps import bench
from embodied.report import browser


def geometry(problems: list[str]) -> browser.Geometry:
    g = browser.Geometry(1400, 900, 1400, 3, 3, 9, [], [], 7, 56, 900.0, Path("shot.png"))
    g.problems = problems
    return g


def not_called(path):
    raise AssertionError("no Chromium: nothing to run")


def test_no_chromium_skips_the_check(monkeypatch, capsys):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.setattr(browser, "check", not_called)
    bench.browser_check(Path("report.html"))
    assert "skipped, no Chromium" in capsys.readouterr().out


def test_findings_and_failures_are_printed_not_raised(monkeypatch, capsys):
    monkeypatch.setattr(browser, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(browser, "check", lambda path: geometry(["legend a overlaps b"]))
    bench.browser_check(Path("report.html"))
    assert "legend a overlaps b; screenshot shot.png" in capsys.readouterr().out

    def broken(path):
        raise browser.BrowserError("Chromium exited 1")

    monkeypatch.setattr(browser, "check", broken)
    bench.browser_check(Path("report.html"))
    assert "failed to run: Chromium exited 1" in capsys.readouterr().out
