"""embodied-report --leaderboard lists every agent of a run; embodied-check-submission accepts
a run made by the protocol and refuses one with a changed seed, episode count, task version
(package version) or shift, naming the difference."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import embodied
from embodied.report.leaderboard import FIELDS, check_submission, read_lines

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# one worker runs the module: its run (a module fixture) is made once, not once per worker
pytestmark = pytest.mark.xdist_group("leaderboard")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The smoke preset's grid for scripted (as two training seeds) and a video agent that
    copies the last frame."""
    run = tmp_path_factory.mktemp("board")
    cmd = [
        str(BIN / "embodied-eval"),
        "agents=[scripted,scripted@1,video]",
        "+agent_overrides.video.predictor._target_=embodied.agents.video.CopyLastFrame",
        "preset=smoke",
        f"run_dir={run}",
        "videos.cells=[]",
        "progress=false",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.slow
def test_the_leaderboard_lists_every_agent(run):
    done = subprocess.run(
        [str(BIN / "embodied-report"), "--leaderboard", f"run_dir={run}", "min_episodes=1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leaderboard.csv" in done.stdout
    rows = json.loads((run / "leaderboard.json").read_text())
    assert [r["agent"] for r in rows] == ["scripted", "scripted@1", "video"]
    with open(run / "leaderboard.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(FIELDS) and len(table) == 3
    for row in rows:
        assert len(row["config_digest"]) == 12
        assert 0 <= row["success_id"] <= 1 and row["success_id_ci"][0] <= row["success_id"]
        assert row["suite_version"] == embodied.__version__
        assert row["split_suite"] == "id look-cup_colour ood-cup_mass-3"
        assert row["episodes"] == 4  # 2 id + 2 ood, the look cell is neither
    video = rows[2]
    assert video["psnr_id"] is not None and video["state_error_ood_mm"] is not None
    assert rows[0]["psnr_id"] is None  # scripted predicts nothing
    assert len({r["config_digest"] for r in rows}) == 3
    assert rows[0]["success_id_training_seeds"].endswith("over scripted, scripted@1")
    assert rows[0]["success_id_training_seeds"] == rows[1]["success_id_training_seeds"]
    assert video["success_id_training_seeds"] == ""  # one training seed


@pytest.mark.slow
def test_a_submission_by_the_protocol_passes_and_a_changed_one_is_refused(run, tmp_path):
    app = str(BIN / "embodied-check-submission")
    ok = subprocess.run(
        [app, str(run / "results.jsonl"), "--preset", "smoke"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "OK: 9 cells" in ok.stdout, ok.stdout + ok.stderr
    lines = read_lines(run / "results.jsonl")
    expected = {
        "tasks": ["CupCarry"],
        "splits": ["id", "ood-cup_mass-3", "look-cup_colour"],
        "seeds": [0],
        "episodes": 2,
        "version": embodied.__version__,
        "env_ids": {"CupCarry": "embodied/CupCarry-v0"},
    }
    assert check_submission(lines, expected) == []

    first = next(i for i, x in enumerate(lines) if x["cell_id"] == "scripted/CupCarry/id/0")

    def changed(edit):
        bad = copy.deepcopy(lines)
        edit(bad[first])
        return "\n".join(check_submission(bad, expected))

    def seed(line):
        line["embodied"]["per_episode"][1]["seed"] += 1

    def episodes(line):
        line["embodied"]["episodes"] = 1
        del line["embodied"]["per_episode"][1]

    def version(line):
        line["version"] = "0.1.0"

    def shift(line):
        line["split"], line["severity"], line["shift"] = "ood-cup_mass-4", 4, "cup_mass"

    def cell_seed(line):
        line["seed"] = 7

    def task_version(line):
        line["env_id"] = "embodied/CupCarry-v9"

    assert "episode 1 ran seed" in changed(seed)
    assert "1 episodes (1 rows), the protocol has 2" in changed(episodes)
    assert "embodied-ood '0.1.0'" in changed(version)
    assert "not in the protocol: CupCarry/ood-cup_mass-4/0" in changed(shift)
    assert "missing" in changed(cell_seed) and "CupCarry/id/7" in changed(cell_seed)
    assert "ran task embodied/CupCarry-v9, the protocol's is embodied/CupCarry-v0" in changed(
        task_version
    )
    tampered = copy.deepcopy(lines)
    tampered[first]["severity"] = 5  # the name says one shift, the fields another
    assert "split fields" in "\n".join(check_submission(tampered, expected))

    path = tmp_path / "results.jsonl"
    bad = copy.deepcopy(lines)
    version(bad[first])
    path.write_text("".join(json.dumps(x) + "\n" for x in bad))
    refused = subprocess.run([app, str(path), "--preset", "smoke"], capture_output=True, text=True)
    assert refused.returncode == 1 and "REFUSED" in refused.stdout and "0.1.0" in refused.stdout
    other = subprocess.run([app, str(run / "results.jsonl")], capture_output=True, text=True)
    assert other.returncode == 1 and "missing" in other.stdout  # the quick grid is larger
