"""embodied-eval end to end: name checks, resume after a crash or a kill, config beside results."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from app_configs import app_config, scripted_grid
from omegaconf import OmegaConf

from embodied import evaluate as evaluate_module
from embodied.apps.eval import evaluate, load_agents
from embodied.evaluate import EvalSettings, run_cell
from embodied.grid import Cell
from embodied.results import ResultsStore
from embodied.shifts.splits import LOOK_SHIFTS

SPLITS = "[id,ood-cup_mass-3,ood-grip_force-3,look-cup_colour]"
GRID = scripted_grid(SPLITS)  # 8 small cells of the scripted agent


def config(run_dir: Path, *overrides: str):
    return app_config("eval", *GRID, f"run_dir={run_dir}", *overrides)


def results(run_dir: Path) -> list[dict]:
    """The file's lines, without the timing field, in file order."""
    rows = [json.loads(r) for r in (run_dir / "results.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def by_id(rows: list[dict]) -> dict[str, dict]:
    ids = [r["cell_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate cells"
    return dict(zip(ids, rows, strict=True))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    lines = evaluate(config(run_dir, "executor.workers=1"))
    assert len(lines) == 8
    return by_id(results(run_dir))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agents=[scripted,nope]", r"unknown agents \['nope'\]; valid agents: \[.*'scripted'"),
        ("tasks=[CupCary]", r"unknown tasks \['CupCary'\]; valid tasks: \['CupCarry'"),
        ("splits=[id,ood-cup_mas-3]", r"unknown shift 'cup_mas'; valid: \['cup_mass'"),
    ],
)
def test_unknown_names_fail_before_any_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        evaluate(config(tmp_path, override))
    assert not (tmp_path / "results.jsonl").exists()


def test_agent_overrides_reach_the_agent_config_and_are_checked(tmp_path):
    cfg = config(tmp_path, "+agent_overrides.scripted.noise=0.3", "+agent_overrides.scripted.x=1")
    agent = load_agents(["scripted"], cfg)["scripted"]
    assert agent["noise"] == 0.3 and agent["x"] == 1 and agent["style"] == "cautious"
    with pytest.raises(ValueError, match=r"unknown agent_overrides .*\['state'\]"):
        load_agents(["scripted"], config(tmp_path, "+agent_overrides.state.noise=0.3"))


def test_result_lines_carry_the_cell_and_its_split(uninterrupted):
    first = next(iter(uninterrupted.values()))
    assert first["agent"] == "scripted" and first["embodied"]["episodes"] == 2
    assert uninterrupted["scripted/CupCarry/ood-cup_mass-3/1"]["shift"] == "cup_mass"
    assert uninterrupted["scripted/CupCarry/look-cup_colour/0"]["look"] is True


def test_a_crash_mid_grid_then_a_rerun_equals_an_uninterrupted_run(
    tmp_path, monkeypatch, uninterrupted
):
    append = ResultsStore.append
    calls = []

    def crash_on_third(self, line):
        calls.append(line["cell_id"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the pool still runs cells
        append(self, line)

    monkeypatch.setattr(ResultsStore, "append", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config(tmp_path, "executor.workers=2"))
    monkeypatch.setattr(ResultsStore, "append", append)
    assert len(results(tmp_path)) == 2
    evaluate(config(tmp_path, "executor.workers=2"))
    assert by_id(results(tmp_path)) == uninterrupted
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "version.json").exists()
    # a rerun with other settings keeps the finished cells, and says so
    with pytest.warns(UserWarning, match=r"\['episodes'\] differ"):
        (kept,) = evaluate(config(tmp_path, "episodes=3", "splits=[id]", "seeds=[0]"))
    assert kept["embodied"]["episodes"] == 2


def test_sigkill_mid_grid_then_a_rerun_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    command = [
        str(Path(sys.executable).with_name("embodied-eval")),
        *GRID,
        f"run_dir={tmp_path}",
        "executor.workers=1",
    ]
    path = tmp_path / "results.jsonl"
    proc = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (path.exists() and path.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no cell finished in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(results(tmp_path))
    assert 1 <= finished < 8
    with open(path, "ab") as f:  # and a line torn as a kill during a write would leave it
        f.write(b'{"cell_id": "scripted/CupCarry/id/1", "emb')
    # and the temporary file of a write killed before its rename (a kill mid-write leaves one)
    stale = tmp_path / "episodes" / "CupCarry" / "scripted" / ".seed1-0123abcd.json.k1ll3d.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("[{")

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"8 cells ({8 - finished} run now)" in rerun.stdout
    assert by_id(results(tmp_path)) == uninterrupted
    assert not stale.exists()
    written = sorted(p.name for p in tmp_path.iterdir())
    # no Hydra litter; episodes/: the rows id and look cells share
    assert written == ["config.yaml", "episodes", "results.jsonl", "version.json"]


def test_eval_collects_the_clips_before_the_grid_and_its_cells_only_read_them(tmp_path):
    """The held-out clips of the world-model agent's cells (nominal's; scripted has none) are
    written by the clips stage; skipped, the cell that needs them fails naming it."""
    grid = ["agents=[scripted,nominal]", "splits=[id]", "seeds=[0]", "episodes=1"]
    grid += ["video.clips=2", "video.horizon=4", "video.probe_clips=0", "executor.workers=1"]
    with pytest.raises(RuntimeError, match=r"nominal/CupCarry/id/0 failed: no clips at .* clips"):
        evaluate(config(tmp_path, *grid), clips=False)
    lines = evaluate(config(tmp_path, *grid))
    heldout = tmp_path / "heldout"
    assert [p for p in heldout.rglob("*") if p.is_file()] == [
        heldout / "CupCarry" / "id" / "seed0-c2-h4-s64.npz"
    ]
    video = {line["agent"]: line["video"] for line in lines}
    assert video["scripted"] is None and video["nominal"]["clips"] == 2


class Diverging(gymnasium.Env):
    """An env whose simulation blows up on the third step, as a NaN in MuJoCo would."""

    metadata = {"render_modes": [], "render_fps": 20}
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def __init__(self, obs_mode="state", shift="id", image_size=64, render_mode=None):
        self.t = 0

    def info(self, error: bool) -> dict:
        return {"is_success": False, "dropped": False, "physics_error": error, "physics": {}}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), self.info(False)

    def step(self, action):
        self.t += 1
        return np.zeros(3, np.float32), -1.0, False, self.t == 3, self.info(self.t == 3)


class StandStill:
    def reset(self, env):
        pass

    def act(self, obs):
        return np.zeros(4, np.float32)


def make_still(agent_cfg, checkpoint_dir, env, seed):
    return StandStill()


def test_a_diverging_simulation_is_counted_not_a_crash(tmp_path, monkeypatch):
    gymnasium.register("test/Diverging-v0", entry_point=Diverging)
    monkeypatch.setattr(evaluate_module, "env_id", lambda task: "test/Diverging-v0")
    agent = {"name": "still", "family": "scripted", "obs_mode": "state"}
    agent["policy"] = {"_target_": "test_eval_app.make_still", "_partial_": True}
    settings = EvalSettings(agents={"still": agent}, run_dir=str(tmp_path), episodes=3)
    line = run_cell(Cell("still", "CupCarry", "id", 0), settings)["embodied"]
    assert line["physics_errors"] == 3 and line["success_rate"] == 0.0
    assert line["success_ci"][0] == 0.0 and 0.0 < line["success_ci"][1] < 1.0
    assert [e["steps"] for e in line["per_episode"]] == [3, 3, 3]


LOOKS = [f"look-{s}" for s in LOOK_SHIFTS]


def blind_settings(run_dir: Path, episodes: int) -> EvalSettings:
    """scripted (noisy: its own random draws) and nominal (a planner), neither sees a camera."""
    cfg = config(run_dir, "+agent_overrides.scripted.noise=0.3")
    return EvalSettings(
        agents=load_agents(["scripted", "nominal"], cfg),
        run_dir=str(run_dir),
        episodes=episodes,
        env_kwargs={"max_episode_steps": 10},
    )


@pytest.mark.parametrize("agent", ["scripted", "nominal"])
def test_an_agent_that_sees_no_camera_meets_its_id_episodes_under_every_look(tmp_path, agent):
    """The physics claim the shared episodes rest on, each cell run in its own run dir."""
    lines = {
        split: run_cell(Cell(agent, "CupCarry", split, 0), blind_settings(tmp_path / split, 2))
        for split in ["id", *LOOKS]
    }
    assert (tmp_path / "id" / "episodes").is_dir()  # the id cell stored its rows
    episodes = {s: line["embodied"]["per_episode"] for s, line in lines.items()}
    assert all(rows == episodes["id"] for rows in episodes.values()), episodes
    assert any(r["return"] != 0 for r in episodes["id"])


def test_look_cells_reuse_the_id_cells_episodes_and_nothing_else_does(tmp_path, monkeypatch):
    settings = blind_settings(tmp_path, 2)
    first = run_cell(Cell("scripted", "CupCarry", "id", 1), settings)

    def never(*args, **kwargs):
        raise AssertionError("an episode ran")

    monkeypatch.setattr(evaluate_module, "run_episode", never)
    look = run_cell(Cell("scripted", "CupCarry", "look-cup_colour", 1), settings)
    assert look["embodied"] == first["embodied"]
    for cell in [
        Cell("scripted", "CupCarry", "ood-cup_mass-3", 1),  # physics moves
        Cell("scripted", "CupCarry", "look-cup_colour", 2),  # another seed
    ]:
        with pytest.raises(AssertionError, match="an episode ran"):
            run_cell(cell, settings)
    # another agent config, or an agent that sees frames, shares nothing
    noisier = {**settings.agents["scripted"], "noise": 0.2}
    other = EvalSettings(agents={"scripted": noisier}, run_dir=str(tmp_path), episodes=2)
    with pytest.raises(AssertionError, match="an episode ran"):
        run_cell(Cell("scripted", "CupCarry", "look-cup_colour", 1), other)
    seeing = OmegaConf.create({**noisier, "obs_mode": "state+pixels"})
    cell = Cell("scripted", "CupCarry", "look-cup_colour", 1)
    assert evaluate_module.id_episodes_path(cell, other, seeing, None) is None
    # nor does another version of the task (CupPush v1 changed the reward every row sums)
    blind = OmegaConf.create(noisier)
    now = evaluate_module.id_episodes_path(cell, other, blind, None)
    monkeypatch.setattr(evaluate_module, "env_id", lambda task: f"embodied/{task}-v9")
    assert evaluate_module.id_episodes_path(cell, other, blind, None) not in (now, None)
