"""Local pool and Ray: the same cells give the same result lines, wherever they run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embodied.clips import collect_stage
from embodied.evaluate import EvalSettings, run_cell
from embodied.executors import LocalExecutor, RayExecutor
from embodied.grid import expand

TESTS = str(Path(__file__).parent)
# a fake world-model agent (tests/eval/test_videos.py): the video metrics in the workers too
AGENT = {
    "name": "frozen",
    "kind": "scripted",
    "family": "state",
    "obs_mode": "state",
    "world_model": {"_target_": "test_videos.FrozenWorld"},
    "trainer": None,
    "policy": {"_target_": "test_videos.make_policy", "_partial_": True},
}
CELLS = expand(["frozen"], ["CupCarry"], ["id", "ood-cup_mass-3"], [0])


def settings(run_dir) -> EvalSettings:
    return EvalSettings(
        agents={"frozen": AGENT},
        run_dir=str(run_dir),
        episodes=2,
        video_clips=2,
        video_horizon=4,
        env_kwargs={"max_episode_steps": 20},
    )


def lines(executor, run_dir) -> dict[str, dict]:
    """Result lines by cell id, without the one timing field; the clips collected first, as
    tasks of the same executor."""
    assert len(collect_stage(CELLS, settings(run_dir), executor, progress=False)) == 2
    out = {}
    for cell, line in executor.map(run_cell, CELLS, settings(run_dir)):
        assert line["cell_id"] == cell.cell_id
        out[cell.cell_id] = {k: v for k, v in line.items() if k != "wall_s"}
    assert sorted(out) == sorted(c.cell_id for c in CELLS)
    return out


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return lines(LocalExecutor(workers=1), tmp_path_factory.mktemp("serial"))


def test_a_spawned_pool_gives_the_same_lines_as_one_process(tmp_path, in_process):
    pooled = lines(LocalExecutor(workers=2), tmp_path)
    assert pooled == in_process
    assert in_process["frozen/CupCarry/id/0"]["video"]["clips"] == 2
    # the two splits differ (the shift is felt) while sharing the episode seeds (paired draws)
    a, b = (in_process[c.cell_id]["embodied"]["per_episode"] for c in CELLS)
    assert [e["seed"] for e in a] == [e["seed"] for e in b]
    assert a != b


@pytest.mark.xdist_group("ray")  # one Ray cluster at a time on a small machine
def test_ray_gives_the_same_lines_as_local(tmp_path, in_process):
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    executor = RayExecutor(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": path}})
    assert lines(executor, tmp_path) == in_process
    assert not ray.is_initialized()  # the runtime it started is shut down


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="workers must be"):
        LocalExecutor(workers=0)


def explode(item, cfg):
    raise ValueError(f"boom {cfg}")


def test_a_failing_cell_is_named_in_the_error():
    with pytest.raises(RuntimeError, match="scripted/Reach/id/0 failed: boom 7"):
        list(LocalExecutor(workers=1).map(explode, expand(["scripted"], ["Reach"], ["id"], [0]), 7))


def fail_or_hold_on(item, cfg):
    """The first cell fails; the other takes SIGTERM as "finish later" (as training does)."""
    if item == 0:
        time.sleep(0.5)
        raise ValueError("boom")
    signal.signal(signal.SIGTERM, lambda *_: None)
    for _ in range(cfg):
        time.sleep(1)
    return {}


def test_a_failed_cell_stops_a_pool_whose_other_cell_ignores_sigterm():
    """Seen in a bench: a cell's failure ended the map, the other worker (training) took the
    pool's SIGTERM as "stop after this chunk", and the pool's shutdown then waited forever."""
    script = (
        "from embodied.executors import LocalExecutor\n"
        "from test_executors import fail_or_hold_on\n"
        "try:\n"
        "    list(LocalExecutor(workers=2).map(fail_or_hold_on, [0, 1], 120))\n"
        "except RuntimeError as err:\n"
        "    print('raised:', err)\n"
    )
    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": TESTS}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env
    )
    assert "raised: 0 failed: boom" in out.stdout, out.stderr
    assert time.monotonic() - start < 60  # not the held cell's 120 s
