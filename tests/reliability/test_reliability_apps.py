"""Misconfigured apps, foreign or damaged datasets and checkpoints, and a disk that fills up.

Every app is run as a user would (a subprocess): a bad name fails before any work starts, with
the valid choices in the message and nothing written. Datasets and checkpoints of another task
or another model family are refused by name; a write that fails leaves earlier files intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest
from gymnasium.envs.registration import parse_env_id
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from embodied.agents import training
from embodied.agents.mpc import make_policy
from embodied.apps import cli
from embodied.apps import train as train_app
from embodied.apps.eval import evaluate, load_agents
from embodied.checkpoints import TRAINED_ON, check_trained_on, write_trained_on
from embodied.collect import collect
from embodied.dataset import MANIFEST, Dataset, DatasetError, read_manifest
from embodied.results import ResultsStore, write_atomic

BIN = Path(sys.executable).parent


def app(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / f"embodied-{name}"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.mark.parametrize(
    ("name", "override", "expected"),
    [
        ("collect", "agent=state", "collect has no config group 'agent'; its groups: ['env'"),
        ("collect", "env=nope", "Available options in 'env':\n\tcup_carry"),
        ("train", "agent.world_model.hiden=[8]", "valid keys of 'agent.world_model': ['_target_'"),
        ("eval", "executor=nope", "Available options in 'executor':\n\tlocal\n\tray"),
        ("eval", "splits=[id,nope]", "unknown split 'nope'; valid forms: train, id, ood-<shift>"),
        ("bench", "splits=[id,ood-cup_mas-3]", "unknown shift 'cup_mas'; valid: ['cup_mass'"),
        ("report", "foo=1", "valid keys: ['leaderboard', 'min_episodes', 'n_boot', 'run_dir'"),
        ("shifts", "--resolve=ood-nope-3", "unknown shift 'nope'; valid: ['cup_mass'"),
    ],
)
def test_a_bad_name_fails_before_any_work_naming_the_valid_choices(
    tmp_path, name, override, expected
):
    run_dir = tmp_path / "run"
    args = [override] if name == "shifts" else [f"run_dir={run_dir}", override, "progress=false"]
    if name == "report":
        args.remove("progress=false")
    done = app(name, *args, cwd=tmp_path)
    assert done.returncode != 0
    assert expected in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert sorted(tmp_path.iterdir()) == []  # no run dir, no Hydra outputs/, nothing


@pytest.mark.parametrize(
    ("config", "overrides", "expected"),
    [
        ("bench", ["collect.epsiodes=3"], "valid keys of 'collect': ['episodes', 'noises'"),
        ("eval", ["foo=1"], "unknown key 'foo'; valid keys: ['agent_overrides', 'agents'"),
        ("eval", ["videos.cels=[]"], "valid keys of 'videos': ['cells', 'dir'"),
        ("eval", ["agent.planner.horizon=3"], "unknown key 'agent.planner.horizon'; valid"),
        ("train", ["env.kwargs.max_steps=3"], "valid keys of 'env.kwargs': []"),
        ("report", ["agent=state"], "report has no config group 'agent'; its groups: none"),
        ("train", ["env=reach", "agent=state", "steps=3", "agent.planner.horizon=4"], None),
        ("eval", ["+foo=1", "hydra.run.dir=.", "seeds=[0,1]", "--cfg", "job"], None),
    ],
)
def test_unknown_keys_are_caught_with_the_keys_at_their_level(config, overrides, expected):
    found = cli.unknown_override(config, overrides)
    assert found == expected if expected is None else expected in found


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"styles": ["nope"]}, r"styles \['nope'\] invalid; choose from \['cautious', 'aggr"),
        ({"noises": [-0.1]}, r"noises must be finite numbers >= 0"),
        ({"split": "ood-cup_mass-6"}, r"severity must be one of \[1, 2, 3, 4, 5\]"),
    ],
)
def test_bad_collect_values_fail_before_any_episode(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        collect("embodied/CupCarry-v0", tmp_path / "data", episodes=2, progress=False, **kwargs)
    assert not (tmp_path / "data").exists()


def test_user_errors_print_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stop, cli.user_errors("embodied-x"):
        raise OSError(errno.ENOSPC, "No space left on device", "/run/results.jsonl")
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "embodied-x: error: [Errno 28] No space left on device: '/run/results.jsonl'\n"
    )
    with pytest.raises(SystemExit) as stop, cli.user_errors("embodied-x"):
        raise KeyboardInterrupt
    assert stop.value.code == 130 and "rerun to carry on" in capsys.readouterr().err
    with pytest.raises(SystemExit), cli.user_errors("embodied-x"):  # a cell's, from a worker
        raise RuntimeError("a/T/id/0 failed: bad") from ValueError("bad")
    assert capsys.readouterr().err == "embodied-x: error: a/T/id/0 failed: bad\n"
    with pytest.raises(RuntimeError), cli.user_errors("embodied-x"):  # a bug keeps its trace
        raise RuntimeError("a/T/id/0 failed: oops") from ZeroDivisionError()


# ------------------------------------------------------------------ datasets and checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CupCarry dataset and a tiny state model trained on it, laid out as a run."""
    run = tmp_path_factory.mktemp("run")
    data = run / "data" / "CupCarry" / "train"
    collect(
        "embodied/CupCarry-v0",
        data,
        episodes=3,
        obs_modes=("state",),
        progress=False,
        env_kwargs={"max_episode_steps": 20},
    )
    agent = OmegaConf.create(load_agents(["state"], OmegaConf.create())["state"])
    agent.world_model.update(members=2, hidden=[16], head_hidden=[16], batch_size=16)
    out = run / "models" / "CupCarry" / "state"
    training.train_world_model(agent, data, out, steps=10, progress=False, log_every=5)
    return run, agent


def foreign_dataset(run: Path, env_id: str) -> Path:
    """A copy of the run's dataset whose manifest says it holds another task."""
    path = run / "data" / "foreign"
    shutil.copytree(run / "data" / "CupCarry" / "train", path, dirs_exist_ok=True)
    manifest = read_manifest(path)
    manifest.update(env_id=env_id, task=parse_env_id(env_id)[1])
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.mark.smoke
def test_a_dataset_of_another_task_is_refused(trained, tmp_path):
    run, agent = trained
    data = run / "data" / "CupCarry" / "train"
    with pytest.raises(DatasetError, match=r"holds 'embodied/CupCarry-v0' episodes; 'embodied/"):
        Dataset.load(data, env_id="embodied/CupPush-v1")
    out = tmp_path / "model"
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose("train", ["env=cup_push", f"data_dir={data}", f"out_dir={out}"])
    with pytest.raises(DatasetError, match=r"'embodied/CupPush-v1' needs a dataset of its own"):
        train_app.train(cfg)  # embodied-train env=cup_push data_dir=<CupCarry data>
    assert not out.exists()  # refused before anything was written
    # resuming a CupCarry model on CupPush data would mix two tasks in one model
    with pytest.raises(ValueError, match=r"trained on 'embodied/CupCarry-v0' data; .* holds"):
        training.train_world_model(
            agent, foreign_dataset(run, "embodied/CupPush-v1"), run / "models/CupCarry/state", 20
        )


@pytest.mark.smoke
def test_a_family_that_needs_pixels_refuses_a_state_only_dataset(trained, tmp_path):
    run, _ = trained
    pixel = OmegaConf.create(load_agents(["pixel"], OmegaConf.create())["pixel"])
    out = tmp_path / "model"
    with pytest.raises(DatasetError, match=r"has no \['pixels'\] observations; it holds \['st"):
        training.train_world_model(pixel, run / "data" / "CupCarry" / "train", out, steps=5)
    assert not out.exists()


@pytest.mark.smoke
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_train_refuses_an_empty_or_truncated_dataset_before_writing(trained, tmp_path, damage):
    run, agent = trained
    data = tmp_path / "data"
    if damage == "empty":
        data.mkdir()
    else:
        shutil.copytree(run / "data" / "CupCarry" / "train", data)
        shard = data / "shard-00000.npz"
        shard.write_bytes(shard.read_bytes()[:-100])
    out = tmp_path / "model"
    with pytest.raises(DatasetError, match=r"no manifest.json|truncated or overwritten"):
        training.train_world_model(agent, data, out, steps=5, progress=False)
    assert not out.exists()


@pytest.mark.smoke
def test_eval_refuses_a_model_of_another_task_or_family_before_any_cell(trained):
    run, agent = trained
    models = run / "models"
    shutil.copytree(models / "CupCarry" / "state", models / "CupPush" / "state")
    shutil.copytree(models / "CupCarry" / "state", models / "CupCarry" / "retrieval")
    args = [f"run_dir={run}", "agents=[state]", "tasks=[CupPush]", "progress=false"]
    done = app("eval", *args, cwd=run)
    assert done.returncode == 2, done.stderr
    assert "was trained on CupCarry data, not CupPush" in done.stderr
    assert "Traceback" not in done.stderr and not (run / "results.jsonl").exists()
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose("eval", [f"run_dir={run}", "agents=[retrieval]"])
    with pytest.raises(ValueError, match=r"is a 'state' model \(embodied.agents.state_model"):
        evaluate(cfg)
    assert not (run / "results.jsonl").exists()


@pytest.mark.smoke
def test_make_policy_refuses_foreign_truncated_and_empty_checkpoints(trained, tmp_path):
    run, agent = trained
    ckpt = run / "models" / "CupCarry" / "state"
    push = gymnasium.make("embodied/CupPush-v1")
    with pytest.raises(ValueError, match=r"trained on CupCarry data, not CupPush"):
        make_policy(agent, ckpt, push, seed=0)
    carry = gymnasium.make("embodied/CupCarry-v0")
    assert make_policy(agent, ckpt, carry, seed=0).world_model.family == "state"

    retrieval = OmegaConf.create(load_agents(["retrieval"], OmegaConf.create())["retrieval"])
    bare = tmp_path / "bare"  # no record beside the model: the file format still tells
    bare.mkdir()
    shutil.copy(ckpt / training.MODEL_FILE, bare)
    with pytest.raises(ValueError, match=r"format 'embodied-state-model/1'; expected 'embodied-r"):
        make_policy(retrieval, bare, carry, seed=0)
    for damage in (lambda b: b[: len(b) // 2], lambda b: b""):
        (bare / training.MODEL_FILE).write_bytes(damage((ckpt / training.MODEL_FILE).read_bytes()))
        with pytest.raises(ValueError, match=r"cannot read checkpoint .* \(truncated"):
            make_policy(agent, bare, carry, seed=0)
    (bare / TRAINED_ON).write_text("{")
    with pytest.raises(ValueError, match=r"trained_on.json is unreadable"):
        make_policy(agent, bare, carry, seed=0)


# ------------------------------------------------------------------ disk full
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_mid_line_leaves_the_results_file_intact(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append({"cell_id": "a/T/id/0", "x": 1})
    before = store.path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # a partial write, then the disk is full
        if len(data) > 4:
            return real_write(fd, bytes(data[: len(data) // 2]))
        enospc()

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match=r"No space left .* 1 finished cells in it are intact") as e:
        store.append({"cell_id": "a/T/id/1", "x": 2})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(store.path)
    assert store.path.read_bytes() == before
    monkeypatch.undo()
    store.append({"cell_id": "a/T/id/1", "x": 2})  # space again: carries on cleanly
    assert [line["x"] for line in ResultsStore(tmp_path).lines()] == [1, 2]


def full_for(name: str):
    """An ``os.fsync`` that reports a full disk for files whose path contains ``name``."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            enospc()
        real(fd)

    return fsync


def test_a_full_disk_leaves_the_old_config_file(tmp_path, monkeypatch):
    write_atomic(tmp_path / "config.yaml", "a: 1\n")
    monkeypatch.setattr(os, "fsync", full_for("config.yaml"))
    with pytest.raises(OSError, match=r"No space left on device; config.yaml is unchanged"):
        write_atomic(tmp_path / "config.yaml", "a: 2\n")
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.smoke
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(trained, tmp_path, monkeypatch):
    run, agent = trained
    out = tmp_path / "model"
    shutil.copytree(run / "models" / "CupCarry" / "state", out)
    saved = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setattr(os, "fsync", full_for("checkpoint.pt"))
    data = run / "data" / "CupCarry" / "train"
    with pytest.raises(OSError, match="No space left"):
        training.train_world_model(agent, data, out, steps=20, progress=False, log_every=5)
    for name in ("checkpoint.pt", "model.pt"):
        assert (out / name).read_bytes() == saved[name]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    summary = training.train_world_model(agent, data, out, steps=20, progress=False, log_every=5)
    assert summary["step"] == 20  # resumed from the checkpoint that survived


@pytest.mark.smoke
def test_a_full_disk_while_rewriting_a_dataset_keeps_the_old_one(trained, tmp_path, monkeypatch):
    run, _ = trained
    data = tmp_path / "data"
    shutil.copytree(run / "data" / "CupCarry" / "train", data)
    old = Dataset.load(data)
    monkeypatch.setattr(os, "fsync", full_for("manifest.json"))  # the shards fit, then full
    with pytest.raises(OSError, match="No space left"):
        collect("embodied/CupCarry-v0", data, episodes=2, obs_modes=("state",), progress=False)
    again = Dataset.load(data)
    assert again.manifest == old.manifest and len(again) == 3
    assert sorted(p.name for p in data.iterdir()) == [MANIFEST, "shard-00000.npz"]


def test_eval_into_a_results_path_that_is_a_directory_fails_in_one_line(tmp_path):
    (tmp_path / "results.jsonl").mkdir()
    args = [f"run_dir={tmp_path}", "agents=[scripted]", "splits=[id]", "episodes=1", "seeds=[0]"]
    done = app("eval", *args, "video.clips=0", "progress=false", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("embodied-eval: error: [Errno 21]")
    assert "results.jsonl" in done.stderr and "Traceback" not in done.stderr


def test_a_model_trained_on_an_older_version_of_its_task_is_refused(tmp_path):
    """CupPush v1 pays for another hand position than v0 did: a v0 model's reward head
    predicts the old reward, so planning with it would quietly chase the old goal."""
    record = {"task": "CupPush", "split": "train", "family": "state"}
    write_trained_on(tmp_path, {**record, "env_id": "embodied/CupPush-v0"})
    with pytest.raises(ValueError, match=r"trained on embodied/CupPush-v0 data; the task is now "):
        check_trained_on(tmp_path, "CupPush", {"name": "state"})
    write_trained_on(tmp_path, {**record, "env_id": "embodied/CupPush-v1"})
    check_trained_on(tmp_path, "CupPush", {"name": "state"})  # the current version passes
