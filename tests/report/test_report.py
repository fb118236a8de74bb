"""The report built from a hand-made results file with known values."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.stats import spearmanr

from embodied.report import ReportError, build_report, load_run, summarize

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
    # state predicts the cup's position too (4th video number: cup error in m)
    ("state", "state", "id", 0, 20, 20, 0, (28.0, 0.95, 0.002, 0.004)),
    ("state", "state", "ood-cup_mass-1", 0, 20, 15, 4, (27.8, 0.95, 0.002, 0.010)),
    ("state", "state", "ood-cup_mass-3", 0, 20, 6, 12, (27.5, 0.94, 0.003, 0.030)),
    # retrieval fails in distribution: shown everywhere, left out of the correlations
    ("retrieval", "retrieval", "id", 0, 20, 0, 12, (20.0, 0.80, 0.010)),
    ("retrieval", "retrieval", "id", 1, 20, 1, 14, (21.0, 0.82, 0.009)),
    ("retrieval", "retrieval", "ood-cup_mass-1", 0, 20, 0, 16, (19.5, 0.79, 0.011)),
    ("retrieval", "retrieval", "ood-cup_mass-3", 0, 20, 0, 18, (19.0, 0.78, 0.012)),
]
AGENTS = ["oracle", "pixel", "retrieval", "scripted", "state"]


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
        p, s, m, cup = (*video, None) if len(video) == 3 else video
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
            "cup_pos_error": None if cup is None else [cup] * 15,
            "cup_pos_error_mean": cup,
        }
    return line


def write_run(d: Path, cells: list[tuple] = CELLS, lines: list[dict] | None = None) -> Path:
    """A run directory with the given cells' results lines, a config and one video."""
    d.mkdir(parents=True, exist_ok=True)
    lines = lines if lines is not None else [_line(*c) for c in cells]
    text = "".join(json.dumps(ln) + "\n" for ln in lines)  # json writes inf as Infinity
    (d / "results.jsonl").write_text(text)
    (d / "config.yaml").write_text("preset:\n  name: quick\nseed: 0\n")
    (d / "videos").mkdir()
    frames = np.zeros((3, 32, 96, 3), np.uint8)
    frames[:, :, 32:64, 0] = 200
    iio.imwrite(d / "videos" / "pixel_CupCarry_id_0.gif", frames)
    return d


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


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
        "tell.png",
        "success_vs_psnr.png",
        "drop_rates.png",
        "robustness_success.png",
        "robustness_psnr.png",
    }
    md = paths.markdown.read_text()
    # The headline fits a screen: eight columns, ID -> OOD side by side.
    head = {r["Agent"]: r for r in _md_table(md, "Agent | Success ID")}
    assert list(head) == AGENTS and len(head["pixel"]) <= 9
    assert head["pixel"] == {
        "Agent": "pixel",
        "Success ID": "0.85 [0.71, 0.93]",
        "Success OOD": "0.30 [0.20, 0.43]",
        "Gap closed": "n/a",  # no nominal in this run: no gap to close
        "Drop OOD": "0.60 [0.47, 0.71]",
        "PSNR ID → OOD": "25.0 → 23.5",
        "Cup error ID → OOD (mm)": "n/a",
        "OOD tell": "10.8x (gap +59 pts)",
    }
    # state: cup error 4 mm ID, (10 + 30) / 2 = 20 mm OOD (equal clips per cell)
    assert head["state"]["Cup error ID → OOD (mm)"] == "4.0 → 20.0"
    assert head["scripted"]["PSNR ID → OOD"] == "n/a"


def test_report_details_flagged_cells_and_traceability(run_dir: Path):
    md = build_report(run_dir, n_boot=500).markdown.read_text()
    # The details table keeps every other number.
    rows = {r["Agent"]: r for r in _md_table(md, "Agent | Family | Cells ID/OOD")}
    assert list(rows) == AGENTS
    assert "Slip ID" not in rows["pixel"]  # no results line carries a slip rate

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


def test_intervals_in_summary_json(run_dir: Path):
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
        "interp": 0,  # no model here was trained on a range that covers an ood-* split
        "flagged": 1,
        "episodes": 145,
    }


def _split_means(agent: str, metric: int) -> tuple[float, float]:
    """An agent's mean over its splits of a video metric (CELLS index) and of success."""
    cells = [c for c in CELLS if c[0] == agent and c[4] >= 10 and c[2] != "train"]
    splits = sorted({c[2] for c in cells})
    video = [np.mean([min(c[7][metric], 100.0) for c in cells if c[2] == s]) for s in splits]
    success = [
        sum(c[5] for c in cells if c[2] == s) / sum(c[4] for c in cells if c[2] == s)
        for s in splits
    ]
    return float(np.mean(video)), float(np.mean(success))


def test_correlations_across_and_within_models_leave_out_agents_failing_id(run_dir: Path):
    build_report(run_dir, n_boot=500)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["fails_id"] == [
        {
            "agent": "retrieval",
            "task": "CupCarry",
            "id_success": {
                "k": 1,
                "n": 40,
                "rate": 0.025,
                "ci": pytest.approx([0.004427, 0.128817], abs=1e-6),
            },
        }
    ]
    corr = {(c["video"], c["embodied"], c["scope"], c["agent"]): c for c in s["correlations"]}
    # Across models: one point per agent with video (scripted has none), mean over its splits.
    for scope, agents in (
        ("across", ["oracle", "pixel", "state"]),
        ("across-all", ["oracle", "pixel", "retrieval", "state"]),
    ):
        for metric, name in ((0, "psnr"), (1, "ssim")):
            x, y = zip(*(_split_means(a, metric) for a in agents), strict=True)
            got = corr[name, "success", scope, None]
            assert got["n"] == len(agents)
            assert got["rho"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
            assert -1 <= got["ci"][0] <= got["ci"][1] <= 1
    # Within a model: one point per eligible cell of that agent.
    pixel = [c for c in CELLS if c[0] == "pixel" and c[4] >= 10 and c[2] != "train"]
    got = corr["psnr", "success", "within", "pixel"]
    assert got["n"] == len(pixel) == 6
    assert got["rho"] == pytest.approx(
        spearmanr([c[7][0] for c in pixel], [c[5] / c[4] for c in pixel]).statistic, abs=1e-12
    )
    state = [c for c in CELLS if c[0] == "state"]
    got = corr["cup_pos_error", "success", "within", "state"]
    assert got["n"] == 3 and got["rho"] == pytest.approx(-1.0)  # more cup error, less success
    assert corr["psnr", "success", "within", "retrieval"]["n"] == 0  # left out
    assert len(state) == 3
    # The report says what it left out and why.
    md = (run_dir / "report.md").read_text()
    assert "`retrieval` on CupCarry (ID success 0.03 [0.00, 0.13])" in md
    within = {r["Agent"]: r for r in _md_table(md, "Agent | PSNR vs success rate")}
    assert within["retrieval"]["PSNR vs success rate"] == "left out: fails ID"
    assert "scripted" not in within  # no video metrics: nothing to correlate
    assert within["pixel"]["PSNR vs success rate"].endswith("(n=6)")
    across = {r["Pair"]: r for r in _md_table(md, "Pair")}
    assert across["PSNR vs success rate"]["Agents that work ID"].endswith("(n=3)")
    assert across["PSNR vs success rate"]["All agents (not the answer)"].endswith("(n=4)")


def test_summary_csv_has_one_row_per_agent(run_dir: Path):
    paths = build_report(run_dir, n_boot=200)
    with paths.summary_csv.open() as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert list(rows) == AGENTS
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


def _survivor_lines() -> list[dict]:
    """nominal/state/adaptive/sysid/oracle on id and cup_mass-3 (+ grip_force-3 for sysid and
    oracle); sysid records its cup-mass estimates, sysid and oracle a slip rate."""
    spec = [
        ("nominal", "id", 20, 0),
        ("nominal", "ood-cup_mass-3", 5, 14),
        ("state", "id", 20, 0),
        ("state", "ood-cup_mass-3", 6, 13),
        ("adaptive", "id", 20, 0),
        ("adaptive", "ood-cup_mass-3", 9, 10),
        ("sysid", "id", 19, 1),
        ("sysid", "ood-cup_mass-3", 16, 3),
        ("sysid", "ood-grip_force-3", 15, 4),
        ("oracle", "id", 20, 0),
        ("oracle", "ood-cup_mass-3", 18, 1),
        ("oracle", "ood-grip_force-3", 19, 1),
    ]
    slips = {("sysid", "id"): 2, ("sysid", "ood-cup_mass-3"): 4, ("oracle", "id"): 1}
    lines = []
    for agent, split, k, drops in spec:
        line = _line(agent, agent, split, 0, 20, k, drops, (27.0, 0.95, 0.002))
        if (agent, split) in slips or agent in ("sysid", "oracle"):
            s = slips.get((agent, split), 0)
            line["embodied"]["slip_rate"] = s / 20
            for i, ep in enumerate(line["embodied"]["per_episode"]):
                ep["slipped"] = i < s
        lines.append(line)
    by = {(ln["agent"], ln["split"]): ln for ln in lines}
    # cup_mass-3: truth 0.6; 5 exact, 10 at +10%, 5 at -27% -> median error 10%, 15/20 within 20%
    _estimates(by["sysid", "ood-cup_mass-3"], [0.6] * 5 + [0.66] * 10 + [0.44] * 5, 0.6)
    # one episode ended before an estimate (null): 19 scored
    _estimates(by["sysid", "id"], [0.3] * 19 + [None], 0.3)
    return lines


def _estimates(line: dict, cup_mass: list, truth: float) -> None:
    """Per-episode sysid records, as evaluate writes them: ``estimates`` beside ``truth``."""
    for ep, est in zip(line["embodied"]["per_episode"], cup_mass, strict=True):
        ep["estimates"], ep["truth"] = {"cup_mass": est}, {"cup_mass": truth}


def test_who_survives_estimates_and_slips(tmp_path: Path):
    run_dir = write_run(tmp_path / "run", lines=_survivor_lines())
    paths = build_report(run_dir, n_boot=100)
    md = paths.markdown.read_text()
    survive = _md_table(md, "Shift | Severity")
    assert [list(r)[2:] for r in survive] == [
        ["nominal", "state", "adaptive", "sysid", "oracle"]
    ] * 4
    assert [(r["Shift"], r["Severity"]) for r in survive] == [
        ("ID", "-"),
        ("cup_mass", "3"),
        ("grip_force", "3"),
        ("Gap closed", "biting"),
    ]
    # cup_mass-3 bites (oracle 18/20 vs nominal 5/20); grip_force-3 has no nominal to pair
    # with, so it is not scored: (agent - 5) / (18 - 5) on cup_mass-3 alone
    gap = {a: survive[3][a].split(" [")[0] for a in survive[3] if a not in ("Shift", "Severity")}
    assert gap == {
        "nominal": "0.00",
        "state": "0.08",
        "adaptive": "0.31",
        "sysid": "0.85",
        "oracle": "1.00",
    }
    cup = survive[1]
    assert cup["nominal"] == "0.25 [0.11, 0.47]"  # Wilson(5, 20) = (0.1119, 0.4687)
    assert cup["sysid"] == "0.80 [0.58, 0.92]"  # Wilson(16, 20) = (0.5840, 0.9193)
    assert cup["adaptive"] == "0.45 [0.26, 0.66]"  # Wilson(9, 20) = (0.2582, 0.6579)
    assert survive[2]["nominal"] == "n/a"  # nominal did not run grip_force-3

    est = _md_table(md, "Agent | Split | Parameter")
    assert est == [
        {
            "Agent": "sysid",
            "Split": "id",
            "Parameter": "cup_mass",
            "Episodes": "19",
            "Mean estimate": "0.300",
            "Mean truth": "0.300",
            "Median rel. error": "0%",
            "Within 20%": "1.00 [0.83, 1.00]",  # Wilson(19, 19) = (0.8318, 1)
        },
        {
            "Agent": "sysid",
            "Split": "ood-cup_mass-3",
            "Parameter": "cup_mass",
            "Episodes": "20",
            "Mean estimate": "0.590",  # (3 + 6.6 + 2.2) / 20
            "Mean truth": "0.600",
            "Median rel. error": "10%",
            "Within 20%": "0.75 [0.53, 0.89]",  # Wilson(15, 20) = (0.5313, 0.8881)
        },
    ]

    details = {r["Agent"]: r for r in _md_table(md, "Agent | Family | Cells ID/OOD")}
    assert details["sysid"]["Slip ID"] == "0.10 [0.03, 0.30]"  # Wilson(2, 20) = (0.0279, 0.3010)
    assert details["sysid"]["Slip OOD"] == "0.10 [0.04, 0.23]"  # 4/40: Wilson (0.0396, 0.2304)
    assert details["nominal"]["Slip ID"] == "n/a"  # its lines carry no slip rate
    s = json.loads(paths.summary_json.read_text())
    assert s["survivors"]["agents"] == ["nominal", "state", "adaptive", "sysid", "oracle"]
    assert s["estimates"][1]["within_tolerance"]["k"] == 15


def test_no_survivor_agents_no_section(run_dir: Path):
    md = build_report(run_dir, n_boot=50).markdown.read_text()
    assert "## Who survives" in md  # oracle and state are in the hand-made run
    lines = [ln for ln in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())]
    keep = [ln for ln in lines if ln["agent"] in ("pixel", "scripted")]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in keep))
    md = build_report(run_dir, n_boot=50).markdown.read_text()
    assert "Who survives" not in md and "Identified physics" not in md


def test_state_probe_errors_take_the_state_column(tmp_path: Path):
    """Lines with video.probe (embodied.metrics.probes.ProbeErrors.to_dict per kind): the
    headline's state column reads the exact readout, else the MLP probe, not the linear one."""
    lines = [_line(*c) for c in CELLS if c[0] in ("state", "pixel")]
    for ln in lines:
        if ln["video"] is None:
            continue
        ood = ln["split"].startswith("ood-")
        ln["video"]["probe"] = {
            "linear": {"rel": [0.5, 0.5], "vel": [1.0, 1.0], "held": [0.5, 0.5]},
            "mlp": {"rel": [0.01, 0.05 if ood else 0.03], "vel": [0.1, 0.1], "held": [0.1, 0.1]},
        }
        if ln["agent"] == "state":
            ln["video"]["probe"]["exact"] = {"rel": [0.002, 0.004], "vel": [0, 0], "held": [0, 0]}
    md = build_report(write_run(tmp_path / "run", lines=lines), n_boot=50).markdown.read_text()
    head = {r["Agent"]: r for r in _md_table(md, "Agent | Success ID")}
    assert head["pixel"]["State error ID → OOD (mm)"] == "20.0 → 30.0"  # MLP: mean over t
    assert head["state"]["State error ID → OOD (mm)"] == "3.0 → 3.0"  # exact readout
    within = {r["Agent"]: r for r in _md_table(md, "Agent | PSNR vs success rate")}
    assert within["pixel"]["state error vs success rate"].endswith("(n=6)")
