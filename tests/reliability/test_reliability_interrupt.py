"""Ctrl-C and kill -9 in the middle of collect, train and eval, then a rerun.

Each app runs as a subprocess through its console entry point (``main``). For collect and train
a small patch slows one function and leaves a marker file each time it is called, so the signal
lands at a known point (mid-collection, mid-write, between checkpoints) instead of wherever the
machine's load puts it. The rerun's artefacts must equal an uninterrupted run's, and nothing
half-written may ever be read. A disk that fills up mid-grid is the same story.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from app_configs import app_config, scripted_grid

from embodied.agents.state_model import StateModel
from embodied.apps import collect as collect_app
from embodied.apps import train as train_app
from embodied.apps.eval import evaluate
from embodied.dataset import Dataset, DatasetError

SLOW = """
import importlib, pathlib, sys, time
module, _, path = {target!r}.partition(":")
owner = importlib.import_module(module)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
real = getattr(owner, name)
marks = pathlib.Path({marks!r})
def slowed(*args, **kwargs):
    (marks / f"{{len(list(marks.iterdir()))}}").touch()
    time.sleep({delay})
    return real(*args, **kwargs)
setattr(owner, name, slowed)
sys.argv[0] = "embodied-{app}"
from embodied.apps.{app} import main
main()
"""
COLLECT = [
    "preset=smoke",
    "episodes=4",
    "obs_modes=[state,pixels]",
    "+env.kwargs.max_episode_steps=25",
    "progress=false",
]
TRAIN = [
    "preset=smoke",
    "steps=60",
    "agent=state",
    "agent.world_model.members=2",
    "agent.world_model.hidden=[16]",
    "agent.world_model.head_hidden=[16]",
    "agent.world_model.batch_size=16",
    "agent.trainer.checkpoint_every=20",
    "agent.trainer.log_every=5",
    "progress=false",
]
EVAL = scripted_grid("[id,ood-cup_mass-3,look-cup_colour]")


def start(app: str, args: list[str], cwd: Path, slow: str, marks: Path, delay: float):
    """The app's console entry point with ``slow`` (module:attr) delayed and marked per call."""
    marks.mkdir()
    code = SLOW.format(target=slow, marks=str(marks), delay=delay, app=app)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_when(proc: subprocess.Popen, ready, sig: int) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds; the exit code and everything the app printed."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def check_clean_stop(code: int, printed: str, sig: int) -> None:
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130 and "interrupted" in printed, printed
        assert "Traceback" not in printed, printed


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def datasets_equal(a: Dataset, b: Dataset) -> None:
    assert a.manifest == b.manifest
    for key in a.flat:
        np.testing.assert_array_equal(a.flat[key], b.flat[key])


# ------------------------------------------------------------------ collect
@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "reference"
    collect_app.write(app_config("collect", *COLLECT, f"out_dir={out}"))
    return Dataset.load(out)


@pytest.mark.parametrize(
    ("slow", "calls", "sig"),
    [
        ("embodied.collect:run_episode", 2, signal.SIGINT),  # in the second episode
        ("numpy:savez_compressed", 1, signal.SIGKILL),  # writing the shard
        ("numpy:savez_compressed", 1, signal.SIGINT),
    ],
    ids=["SIGINT-mid-collection", "SIGKILL-mid-write", "SIGINT-mid-write"],
)
def test_collect_interrupted_then_rerun_equals_an_uninterrupted_run(
    tmp_path, collected, slow, calls, sig
):
    out = tmp_path / "data"
    marks = tmp_path / "marks"
    proc = start("collect", [*COLLECT, f"out_dir={out}"], tmp_path, slow, marks, delay=0.5)
    code, printed = signal_when(proc, lambda: len(list(marks.iterdir())) >= calls, sig)
    check_clean_stop(code, printed, sig)
    with pytest.raises(DatasetError, match="no manifest.json|does not exist"):
        Dataset.load(out)  # never a half-written dataset
    if sig == signal.SIGINT:
        assert temp_files(tmp_path) == []
    collect_app.write(app_config("collect", *COLLECT, f"out_dir={out}"))
    datasets_equal(Dataset.load(out), collected)
    assert temp_files(out) == []  # the killed write's leftovers are gone too


# ------------------------------------------------------------------ train
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-data")
    collect_app.write(app_config("collect", *COLLECT, "obs_modes=[state]", f"out_dir={out}"))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset_dir):
    out = tmp_path_factory.mktemp("train") / "reference"
    train_app.train(app_config("train", *TRAIN, f"data_dir={dataset_dir}", f"out_dir={out}"))
    return predictions(out, dataset_dir)


def predictions(model_dir: Path, data: Path) -> torch.Tensor:
    model = StateModel.load(model_dir / "model.pt")
    tr = Dataset.load(data).transitions("state")
    z, reward, fail = model.step(
        torch.as_tensor(tr["obs"][:32]), torch.as_tensor(tr["action"][:32])
    )
    return torch.cat([z, reward[:, None], fail[:, None]], dim=1)


@pytest.mark.smoke
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_train_interrupted_between_checkpoints_then_rerun_equals_an_uninterrupted_run(
    tmp_path, dataset_dir, reference, sig
):
    out, marks = tmp_path / "model", tmp_path / "marks"
    args = [*TRAIN, f"data_dir={dataset_dir}", f"out_dir={out}"]
    proc = start("train", args, tmp_path, "embodied.agents.state_model:StateModel.fit", marks, 0.2)
    # past the checkpoint at step 20, before the one at step 40 (fit runs 5 steps a call)
    code, printed = signal_when(proc, lambda: len(list(marks.iterdir())) >= 6, sig)
    check_clean_stop(code, printed, sig)
    if sig == signal.SIGINT:  # a graceful stop: a checkpoint where it stopped, then exit
        assert "state: interrupted at step 30/60" in printed
    assert (out / "checkpoint.pt").is_file() and (out / "model.pt").is_file()
    StateModel.load(out / "model.pt")  # what was left is complete, never half a file

    train_app.train(app_config("train", *TRAIN, f"data_dir={dataset_dir}", f"out_dir={out}"))
    torch.testing.assert_close(predictions(out, dataset_dir), reference, rtol=0, atol=0)
    steps = [line.split(",")[0] for line in (out / "losses.csv").read_text().splitlines()]
    assert steps == ["step", *[str(s) for s in range(5, 61, 5)]]  # no row lost or repeated
    assert temp_files(out) == []


# ------------------------------------------------------------------ eval
def results(run_dir: Path) -> dict[str, dict]:
    lines = [json.loads(r) for r in (run_dir / "results.jsonl").read_text().splitlines()]
    ids = [line["cell_id"] for line in lines]
    assert len(ids) == len(set(ids)), "a cell written twice"
    return {line.pop("cell_id"): {k: v for k, v in line.items() if k != "wall_s"} for line in lines}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval-reference")
    evaluate(app_config("eval", *EVAL, f"run_dir={run_dir}", "executor.workers=1"))
    return results(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_eval_on_a_pool_interrupted_then_rerun_equals_an_uninterrupted_run(
    tmp_path, evaluated, sig
):
    path = tmp_path / "results.jsonl"
    cmd = [str(Path(sys.executable).with_name("embodied-eval")), *EVAL, f"run_dir={tmp_path}"]
    proc = subprocess.Popen(
        [*cmd, "executor.workers=2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # communicate() returning means every worker closed its pipes: none outlived the parent
    code, printed = signal_when(proc, lambda: path.exists() and b"\n" in path.read_bytes(), sig)
    check_clean_stop(code, printed, sig)
    finished = results(tmp_path)
    assert 1 <= len(finished) < len(evaluated)
    assert all(evaluated[cell] == line for cell, line in finished.items())

    evaluate(app_config("eval", *EVAL, f"run_dir={tmp_path}", "executor.workers=1"))
    assert results(tmp_path) == evaluated
    assert temp_files(tmp_path) == []


def test_a_full_disk_mid_grid_keeps_the_finished_cells_and_a_rerun_completes(
    tmp_path, evaluated, monkeypatch
):
    real_write = os.write

    def full_at_the_fourth_cell(fd: int, data) -> int:
        if b"/ood-cup_mass-3/1" in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_at_the_fourth_cell)
    cfg = app_config("eval", *EVAL, f"run_dir={tmp_path}", "executor.workers=1")
    with pytest.raises(OSError, match=r"the 3 finished cells in it are intact"):
        evaluate(cfg)
    assert results(tmp_path) == {k: v for k, v in list(evaluated.items())[:3]}
    monkeypatch.undo()
    evaluate(cfg)
    assert results(tmp_path) == evaluated


def test_the_interrupt_tests_pass_from_a_parent_that_ignores_sigint(tmp_path):
    """`make test &` and nohup start pytest with SIGINT ignored; the tests must not care."""

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    test = f"{__file__}::test_collect_interrupted_then_rerun_equals_an_uninterrupted_run"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            test + "[SIGINT-mid-collection]",
        ],
        cwd=tmp_path,
        preexec_fn=ignore_sigint,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
