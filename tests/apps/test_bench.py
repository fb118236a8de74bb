"""The main job end to end, on the smoke preset (a few minutes on 2 CPU cores).

Runs ``embodied-bench`` as a user would (a subprocess), twice with the same seed into two run
directories (the second with one agent of each kind: it collects and trains afresh): the files
must exist and hold sane values, the second run's lines must equal the first's (wall-clock
fields aside), and a rerun must reuse everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AGENTS = "[scripted,state,retrieval,nominal,oracle]"
# the determinism rerun: one agent of each kind (scripted, learned, simulator) to save a minute;
# nominal, whose OOD episodes end when it drops the cup, costs half the oracle
RERUN_AGENTS = "[scripted,state,nominal]"


def bench(run_dir: Path, *extra: str, agents: str = AGENTS, workers: int = 2) -> str:
    cmd = [
        sys.executable,
        "-m",
        "embodied.apps.bench",
        "preset=smoke",
        f"run_dir={run_dir}",
        f"agents={agents}",
        "progress=false",
        f"executor.workers={workers}",
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def results(run_dir: Path) -> dict[str, dict]:
    lines = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("wall_s", None)
    return {line["cell_id"]: line for line in lines}


@pytest.mark.smoke
def test_smoke_bench_end_to_end_and_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    out = bench(first)
    assert "Headline" in out and "report.html" in out
    # the clips stage before the grid: 3 splits of the world models' seed 0, their probe clips
    assert out.index("== clips") < out.index("clips: 4 files collected") < out.index("== evaluate")

    for name in ("results.jsonl", "report.md", "report.html", "summary.csv", "summary.json"):
        assert (first / name).is_file(), name
    assert (first / "data" / "CupCarry" / "train" / "manifest.json").is_file()
    for agent in ("state", "retrieval"):
        assert (first / "models" / "CupCarry" / agent / "model.pt").is_file()
    lines = results(first)
    assert len(lines) == 5 * 3  # agents x smoke splits x one seed
    for line in lines.values():
        e = line["embodied"]
        assert e["episodes"] == 2
        assert 0.0 <= e["success_rate"] <= 1.0 and 0.0 <= e["drop_rate"] <= 1.0
        lo, hi = e["success_ci"]
        assert lo <= e["success_rate"] <= hi
    # the scripted controller and the oracle carry the cup in distribution
    assert lines["scripted/CupCarry/id/0"]["embodied"]["success_rate"] == 1.0
    assert lines["oracle/CupCarry/id/0"]["embodied"]["success_rate"] == 1.0
    video = lines["oracle/CupCarry/id/0"]["video"]
    assert video is not None and video["psnr_mean"] > 20.0 and 0.5 < video["ssim_mean"] <= 1.0
    assert lines["scripted/CupCarry/id/0"]["video"] is None
    assert list((first / "videos").glob("*")), "rollout videos were written"

    assert "browser check" in out
    bench(second, "report.browser=false", agents=RERUN_AGENTS)  # the check ran once: enough
    again = results(second)
    assert len(again) == 3 * 3
    assert again == {k: lines[k] for k in again}, "same seed must give identical results"

    rerun = bench(first, "report.browser=false", workers=1)  # nothing to run: no pool
    assert "browser check" not in rerun
    assert "reusing the dataset" in rerun
    assert "(0 run now)" in rerun


@pytest.mark.parametrize(
    "version, first, then, recollects",
    [
        ("v0", False, False, True),  # an older version of the task: its rewards are stale
        ("v1", False, False, False),
        ("v1", True, False, False),  # frames collected serve a run of state agents
        ("v1", False, True, True),  # states alone cannot serve a frame model
    ],
)
def test_bench_reuses_a_dataset_that_serves_the_run_and_only_then(
    tmp_path, monkeypatch, version, first, then, recollects
):
    """CupPush v1 changed its reward: v0 data must not train v1's models. A run dir whose data
    has frames keeps it (and the frame models trained on it) for a bench of state agents."""
    import numpy as np
    from omegaconf import OmegaConf

    from embodied.apps import bench as bench_app
    from embodied.dataset import Episode, write_dataset

    assert bench_app.env_id("CupPush") == "embodied/CupPush-v1"
    collect = {"episodes": 1, "seed": 0, "styles": ["cautious"], "noises": [0.0]}
    collect.update(random_fraction=0.0, obs_modes=["state", "pixels"], train_physics="id")
    cfg = OmegaConf.create(
        {
            "run_dir": str(tmp_path),
            "data_dir": str(tmp_path / "data"),
            "checkpoints": str(tmp_path / "models"),
            "progress": False,
            "env": {"image_size": 8},
            "collect": collect,
        }
    )
    zeros = {k: np.zeros(2) for k in ("reward", "dropped", "success", "terminated")}
    episode = Episode(
        state=np.zeros((3, 2)), pixels=None, action=np.zeros((2, 4)), physics={}, seed=0, **zeros
    )
    calls = []
    monkeypatch.setattr(bench_app, "collect", lambda **kw: calls.append(kw))
    bench_app.collect_stage(cfg, "CupPush", obs_mode_needed=first)  # collects, stamps
    # what the stub did not write: a dataset of `version` under the stamp, a trained model
    write_dataset(
        tmp_path / "data" / "CupPush" / "train",
        [episode],
        env_id=f"embodied/CupPush-{version}",
        task="CupPush",
        split="train",
        obs_modes=["state"],
        image_size=8,
        state_labels=["a", "b"],
    )
    (tmp_path / "models" / "CupPush" / "pixel").mkdir(parents=True)
    bench_app.collect_stage(cfg, "CupPush", obs_mode_needed=then)
    assert len(calls) == 1 + recollects
    assert (tmp_path / "models" / "CupPush" / "pixel").is_dir() != recollects


def test_a_stamp_from_before_train_physics_still_serves_an_id_run():
    from embodied.apps.bench import _serves

    old = json.dumps({"episodes": 1, "seed": 0, "obs_modes": ["state"]})
    wanted = {"episodes": 1, "seed": 0, "obs_modes": ["state"], "train_physics": "id"}
    assert _serves(old, wanted)
    assert not _serves(old, {**wanted, "train_physics": "wide-2"})
