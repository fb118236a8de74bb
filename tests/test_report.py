"""The report built from a hand-made results file with known values."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.stats import spearmanr

from embodied.report import ReportError, build_report, load_run, summarize

CHROMIUM = "/usr/bin/chromium"

# (agent, family, split, seed, episodes, successes, drops, video (psnr, ssim, mse) or None)
CELLS = [
    ("pixel", "pixel", "train", 0, 20, 20, 0, (30.0, 0.95, 0.002)),
    ("pixel", "pixel", "id", 0, 20, 18, 1, (26.0, 0.90, 0.004)),
    ("pixel", "pixel", "id", 1, 20, 16, 2, (24.0, 0.86, 0.006)),
    ("pixel", "pixel", "ood-cup_mass-1", 0, 20, 12, 6, (25.0, 0.88, 0.005)),
    ("pixel", "pixel", "ood-cup_mass-3", 0, 20, 4, 14, (23.5, 0.85, 0.007)),
    ("pixel", "pixel", "ood-cup_mass-5", 0, 5, 0, 5, (22.0, 0.84, 0.008)),  # too few: flagged
    ("pixel", "pixel", "ood-all-3", 0, 20, 2, 16, (22.0, 0.80, 0.010)),
    ("pixel", "pixel", "look-cup_colour", 0, 20, 17, 2, (18.0, 0.60, 0.020)),
    ("oracle", "oracle", "id", 0, 20, 19, 0, (math.inf, 1.0, 0.0)),  # exact: PSNR inf
    ("oracle", "oracle", "id", 1, 20, 20, 0, (100.0, 1.0, 0.0)),
    ("oracle", "oracle", "ood-cup_mass-1", 0, 20, 19, 1, (100.0, 1.0, 0.0)),
    ("oracle", "oracle", "ood-cup_mass-3", 0, 20, 18, 1, (100.0, 1.0, 0.0)),
    ("oracle", "oracle", "look-cup_colour", 0, 20, 19, 0, (30.0, 0.95, 0.001)),
    ("scripted", "scripted", "id", 0, 20, 20, 0, None),
    ("scripted", "scripted", "ood-cup_mass-1", 0, 20, 17, 2, None),
    ("scripted", "scripted", "ood-cup_mass-3", 0, 20, 9, 8, None),
    ("scripted", "scripted", "look-cup_colour", 0, 20, 20, 0, None),
]


def _line(agent, family, split, seed, n, k, drops, video) -> dict:
    kind, shift, severity = split.partition("-")[0], None, None
    if kind == "ood":
        shift, _, sev = split[4:].rpartition("-")
        severity = int(sev)
    elif kind == "look":
        shift = split[5:]
    look = kind == "look" or shift == "all"
    work = kind == "ood"
    episodes = [
        {
            "seed": 1000 + i,
            "success": i < k,
            "dropped": i >= n - drops,
            "return": -10.0 - i,
            "steps": 50,
            "time_to_success": 2.0 if i < k else None,
            "physics_error": False,
        }
        for i in range(n)
    ]
    line = {
        "cell_id": f"{agent}/CupCarry/{split}/{seed}",
        "agent": agent,
        "family": family,
        "task": "CupCarry",
        "split": split,
        "shift": shift,
        "severity": severity,
        "look": look,
        "work": work,
        "seed": seed,
        "version": "0.1.0",
        "wall_s": 1.0,
        "embodied": {
            "episodes": n,
            "success_rate": k / n,
            "success_ci": [0, 1],
            "drop_rate": drops / n,
            "drop_ci": [0, 1],
            "mean_return": float(np.mean([e["return"] for e in episodes])),
            "time_to_success": 2.0,
            "physics_errors": 0,
            "per_episode": episodes,
        },
        "video": None,
    }
    if video is not None:
        p, s, m = video
        line["video"] = {
            "horizon": 15,
            "clips": 8,
            "frames_kind": "decoder",
            "mse": [m] * 15,
            "psnr": [p] * 15,
            "ssim": [s] * 15,
            "mse_mean": m,
            "psnr_mean": p,
            "ssim_mean": s,
            "cup_pos_error": None,
            "cup_pos_error_mean": None,
        }
    return line


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    text = "".join(json.dumps(_line(*c)) + "\n" for c in CELLS)  # json writes inf as Infinity
    (d / "results.jsonl").write_text(text)
    (d / "config.yaml").write_text("preset:\n  name: quick\nseed: 0\n")
    (d / "videos").mkdir()
    frames = np.zeros((3, 32, 96, 3), np.uint8)
    frames[:, :, 32:64, 0] = 200
    iio.imwrite(d / "videos" / "pixel_CupCarry_id_0.gif", frames)
    return d


def _md_table(md: str, first_header: str) -> list[dict[str, str]]:
    """Rows of the markdown table whose header starts with `first_header`, as dicts."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    header = [h.strip() for h in lines[start].strip("|").split(" | ")]
    assert set(lines[start + 1].strip("|").split("|")) == {"---"}  # GitHub separator row
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        assert len(cells) == len(header), ln
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_report_files_and_headline_values(run_dir: Path):
    paths = build_report(run_dir, n_boot=500)
    for p in paths.all():
        assert p.is_file() and p.stat().st_size > 0, p
    assert {p.name for p in paths.plots} == {
        "success_vs_psnr.png",
        "drop_rates.png",
        "robustness_success.png",
        "robustness_psnr.png",
    }
    md = paths.markdown.read_text()
    rows = {r["Agent"]: r for r in _md_table(md, "Agent | Family | Cells ID/OOD")}
    assert list(rows) == ["oracle", "pixel", "scripted"]

    pixel = rows["pixel"]
    # ID: 2 cells, 34/40 successes, 3/40 drops. OOD: cup_mass-1, -3 and all-3 (cup_mass-5 has
    # 5 episodes: flagged, left out): 18/60 successes, 36/60 drops. Train is not reported.
    assert pixel["Cells ID/OOD"] == "2/3"
    assert pixel["Success ID"] == "0.85 [0.71, 0.93]"  # Wilson(34, 40) = (0.7093, 0.9294)
    assert pixel["Success OOD"] == "0.30 [0.20, 0.43]"  # Wilson(18, 60) = (0.1990, 0.4251)
    assert pixel["Drop ID"] == "0.07 [0.03, 0.20]"  # 3/40 = 0.075, Wilson (0.0258, 0.1986)
    assert pixel["Drop OOD"] == "0.60 [0.47, 0.71]"  # Wilson(36, 60) = (0.4737, 0.7143)
    assert pixel["PSNR ID"] == "25.0"  # (26 + 24) / 2
    assert pixel["PSNR OOD"] == "23.5"  # (25 + 23.5 + 22) / 3
    assert pixel["PSNR deg"] == "6%"  # 1.5 / 25
    assert pixel["SSIM ID"] == "0.880"
    assert pixel["SSIM OOD"] == "0.843"  # (0.88 + 0.85 + 0.80) / 3
    assert pixel["SSIM deg"] == "4%"
    assert pixel["MSE ID"] == "0.0050"
    assert pixel["MSE OOD"] == "0.0073"
    assert pixel["MSE deg"] == "47%"  # (0.00733 - 0.005) / 0.005
    assert pixel["Success deg"] == "65%"  # (0.85 - 0.30) / 0.85
    assert pixel["Drop deg"] == "57%"  # (0.6 - 0.075) / (1 - 0.075)
    assert pixel["OOD tell"] == "10.8x (gap +59 pts)"  # 0.6471 / 0.06; 64.7 - 6.0

    oracle = rows["oracle"]
    assert oracle["PSNR ID"] == "100.0"  # inf capped at 100 dB
    assert oracle["PSNR deg"] == "0%"
    assert oracle["MSE deg"] == "n/a"  # MSE 0 in distribution: no baseline
    assert oracle["Success ID"] == "0.97 [0.87, 1.00]"  # Wilson(39, 40) = (0.8712, 0.9956)
    # Success deg (0.975 - 0.925) / 0.975 = 5.1%; PSNR deg 0 counted as 1%: a bound.
    assert oracle["OOD tell"] == ">= 5.1x (gap +5 pts)"

    scripted = rows["scripted"]
    for col in ("PSNR ID", "PSNR OOD", "PSNR deg", "SSIM ID", "MSE OOD", "OOD tell"):
        assert scripted[col] == "n/a", col
    assert scripted["Success OOD"] == "0.65 [0.50, 0.78]"  # Wilson(26, 40) = (0.4951, 0.7787)
    assert scripted["Success deg"] == "35%"
    assert scripted["Drop deg"] == "25%"

    # The flagged cell is visible, with its raw counts, and nowhere averaged.
    assert "1 cell(s) have fewer than 10 episodes" in md
    flagged = _md_table(md, "Cell (not in any aggregate)")
    assert flagged == [
        {
            "Cell (not in any aggregate)": "pixel/CupCarry/ood-cup_mass-5/0",
            "Episodes": "5",
            "Successes": "0/5",
            "Drops": "5/5",
        }
    ]
    # Look vs work: pixel's look-only quadrant is the look-cup_colour cell, both = ood-all-3.
    lw = [r for r in _md_table(md, "Agent | Look shift") if r["Agent"] == "pixel"]
    assert lw[1]["No work shift"].startswith("success 0.85 [")  # 17/20
    assert lw[1]["Work shift"].startswith("success 0.10 [")  # ood-all-3: 2/20
    assert "PSNR 18.0" in lw[1]["No work shift"]
    # Traceability.
    assert str(run_dir.resolve()) in md and "preset:" in md and "0.1.0" in md
    assert "[videos/pixel_CupCarry_id_0.gif](videos/pixel_CupCarry_id_0.gif)" in md


def test_intervals_and_correlations_in_summary_json(run_dir: Path):
    build_report(run_dir, n_boot=500)
    s = json.loads((run_dir / "summary.json").read_text())
    head = {r["agent"]: r for r in s["headline"]}
    pix = head["pixel"]
    assert pix["id"]["success"]["k"] == 34 and pix["id"]["success"]["n"] == 40
    assert pix["id"]["success"]["ci"] == pytest.approx([0.709274, 0.929389], abs=1e-6)
    assert pix["ood"]["success"]["ci"] == pytest.approx([0.198980, 0.425089], abs=1e-6)
    assert pix["ood"]["drop"]["ci"] == pytest.approx([0.473658, 0.714307], abs=1e-6)
    assert head["oracle"]["ood"]["drop"]["ci"] == pytest.approx([0.013820, 0.165042], abs=1e-6)
    assert head["scripted"]["id"]["psnr"] is None
    assert s["flagged_cells"] == ["pixel/CupCarry/ood-cup_mass-5/0"]
    assert s["counts"]["pixel"] == {
        "id": 2,
        "ood": 4,
        "look": 1,
        "train": 1,
        "flagged": 1,
        "episodes": 145,
    }

    # Spearman across eligible cells with video, against scipy, per scope.
    video_cells = [c for c in CELLS if c[7] is not None and c[4] >= 10 and c[2] != "train"]
    scopes = {
        "overall": video_cells,
        "ID": [c for c in video_cells if c[2] == "id"],
        "OOD": [c for c in video_cells if c[2].startswith("ood-")],
    }
    corr = {(c["video"], c["embodied"], c["scope"]): c for c in s["correlations"]}
    for scope, cells in scopes.items():
        psnr = [min(c[7][0], 100.0) for c in cells]
        ssim = [c[7][1] for c in cells]
        success = [c[5] / c[4] for c in cells]
        drop = [c[6] / c[4] for c in cells]
        for name, x, y in (
            ("psnr", psnr, success),
            ("ssim", ssim, success),
            ("psnr", psnr, drop),
        ):
            emb = "success" if y is success else "drop"
            got = corr[name, emb, scope]
            assert got["n"] == len(cells)
            assert got["rho"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
            lo, hi = got["ci"]
            assert -1 <= lo <= hi <= 1
    assert corr["psnr", "success", "overall"]["n"] == 11
    # The markdown shows the same rho.
    md = (run_dir / "report.md").read_text()
    row = next(r for r in _md_table(md, "Video metric") if r["Video metric"] == "PSNR")
    rho = spearmanr(
        [min(c[7][0], 100.0) for c in video_cells], [c[5] / c[4] for c in video_cells]
    ).statistic
    assert row["Overall"].startswith(f"{rho:.2f} [") and row["Overall"].endswith("(n=11)")


def test_summary_csv_has_one_row_per_agent(run_dir: Path):
    paths = build_report(run_dir, n_boot=200)
    with paths.summary_csv.open() as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["oracle", "pixel", "scripted"]
    assert float(rows["pixel"]["success_id"]) == pytest.approx(0.85)
    assert float(rows["pixel"]["success_ood_lo"]) == pytest.approx(0.198980, abs=1e-6)
    assert float(rows["pixel"]["psnr_deg"]) == pytest.approx(0.06)
    assert rows["scripted"]["psnr_id"] == ""  # n/a is an empty field
    assert rows["oracle"]["ood_tell_psnr_floored"] == "True"


def test_min_episodes_is_configurable_and_changes_pooling(run_dir: Path):
    s = summarize(load_run(run_dir), min_episodes=5, n_boot=100)
    pixel = next(r for r in s.headline if r.agent == "pixel")
    assert not s.flagged
    assert (pixel.ood.success.k, pixel.ood.success.n) == (18, 65)
    assert [sev for sev, _ in s.curves["cup_mass"]["pixel"]] == [0, 1, 3, 5]
    with pytest.raises(ValueError, match="min_episodes"):
        summarize(load_run(run_dir), min_episodes=0)


def test_debris_in_results_is_reported_not_fatal(run_dir: Path):
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join([*lines, lines[1], '{"cell_id": "trunc']) + "\n")
    paths = build_report(run_dir, n_boot=100)
    md = paths.markdown.read_text()
    assert "pixel/CupCarry/id/0 appears more than once" in md
    assert f"line {len(lines) + 2} skipped (malformed" in md
    assert json.loads(paths.summary_json.read_text())["counts"]["pixel"]["id"] == 2


def test_bad_run_dirs_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(ReportError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(ReportError, match="results.jsonl is missing"):
        load_run(tmp_path)
    (tmp_path / "results.jsonl").write_text("\n")
    with pytest.raises(ReportError, match="no finished cells"):
        load_run(tmp_path)
    bad = {**_line("pixel", "pixel", "id", 0, 20, 1, 1, None), "split": "ood-mass"}
    (tmp_path / "results.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(ReportError, match="no finished cells.*valid splits are 'train', 'id'"):
        load_run(tmp_path)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embodied.apps.report", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_errors_and_success(run_dir: Path, tmp_path: Path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    missing = _cli("run_dir=/nonexistent", cwd=cwd)
    assert missing.returncode != 0
    assert "run_dir /nonexistent does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _cli(f"run_dir={empty}", cwd=cwd)
    assert none.returncode != 0 and "no results in" in none.stderr
    ok = _cli(f"run_dir={run_dir}", "n_boot=100", cwd=cwd)
    assert ok.returncode == 0, ok.stderr
    assert str(run_dir / "report.html") in ok.stdout
    assert (run_dir / "report.md").is_file()
    assert list(cwd.iterdir()) == []  # hydra leaves nothing in the working directory


def _colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 6) -> np.ndarray:
    return np.all(np.abs(img[..., :3].astype(int) - rgb) <= tol, axis=-1)


@pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (Debian package `chromium`): cannot screenshot the HTML",
)
def test_html_renders_in_headless_chromium(run_dir: Path, tmp_path: Path):
    paths = build_report(run_dir, n_boot=200)
    html = paths.html.read_text()
    # Self-contained: plots inline, the only relative reference is the video.
    assert html.count('src="data:image/png;base64,') == 4
    assert 'src="videos/pixel_CupCarry_id_0.gif"' in html
    assert "http://" not in html and "https://" not in html and "file:" not in html
    shot = tmp_path / "shot.png"
    chromium = shutil.which("chromium") or CHROMIUM
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            paths.html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = iio.imread(shot)
    assert img.shape[:2] == (2000, 1200)
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50  # not blank
    # The table header background (#dde7f5) fills several header rows of the headline table
    # and the correlation table; the warning box (#fff3cd) shows the flagged cell.
    header = _colour_pixels(img, (0xDD, 0xE7, 0xF5), tol=2)
    assert header.sum() > 20_000
    assert _colour_pixels(img, (0xFF, 0xF3, 0xCD), tol=2).sum() > 10_000
    # The plots decoded and drew: the drop-rate bars are solid tab:red (OOD) and tab:blue (ID)
    # blocks, and the scatter's tab:orange points (pixel) are there, all below the tables.
    rows_with_header = np.flatnonzero(header.any(axis=1))
    below_tables = img[rows_with_header.max() :]
    for rgb in ((214, 39, 40), (31, 119, 180), (255, 127, 14)):
        assert _colour_pixels(below_tables, rgb).sum() > 200, rgb
