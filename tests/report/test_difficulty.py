"""Which shifts bite: Newcombe's interval, the gap-closed score, the table and its app."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_report import _line, write_run

import embodied.configs
from embodied.metrics.stats import Rate, gap_closed, newcombe
from embodied.report import build_report, load_run
from embodied.report.adaptation import gap_scores
from embodied.report.difficulty import (
    MARGIN,
    WORK_SPLITS,
    DifficultyRow,
    bites,
    difficulty_rows,
    load_bites,
    markdown,
    merged,
    read_table,
    write_table,
)


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), Stat. Med. 17:873, method 10: 56/70 - 48/80 -> (0.0524, 0.3339)
    lo, hi = newcombe(Rate(56, 70), Rate(48, 80))
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    assert newcombe(Rate(0, 10), Rate(0, 10))[0] < 0 < newcombe(Rate(0, 10), Rate(0, 10))[1]


def test_a_split_bites_only_when_the_whole_interval_clears_the_margin():
    assert bites(Rate(28, 30), Rate(4, 30))  # cup_mass-3 on CupCarry, roughly
    assert not bites(Rate(30, 30), Rate(30, 30))  # actuator_gain-3: nominal shrugs it off
    assert not bites(Rate(6, 10), Rate(3, 10))  # 30 points, but 10 episodes cannot tell
    assert not bites(Rate(10, 10), Rate(0, 0))  # nothing measured


def test_gap_closed_is_zero_for_nominal_one_for_oracle_and_interval_brackets_it():
    nom, orc = [Rate(4, 30), Rate(6, 30)], [Rate(28, 30), Rate(26, 30)]
    assert gap_closed(nom, nom, orc).value == 0.0
    assert gap_closed(orc, nom, orc).value == 1.0
    agent = [Rate(20, 30), Rate(15, 30)]
    g = gap_closed(agent, nom, orc, n_boot=1000, seed=0)
    assert g.value == pytest.approx((35 / 60 - 10 / 60) / (54 / 60 - 10 / 60))
    assert g.lo < g.value < g.hi and g.cells == 2
    assert gap_closed([Rate(1, 30)], [Rate(4, 30)], [Rate(28, 30)]).value < 0  # worse than nominal
    assert math.isnan(gap_closed([Rate(5, 10)], [Rate(5, 10)], [Rate(5, 10)]).value)  # no gap
    assert gap_closed(agent, nom, orc, seed=3) == gap_closed(agent, nom, orc, seed=3)
    with pytest.raises(ValueError, match="one rate per cell"):
        gap_closed(agent, nom[:1], orc)


def _refs_lines(gaps: dict[str, tuple[int, int, int]]) -> list[dict]:
    """scripted/nominal/oracle on id and the given splits: split -> (scripted, nominal, oracle)."""
    lines = []
    for split, ks in {"id": (20, 20, 20), **gaps}.items():
        for agent, k in zip(("scripted", "nominal", "oracle"), ks, strict=True):
            lines.append(_line(agent, agent, split, 0, 20, k, 20 - k, None))
    return lines


def test_table_rows_markdown_and_json_round_trip(tmp_path: Path):
    splits = {"ood-cup_mass-3": (12, 4, 19), "ood-actuator_gain-3": (20, 20, 20)}
    run = load_run(write_run(tmp_path / "run", lines=_refs_lines(splits)))
    rows = difficulty_rows(run.cells)
    assert [(r.task, r.split) for r in rows] == [
        ("CupCarry", "id"),
        ("CupCarry", "ood-cup_mass-3"),
        ("CupCarry", "ood-actuator_gain-3"),
    ]
    assert [r.bites for r in rows] == [False, True, False]
    assert rows[1].refs["oracle"] == Rate(19, 20) and rows[1].gap_ci[0] > MARGIN
    path = tmp_path / "difficulty.json"
    runs = {"CupCarry": {"command": "embodied-difficulty env=cup_carry"}}
    write_table(rows, runs, path)
    assert load_bites(path) == {
        ("CupCarry", "id"): False,
        ("CupCarry", "ood-cup_mass-3"): True,
        ("CupCarry", "ood-actuator_gain-3"): False,
    }
    assert json.loads(path.read_text())["margin"] == MARGIN
    assert read_table(path) == (rows, runs)
    md = markdown(rows, runs)
    assert "| cup_mass |  |  | **0.20 / 0.95** |  |  |" in md
    assert "| actuator_gain |  |  | 1.00 / 1.00 |  |  |" in md
    assert "1 of 2 measured splits bite." in md and "embodied-difficulty env=cup_carry" in md
    assert len(WORK_SPLITS) == 50 and load_bites(tmp_path / "absent.json") == {}


def test_publishing_one_task_keeps_the_other_tasks_rows(tmp_path: Path):
    path = tmp_path / "difficulty.json"
    (carry,) = difficulty_rows(load_run(write_run(tmp_path / "a", lines=_refs_lines({}))).cells)
    write_table([carry], {"CupCarry": {"command": "carry"}}, path)
    push = DifficultyRow("CupPush", "id", {"nominal": Rate(3, 20), "oracle": Rate(20, 20)})
    rows, runs = merged(path, [push], {"CupPush": {"command": "push"}})
    assert [(r.task, r.bites) for r in rows] == [("CupCarry", False), ("CupPush", True)]
    assert runs == {"CupCarry": {"command": "carry"}, "CupPush": {"command": "push"}}
    write_table(rows, runs, path)
    # measuring CupPush again replaces its rows and its command, and only those
    again = DifficultyRow("CupPush", "id", carry.refs)
    rows, runs = merged(path, [again], {"CupPush": {"command": "push2"}})
    assert rows == [carry, again] and runs["CupPush"] == {"command": "push2"}
    md = markdown(rows, runs)
    assert md.index("## CupCarry") < md.index("    carry") < md.index("## CupPush")
    assert md.index("## CupPush") < md.index("    push2")


def test_gap_score_counts_only_biting_cells_and_the_table_overrides_the_run(tmp_path: Path):
    lines = _refs_lines({"ood-cup_mass-3": (12, 4, 19), "ood-grip_force-3": (12, 2, 18)})
    lines += [
        _line("state", "state", "ood-cup_mass-3", 0, 20, 10, 10, None),
        _line("state", "state", "ood-grip_force-3", 0, 20, 2, 18, None),
        _line("state", "state", "look-cup_colour", 0, 20, 20, 0, None),
    ]
    run = load_run(write_run(tmp_path / "run", lines=lines))
    agents = ["nominal", "oracle", "state"]
    both = gap_scores(run.cells, agents, {}, n_boot=200, seed=0)
    assert both["state"].value == pytest.approx((12 / 40 - 6 / 40) / (37 / 40 - 6 / 40))
    assert both["state"].cells == 2 and both["oracle"].value == 1.0
    # the measured table says grip_force-3 does not bite on CupCarry: only cup_mass-3 counts
    one = gap_scores(run.cells, agents, {("CupCarry", "ood-grip_force-3"): False}, 200, 0)
    assert one["state"].value == pytest.approx((10 - 4) / (19 - 4)) and one["state"].cells == 1
    assert "scripted" not in gap_scores(run.cells, agents, {}, 200, 0)  # not asked for


def test_headline_prints_the_gap_closed_score(tmp_path: Path):
    lines = _refs_lines({"ood-cup_mass-3": (12, 4, 19)})
    lines.append(_line("state", "state", "ood-cup_mass-3", 0, 20, 10, 10, None))
    lines.append(_line("state", "state", "id", 0, 20, 20, 0, None))
    md = build_report(write_run(tmp_path / "run", lines=lines), n_boot=200).markdown.read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| state |"))
    assert "| 0.40 [" in row  # (10 - 4) / (19 - 4)
    assert "| Gap closed | biting |" in md


def test_the_app_runs_the_references_and_writes_the_table(tmp_path: Path):
    run_dir = tmp_path / "diff"
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("embodied-difficulty")),
            "env=reach",
            "seeds=[0]",
            "episodes=1",
            "splits=[id,ood-actuator_gain-5]",
            "+env.kwargs.max_episode_steps=8",
            "executor.workers=1",
            "progress=false",
            f"run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "splits bite; table:" in out.stdout
    table = json.loads((run_dir / "difficulty.json").read_text())
    assert [(r["task"], r["split"]) for r in table["rows"]] == [
        ("Reach", "id"),
        ("Reach", "ood-actuator_gain-5"),
    ]
    assert all(
        r["scripted"]["n"] == r["nominal"]["n"] == r["oracle"]["n"] == 1 for r in table["rows"]
    )
    assert table["runs"]["Reach"]["command"].startswith("embodied-difficulty env=reach")
    assert "## Reach" in (run_dir / "difficulty.md").read_text()


def test_every_ood_split_of_the_quick_suite_bites_on_its_tasks():
    """The quick preset's OOD splits are chosen from the published table (issue: which shifts
    bite): a split that does not bite cannot tell an adapting model from one that adapts to
    nothing. Fails until the table measures the preset's tasks, and if a split stops biting."""
    preset = OmegaConf.load(Path(embodied.configs.__file__).parent / "preset" / "quick.yaml")
    table = load_bites()
    for task in preset.tasks:
        for split in (s for s in preset.splits if s.startswith("ood-")):
            assert (task, split) in table, f"{task} {split}: not in embodied/shifts/difficulty.json"
            assert table[task, split], f"{task} {split} does not bite (docs/difficulty.md)"
