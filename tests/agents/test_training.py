"""The generic training loop: logs, checkpoints, exact resume, clean stop on Ctrl-C, the apps."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from embodied.agents import training
from embodied.agents.nets import load_checkpoint
from embodied.agents.state_model import StateModel
from embodied.agents.trainer import resumed_rows
from embodied.collect import collect
from embodied.dataset import Dataset
from embodied.protocols import Trainer

AGENT = {
    "name": "state",
    "torch_threads": 1,
    "world_model": {
        "_target_": "embodied.agents.state_model.StateModel",
        "members": 2,
        "hidden": [16, 16],
        "head_hidden": [16],
        "batch_size": 32,
    },
}
pytestmark = pytest.mark.usefixtures("restore_threads")  # training sets its agent's threads


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    collect("embodied/CupCarry-v0", path, episodes=6, obs_modes=("state",), progress=False)
    return path


def train(data_dir, out, steps, **kw):
    args = dict(seed=0, progress=False, checkpoint_every=10, log_every=5)
    args.update(kw)
    return training.train_world_model(AGENT, data_dir, out, steps, **args)


def predictions(path, data_dir):
    model = StateModel.load(path)
    tr = Dataset.load(data_dir).transitions("state")
    return model.step(torch.as_tensor(tr["obs"][:20]), torch.as_tensor(tr["action"][:20]))


def csv_steps(out):
    with open(out / training.LOSSES, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_writes_logs_checkpoints_and_resumes_exactly(data_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    summary = train(data_dir, straight, 30)
    assert summary["step"] == 30 and not summary["interrupted"]
    for name in ("checkpoint.pt", "model.pt", "losses.csv", "agent.yaml"):
        assert (straight / name).is_file(), name
    assert any((straight / "tb").iterdir())
    assert csv_steps(straight) == [5, 10, 15, 20, 25, 30]
    assert not list(straight.glob("*.tmp")) and not list(straight.glob(".*.tmp"))

    train(data_dir, split, 15)
    assert load_checkpoint(split / training.CHECKPOINT, training.FORMAT)["step"] == 15
    resumed = train(data_dir, split, 30)
    assert resumed["step"] == 30
    assert csv_steps(split) == [5, 10, 15, 20, 25, 30]  # no duplicated rows after resuming
    for got, want in zip(
        predictions(split / "model.pt", data_dir),
        predictions(straight / "model.pt", data_dir),
        strict=True,
    ):
        torch.testing.assert_close(got, want)  # optimizer + RNG restored: same run
    done = train(data_dir, split, 30)
    assert done["step"] == 30 and done["wall_s"] == 0.0  # nothing left to do


def test_sigint_stops_with_a_loadable_checkpoint(data_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    fit = StateModel.fit

    def fit_then_interrupt(self, dataset, steps, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-chunk
        return fit(self, dataset, steps, **kw)

    monkeypatch.setattr(StateModel, "fit", fit_then_interrupt)
    summary = train(data_dir, tmp_path, 100, checkpoint_every=50)
    assert summary["interrupted"] and summary["step"] == 15
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    ckpt = load_checkpoint(tmp_path / training.CHECKPOINT, training.FORMAT)
    assert ckpt["step"] == 15
    StateModel.load(tmp_path / "model.pt")  # loadable
    monkeypatch.setattr(StateModel, "fit", fit)
    assert train(data_dir, tmp_path, 20, checkpoint_every=50)["step"] == 20


def test_a_different_model_config_is_refused(data_dir, tmp_path):
    train(data_dir, tmp_path, 5)
    other = OmegaConf.create(AGENT)
    other.world_model.members = 3
    with pytest.raises(ValueError, match="different world_model config"):
        training.train_world_model(other, data_dir, tmp_path, 10, progress=False)


def run_app(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=120
    )


def test_apps_collect_train_and_skip_untrainable(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    out = run_app(
        "embodied.apps.collect",
        "preset=smoke",
        "episodes=3",
        "obs_modes=[state]",
        f"out_dir={data}",
        "progress=false",
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 3 episodes" in out.stdout and Dataset.load(data).manifest["episodes"] == 3
    out = run_app(
        "embodied.apps.train",
        "agent=state",
        "steps=10",
        "agent.world_model.hidden=[16]",
        "agent.world_model.members=2",
        f"data_dir={data}",
        f"out_dir={models}",
        "progress=false",
    )
    assert out.returncode == 0, out.stderr
    assert "trained to step 10/10" in out.stdout and (models / "model.pt").is_file()
    out = run_app("embodied.apps.train", "agent=nominal", f"out_dir={models}/nominal")
    assert out.returncode == 0, out.stderr
    assert "nothing to train" in out.stdout and not (models / "nominal").exists()


def test_trains_a_model_that_passes_its_arguments_on(data_dir, tmp_path):
    """AdaptiveModel takes **kwargs for StateModel: the trainer must not hand it the frame
    models' ``task`` (a bench run died on it)."""
    agent = {
        **AGENT,
        "name": "adaptive",
        "world_model": {
            **AGENT["world_model"],
            "_target_": "embodied.agents.adaptive_model.AdaptiveModel",
            "context_hidden": [8],
        },
    }
    summary = training.train_world_model(agent, data_dir, tmp_path, steps=2, progress=False)
    assert summary["step"] == 2 and (tmp_path / training.MODEL_FILE).exists()


def test_per_task_settings_train_and_plan_on_their_task_alone(data_dir, tmp_path):
    """state's terminal value helps CupPush and hurts CupCarry: one agent config, one task."""
    import gymnasium

    from embodied.agents.mpc import make_policy

    table = {"CupCarry": {"world_model": {"value_weight": 0.5}, "planner": {"horizon": 3}}}
    agent = {**AGENT, "per_task": table, "planner": {"_target_": "embodied.agents.planners.CEM"}}
    training.train_world_model(agent, data_dir, tmp_path / "carry", 5, progress=False)
    model = StateModel.load(tmp_path / "carry" / training.MODEL_FILE)
    assert model.config.value_weight == 0.5 and model.has_value
    env = gymnasium.make("embodied/CupCarry-v0")
    policy = make_policy(agent, tmp_path / "carry", env, seed=0)
    assert policy.planner.horizon == 3  # the planner's per-task settings reach it too
    other = training.for_task(OmegaConf.create(agent), "Reach")  # another task: untouched
    assert "value_weight" not in other.world_model and "horizon" not in other.planner
    with pytest.raises(ValueError, match=r"unknown tasks \['CupCary'\]; valid: \['CupCarry'"):
        training.for_task(OmegaConf.create({**agent, "per_task": {"CupCary": {}}}), "Reach")


def test_the_world_model_trainer_follows_the_trainer_protocol(data_dir, tmp_path):
    trainer = training.WorldModelTrainer(
        OmegaConf.create(AGENT), data_dir, tmp_path, 10, 0, False, 10, 5, None
    )
    assert isinstance(trainer, Trainer)
    assert trainer.trained_on["env_id"] == "embodied/CupCarry-v0"
    summary = trainer.train()
    assert {"out_dir", "steps", "step", "interrupted", "wall_s"} <= set(summary)
    assert (summary["step"], summary["interrupted"]) == (10, False)
    assert (tmp_path / "trained_on.json").is_file() and (tmp_path / "agent.yaml").is_file()


def test_a_resumed_log_keeps_whole_rows_up_to_its_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n5,1.0\n10,0.5\n15,0.4\n20,0.3,9\n2")  # last two torn by a kill
    fields, rows = resumed_rows(path, "step", 10)
    assert fields == ["step", "loss"] and [r["step"] for r in rows] == ["5", "10"]
    assert [r["step"] for r in resumed_rows(path, "step", 100)[1]] == ["5", "10", "15"]
    assert resumed_rows(path, "step", 0) == ([], [])  # a fresh run keeps nothing
