"""Rounds of own experience: disjoint seeds, provenance, exact resume, determinism, the app."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from types import SimpleNamespace

import gymnasium
import mujoco
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from embodied.agents import rounds
from embodied.agents.retrieval_model import RetrievalModel
from embodied.agents.state_model import StateModel
from embodied.agents.training import train_world_model
from embodied.collect import FAILURES, collect, failure_kind
from embodied.dataset import Dataset
from embodied.evaluate import cell_seeds
from embodied.registration import env_id

SMALL = [
    "agent.world_model.members=2",
    "agent.world_model.hidden=[16,16]",
    "agent.world_model.head_hidden=[16]",
    "agent.world_model.batch_size=32",
    "agent.planner.population=8",
    "agent.planner.elites=2",
    "agent.planner.iterations=1",
    "agent.planner.horizon=3",
]
SETTINGS = rounds.RoundSettings(episodes=2, check_episodes=2, finetune_steps=5, noise=0.2)
pytestmark = pytest.mark.usefixtures("restore_threads")  # training sets its agent's threads


@pytest.fixture(scope="module")
def agent():
    with initialize_config_module("embodied.configs", version_base=None):
        return compose("train", overrides=["agent=state", "env=cup_carry", *SMALL]).agent


@pytest.fixture(scope="module")
def offline(tmp_path_factory, agent):
    """A 6-episode CupCarry dataset and a model trained 10 steps on it."""
    root = tmp_path_factory.mktemp("offline")
    collect(env_id("CupCarry"), root / "data", episodes=6, obs_modes=("state",), progress=False)
    train_world_model(agent, root / "data", root / "model", steps=10, progress=False)
    return root


def run(agent, offline, out, n, settings=SETTINGS, seed=0):
    return rounds.run_rounds(
        agent,
        offline / "data",
        offline / "model",
        out,
        n,
        settings,
        train_steps=10,
        seed=seed,
        progress=False,
    )


def test_round_seeds_are_disjoint_from_collection_and_evaluation():
    planned = {int(s) for k in (1, 2, 3) for s in rounds.round_seeds(k)[:1000]}
    checks = set(rounds.check_seeds(100))
    evaluation = {s for seed in range(50) for s in cell_seeds(seed, 100, 8).episodes}
    evaluation |= {s for seed in range(50) for s in cell_seeds(seed, 100, 8).clips}
    assert len(planned) == 3000 and not planned & checks and not (planned | checks) & evaluation
    # collection draws rng.integers(2**31 - 1), evaluation uint32 states: both below 2**32
    assert min(planned | checks) >= 2**32 and max(evaluation) < 2**32
    with pytest.raises(ValueError, match="from 1"):
        rounds.round_seeds(0)


def test_a_round_seed_is_a_valid_reproducible_train_episode():
    env = gymnasium.make(env_id("CupPush"))
    seed = int(rounds.round_seeds(1)[0])
    first, info = env.reset(seed=seed, options={"shift": "train"})
    again, _ = env.reset(seed=seed, options={"shift": "train"})
    other, _ = env.reset(seed=seed - 2**32, options={"shift": "train"})
    assert info["seed"] == seed and np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_failure_kinds_read_mujocos_cup():
    env = gymnasium.make(env_id("CupPush"))
    env.reset(seed=0)
    arm = env.unwrapped
    assert failure_kind(env, {"dropped": False, "slipped": False}) is None
    assert failure_kind(env, {"dropped": False, "slipped": True}) == "slipped"
    assert failure_kind(env, {"dropped": True, "slipped": False}) == "dropped"  # upright: a fall
    cup = arm.model.body("cup").jntadr[0]
    adr = arm.model.jnt_qposadr[cup]
    arm.data.qpos[adr + 3 : adr + 7] = [np.cos(0.7), np.sin(0.7), 0.0, 0.0]  # 1.4 rad about x
    mujoco.mj_forward(arm.model, arm.data)
    assert failure_kind(env, {"dropped": True, "slipped": False}) == "tipped"
    assert set(FAILURES) == {"dropped", "tipped", "slipped"}


def test_rounds_grow_the_dataset_with_provenance_and_resume_exactly(agent, offline, tmp_path):
    log = run(agent, offline, tmp_path / "a", 2)
    assert [r["round"] for r in log] == [0, 1, 2]
    assert [r["episodes"] for r in log] == [6, 8, 10]
    assert [r["model_step"] for r in log] == [10, 15, 20]  # fine-tuned 5 steps a round
    assert log[0]["own_env_steps"] == 0 < log[1]["own_env_steps"] < log[2]["own_env_steps"]
    assert all(sum(r["check"]["outcomes"].values()) == 2 for r in log)
    info = Dataset.load(tmp_path / "a" / "data").manifest["episode_info"]
    own = info[6:]
    assert [e["meta"]["round"] for e in own] == [1, 1, 2, 2]
    assert {e["meta"]["agent"] for e in own} == {"state"}
    assert all(e["seed"] >= 2**32 and e["meta"]["success"] == e["success"] for e in own)
    assert all(e["meta"]["failure"] in (None, *FAILURES) for e in own)
    assert Dataset.load(offline / "data").manifest["episodes"] == 6  # the shared one untouched
    # stopped after round 1 (its record written), then resumed: the same result
    part = run(agent, offline, tmp_path / "b", 1)
    assert len(part) == 2
    resumed = run(agent, offline, tmp_path / "b", 2)
    assert _same_but_wall(resumed, log)
    runs = (tmp_path / "a", tmp_path / "b")
    for k in range(3):
        a, b = (StateModel.load(p / "models" / f"round-{k}" / "model.pt") for p in runs)
        assert all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )


def _same_but_wall(a: list[dict], b: list[dict]) -> bool:
    strip = lambda log: [{**r, "refit": {**r.get("refit", {}), "wall_s": 0}} for r in log]  # noqa: E731
    return strip(a) == strip(b)


def test_a_round_stopped_after_its_episodes_resumes_with_them(agent, offline, tmp_path):
    whole = run(agent, offline, tmp_path / "a", 1)
    # a stop between the append and the round's record: the episodes are there, no record
    run(agent, offline, tmp_path / "b", 1)
    log_path = tmp_path / "b" / rounds.LOG
    state = json.loads(log_path.read_text())
    log_path.write_text(json.dumps({**state, "rounds": state["rounds"][:1]}))
    resumed = run(agent, offline, tmp_path / "b", 1)
    assert Dataset.load(tmp_path / "b" / "data").manifest["episodes"] == 8  # not planned twice
    assert _same_but_wall(resumed, whole)


def test_retrain_and_other_settings(agent, offline, tmp_path):
    log = run(
        agent,
        offline,
        tmp_path / "r",
        1,
        rounds.RoundSettings(episodes=1, check_episodes=0, refit="retrain"),
    )
    assert log[1]["model_step"] == 10 and log[1]["check"]["success"] is None
    with pytest.raises(ValueError, match="other settings"):
        run(agent, offline, tmp_path / "r", 1)
    with pytest.raises(ValueError, match="finetune"):
        rounds.RoundSettings(refit="sometimes")


def run_app(*args: str) -> subprocess.CompletedProcess:
    code = "from embodied.apps.train import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # a subprocess, CupPush's 120-step episodes: ~1 min on a busy 2-core machine
def test_train_app_runs_rounds_on_a_task_with_per_task_settings(tmp_path):
    """CupPush merges state's per_task value head into the agent: Hydra's struct config took
    no new key before the app copied it."""
    data = tmp_path / "data"
    collect(env_id("CupPush"), data, episodes=3, obs_modes=("state",), progress=False)
    out = run_app(
        "agent=state", "env=cup_push", "steps=10", "rounds=1", *SMALL,
        f"data_dir={data}", f"out_dir={tmp_path / 'model'}",
        f"rounds_dir={tmp_path / 'rounds'}", "experience.episodes=1",
        "experience.check_episodes=1", "experience.finetune_steps=5", "progress=false",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rounds of own experience, state on CupPush" in out.stdout
    log = rounds.read_log(tmp_path / "rounds")
    assert [r["model_step"] for r in log] == [10, 15]
    assert (
        "value_weight: 1.0"
        in (tmp_path / "rounds" / "models" / "round-1" / "agent.yaml").read_text()
    )


def test_the_bench_stage_runs_the_tasks_rounds_and_publishes_the_last_model(
    agent, offline, tmp_path
):
    shutil.copytree(offline / "model", tmp_path / "models" / "CupCarry" / "state")
    job = SimpleNamespace(
        task="CupCarry",
        agent=OmegaConf.to_container(agent, resolve=True),
        data_dir=str(offline / "data"),
        out_dir=str(tmp_path / "models" / "CupCarry" / "state"),
        steps=10,
        seed=0,
    )
    experience = {**asdict(rounds.RoundSettings(episodes=1, check_episodes=1, finetune_steps=5))}
    cfg = OmegaConf.create(
        {
            "run_dir": str(tmp_path),
            "rounds": 0,
            "progress": False,
            "env": {"kwargs": {}},
            "experience": {**experience, "per_task": {"CupPush": 2}},
        }
    )
    rounds.bench_stage(cfg, [job])  # rounds for CupPush only: nothing to do here
    assert not (tmp_path / "rounds").exists()
    cfg.experience.per_task = {"CupCarry": 1}
    rounds.bench_stage(cfg, [job])
    log = rounds.read_log(tmp_path / "rounds" / "CupCarry" / "state")
    assert [r["round"] for r in log] == [0, 1]
    published = tmp_path / "models" / "CupCarry" / "state"
    assert rounds.model_step(published) == 15
    last = tmp_path / "rounds" / "CupCarry" / "state" / "models" / "round-1" / "model.pt"
    assert (published / "model.pt").read_bytes() == last.read_bytes()
    assert (
        rounds.model_step(tmp_path / "rounds" / "CupCarry" / "state" / "models" / "round-0") == 10
    )


def test_a_frame_family_records_frames_and_retrieval_gains_the_memories(tmp_path):
    with initialize_config_module("embodied.configs", version_base=None):
        over = ["agent=retrieval", "env=cup_carry", "agent.planner.population=8"]
        agent = compose("train", overrides=[*over, "agent.planner.horizon=3"]).agent
    data = tmp_path / "data"
    collect(env_id("CupCarry"), data, episodes=4, obs_modes=("state", "pixels"), progress=False)
    train_world_model(agent, data, tmp_path / "model", steps=1, progress=False)
    settings = rounds.RoundSettings(episodes=1, check_episodes=1, finetune_steps=1)
    log = rounds.run_rounds(
        agent, data, tmp_path / "model", tmp_path / "r", 1, settings, train_steps=1, progress=False
    )
    own = Dataset.load(tmp_path / "r" / "data")
    assert list(own.obs_modes) == ["state", "pixels"] and own.episodes[-1].pixels is not None
    assert own.episodes[-1].pixels.shape[1:] == (64, 64, 3)
    memories = [
        len(RetrievalModel.load(str(tmp_path / "r" / "models" / f"round-{k}" / "model.pt"))._keys)
        for k in (0, 1)
    ]
    assert memories[1] - memories[0] == own.episodes[-1].length
    assert log[1]["own_env_steps"] == own.episodes[-1].length
