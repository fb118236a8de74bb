"""embodied.evaluate: the grid from Python, the same numbers as embodied-eval for a cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embodied

ROOT = Path(__file__).resolve().parents[2]
GRID = dict(tasks=["CupCarry"], splits=["id", "ood-cup_mass-3"], seeds=[1], episodes=2)


def _same(line: dict) -> dict:
    return {k: v for k, v in line.items() if k != "wall_s"}


def test_numbers_equal_embodied_eval(tmp_path):
    lines = embodied.evaluate(
        "scripted",
        **GRID,
        preset="smoke",
        run_dir=str(tmp_path / "api"),
        overrides=["videos.cells=[]"],
        progress=False,
        frame=False,
    )
    run = tmp_path / "app"
    cmd = [
        str(Path(sys.executable).parent / "embodied-eval"),
        "agents=[scripted]",
        "preset=smoke",
        f"run_dir={run}",
        "tasks=[CupCarry]",
        "splits=[id,ood-cup_mass-3]",
        "seeds=[1]",
        "episodes=2",
        "videos.cells=[]",
        "progress=false",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    app = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    order = [x["cell_id"] for x in lines]  # the API's grid order; the file's is finishing order
    app.sort(key=lambda x: order.index(x["cell_id"]))
    assert [_same(x) for x in lines] == [_same(x) for x in app]
    assert {x["split"] for x in lines} == {"id", "ood-cup_mass-3"}


def test_a_dataframe_and_a_live_policy(tmp_path):
    pytest.importorskip("pandas")

    class Hold:
        """A policy passed as an object: holds still with the grip closed."""

        def reset(self, env):
            pass

        def act(self, obs):
            return np.array([0, 0, 0, 1], np.float32)

    df = embodied.evaluate(Hold(), **GRID, preset="smoke", run_dir=str(tmp_path), progress=False)
    assert list(df["split"]) == ["id", "ood-cup_mass-3"] and (df["agent"] == "Hold").all()
    assert (df["success_rate"] == 0).all()  # holding still never reaches the target
    assert (df["episodes"] == 2).all() and df["psnr"].isna().all()  # no model, no video
    assert df["line"][0]["embodied"]["per_episode"][0]["steps"] > 0


def test_bad_input_is_named(tmp_path):
    with pytest.raises(TypeError, match="video predictor"):
        embodied.evaluate(object(), run_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="valid: .*.cup_mass"):  # it lists the valid shifts
        embodied.evaluate("scripted", splits=["ood-cup_mas-3"], run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="CupCarry"):
        embodied.evaluate("scripted", tasks=["CupCary"], run_dir=str(tmp_path))
