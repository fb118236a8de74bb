"""LeRobot datasets both ways: collect -> export -> read back gives the same transitions, bit for
bit (frames included: they are stored losslessly), training on the export equals training on
the source, and LeRobot's own loader opens the export (where LeRobot is installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from embodied.collect import collect  # noqa: E402
from embodied.dataset import STEP_KEYS, Dataset, DatasetError, read_manifest  # noqa: E402
from embodied.lerobot import EPISODES_FILE, IMAGE, decode, export  # noqa: E402

ENV = "embodied/CupCarry-v0"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    src, out = root / "ours", root / "lerobot"
    collect(ENV, src, episodes=4, split="ood-cup_mass-3", seed=3, progress=False)
    export(src, out)
    return src, out


def test_round_trip_is_bit_for_bit(dirs):
    src, out = dirs
    ours, back = Dataset.load(src), Dataset.load(out, env_id=ENV)
    assert len(back) == len(ours) == 4
    assert back.num_transitions == ours.num_transitions
    for a, b in zip(ours.episodes, back.episodes, strict=True):
        for key in (*STEP_KEYS, "state", "pixels"):
            x, y = getattr(a, key), getattr(b, key)
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert np.array_equal(x, y), key
        assert (a.seed, a.physics, a.meta) == (b.seed, b.physics, b.meta)
    # the flat transitions a trainer samples are the same arrays
    for key, value in ours.transitions("state").items():
        assert np.array_equal(value, back.transitions("state")[key]), key
    manifest = read_manifest(out, ENV)
    assert manifest["state_labels"] == ours.state_labels
    assert manifest["split"] == "ood-cup_mass-3" and manifest["task"] == "CupCarry"
    assert manifest["transitions"] == ours.num_transitions


def test_episode_metadata_carries_physics_split_and_shift(dirs):
    src, out = dirs
    rows = pq.read_table(out / EPISODES_FILE).to_pydict()
    ours = Dataset.load(src, obs_modes=["state"])
    assert rows["embodied/split"] == ["ood-cup_mass-3"] * 4
    assert rows["embodied/shift"] == ["cup_mass"] * 4 and rows["embodied/severity"] == [3] * 4
    assert rows["embodied/seed"] == [e.seed for e in ours.episodes]
    for i, e in enumerate(ours.episodes):
        assert {k: rows[f"physics/{k}"][i] for k in e.physics} == e.physics
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_frames"] == ours.num_transitions + len(ours)
    assert info["features"]["observation.state"]["names"] == ours.state_labels
    frames = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert frames.num_rows == info["total_frames"]
    assert np.array_equal(frames.column("index").to_numpy(), np.arange(frames.num_rows))
    # every frame of the video decodes, in episode order
    video = decode(out / "videos" / IMAGE / "chunk-000/file-000.mp4")
    assert len(video) == info["total_frames"]


def test_training_on_the_export_equals_training_on_the_source(dirs, tmp_path):
    from omegaconf import OmegaConf

    from embodied.agents.training import train_world_model
    from embodied.apps.eval import load_agents

    src, out = dirs
    agent = OmegaConf.create(load_agents(["state"], OmegaConf.create())["state"])
    agent.world_model.update(members=2, hidden=[16], head_hidden=[16], batch_size=16)
    logs = []
    for data in (src, out):
        where = tmp_path / data.name
        train_world_model(agent, data, where, steps=10, log_every=5, progress=False, env_id=ENV)
        rows = (where / "losses.csv").read_text().splitlines()
        logs.append([",".join(c for i, c in enumerate(r.split(",")) if i != 1) for r in rows])
    assert len(logs[0]) == 3 and logs[0] == logs[1]  # header + 2 chunks, wall_s left out


def test_lossy_video_and_bad_input(dirs, tmp_path):
    src, _ = dirs
    lossy = tmp_path / "lossy"
    export(src, lossy, crf=23)
    ours, back = Dataset.load(src), Dataset.load(lossy)
    diff = np.abs(ours.flat["pixels"].astype(int) - back.flat["pixels"].astype(int))
    assert 0 < diff.mean() < 8  # lossy, but the same frames
    assert np.array_equal(ours.flat["state"], back.flat["state"])
    with pytest.raises(DatasetError, match="CupCarry"):
        Dataset.load(lossy, env_id="embodied/Reach-v0")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        export(src, taken)
    (lossy / "videos" / IMAGE / "chunk-000/file-000.mp4").write_bytes(b"")
    with pytest.raises((DatasetError, OSError, RuntimeError, StopIteration)):
        Dataset.load(lossy)


CHECK = textwrap.dedent(
    """
    import os, sys, json
    import numpy as np
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    root, expected = sys.argv[1], np.load(sys.argv[2])
    ds = LeRobotDataset("embodied-ood/test", root=root, video_backend="pyav")
    assert ds.num_episodes == int(expected["episodes"]), ds.num_episodes
    assert len(ds) == len(expected["state"]), len(ds)
    for i in range(len(ds)):
        item = ds[i]
        assert np.array_equal(item["observation.state"].numpy(), expected["state"][i]), i
        assert np.array_equal(item["action"].numpy(), expected["action"][i]), i
        assert item["next.reward"].item() == expected["reward"][i], i
        frame = np.round(item["observation.image"].numpy().transpose(1, 2, 0) * 255)
        assert np.array_equal(frame.astype(np.uint8), expected["pixels"][i]), i
    meta = ds.meta.episodes
    print(json.dumps({"frames": len(ds), "split": meta["embodied/split"][0],
                      "cup_mass": meta["physics/cup_mass"][0]}))
    """
)


def lerobot_python() -> str | None:
    """An interpreter with LeRobot: this one, or $LEROBOT_PYTHON (LeRobot pins another torch,
    so it lives in an environment of its own)."""
    try:
        import lerobot  # noqa: F401

        return sys.executable
    except ImportError:
        path = os.environ.get("LEROBOT_PYTHON")
        return path if path and shutil.which(path) else None


def test_lerobot_loader_opens_the_export(dirs, tmp_path):
    python = lerobot_python()
    if python is None:
        pytest.skip("LeRobot is not installed here; set LEROBOT_PYTHON to a python that has it")
    src, out = dirs
    ours = Dataset.load(src)
    rows = [np.concatenate([e.action, [[0, 0, 0, e.action[-1, 3]]]]) for e in ours.episodes]
    rewards = [np.append(e.reward, 0) for e in ours.episodes]
    np.savez(
        tmp_path / "expected.npz",
        episodes=len(ours),
        state=ours.flat["state"],
        pixels=ours.flat["pixels"],
        action=np.concatenate(rows).astype(np.float32),
        reward=np.concatenate(rewards).astype(np.float32),
    )
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [python, str(script), str(out), str(tmp_path / "expected.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["frames"] == len(ours.flat["state"])
    assert seen["split"] == "ood-cup_mass-3"
    assert seen["cup_mass"] == ours.episodes[0].physics["cup_mass"]


def test_the_export_app(dirs, tmp_path):
    src, _ = dirs
    app = Path(sys.executable).parent / "embodied-export"
    out = tmp_path / "app"
    done = subprocess.run(
        [str(app), f"src={src}", f"out={out}", "repo_id=me/carry"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 episodes" in done.stdout and "lossless" in done.stdout
    assert json.loads((out / "meta/info.json").read_text())["repo_id"] == "me/carry"
    missing = subprocess.run([str(app), f"src={tmp_path / 'none'}"], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
