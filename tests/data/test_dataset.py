"""The dataset format: round trip, sampling windows, and clear errors for broken directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embodied.dataset import (
    FORMAT,
    Dataset,
    DatasetError,
    Episode,
    append_dataset,
    read_manifest,
    write_dataset,
)


def make_episodes(n: int = 5, dim: int = 6, size: int = 8, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        t = 10 + i
        dropped = np.zeros(t, bool)
        dropped[-1] = i % 2 == 1
        episodes.append(
            Episode(
                state=rng.normal(size=(t + 1, dim)),
                pixels=rng.integers(0, 256, (t + 1, size, size, 3)),
                action=rng.uniform(-1, 1, (t, 4)),
                reward=rng.normal(size=t),
                dropped=dropped,
                success=np.zeros(t, bool),
                terminated=dropped.copy(),
                physics={"cup_mass": np.float64(0.2 + i)},
                seed=100 + i,
                meta={"style": "cautious"},
            )
        )
    return episodes


def write(path: Path, episodes: list[Episode], **kw) -> dict:
    args = dict(
        env_id="embodied/Fake-v0",
        task="Fake",
        split="train",
        obs_modes=("state", "pixels"),
        image_size=8,
        state_labels=[f"s{i}" for i in range(6)],
        episodes_per_shard=2,
    )
    args.update(kw)
    return write_dataset(path, episodes, **args)


def test_round_trip_keeps_every_array_and_the_manifest(tmp_path):
    episodes = make_episodes()
    manifest = write(tmp_path, episodes)
    assert manifest["format"] == FORMAT
    assert len(manifest["shards"]) == 3
    ds = Dataset.load(tmp_path)
    assert len(ds) == 5 and ds.num_transitions == sum(e.length for e in episodes)
    assert ds.manifest["seeds"] == [100, 101, 102, 103, 104]
    assert ds.manifest["episode_info"][1]["dropped"] is True
    for a, b in zip(episodes, ds.episodes, strict=True):
        for key in ("state", "pixels", "action", "reward", "dropped", "terminated"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert b.physics == a.physics and b.seed == a.seed and b.meta == {"style": "cautious"}
    assert ds.state_index("s2", "s5") == [2, 5]
    only_state = Dataset.load(tmp_path, obs_modes=("state",))
    assert only_state.obs_modes == ("state",) and only_state.episodes[0].pixels is None


def test_transitions_and_sequences_stay_inside_episodes(tmp_path):
    episodes = make_episodes()
    write(tmp_path, episodes)
    ds = Dataset.load(tmp_path)
    tr = ds.transitions("state")
    first = episodes[1]
    rows = slice(int(ds.act_start[1]), int(ds.act_start[1] + first.length))
    np.testing.assert_array_equal(tr["obs"][rows], first.state[:-1])
    np.testing.assert_array_equal(tr["next_obs"][rows], first.state[1:])
    rng = np.random.default_rng(0)
    seq = ds.sample_sequences(64, 12, rng, modes=("state", "pixels"))
    assert seq["state"].shape == (64, 13, 6) and seq["pixels"].shape == (64, 13, 8, 8, 3)
    assert seq["action"].shape == (64, 12, 4)
    # Every window is a contiguous piece of one episode: the first 10-step episode can't hold 12.
    for b in range(64):
        hits = [
            (e, s)
            for e in episodes
            for s in range(e.length - 11)
            if np.array_equal(e.state[s : s + 13], seq["state"][b])
        ]
        assert len(hits) == 1
        e, s = hits[0]
        np.testing.assert_array_equal(e.action[s : s + 12], seq["action"][b])
    assert not any(np.array_equal(episodes[0].state[:13], w) for w in seq["state"])
    with pytest.raises(DatasetError, match="no episode has 40 steps"):
        ds.sample_sequences(2, 40, rng)
    batch = ds.sample_transitions(32, rng, modes=("state", "pixels"))
    assert batch["next_pixels"].shape == (32, 8, 8, 3) and batch["reward"].shape == (32,)


def test_rewrite_replaces_old_shards(tmp_path):
    write(tmp_path, make_episodes(5))
    write(tmp_path, make_episodes(2, seed=1))
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.npz"]
    assert len(Dataset.load(tmp_path)) == 2
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_dir", "does not exist"),
        ("no_manifest", "no manifest.json"),
        ("bad_json", "not valid JSON"),
        ("foreign", "expected 'embodied-dataset/1'"),
        ("truncated_shard", "truncated"),
        ("missing_shard", "is missing"),
        ("garbage_shard", "cannot read shard"),
        ("empty", "holds no episodes"),
    ],
)
def test_broken_directories_fail_naming_the_problem(tmp_path, damage, message):
    root = tmp_path / "data"
    write(root, make_episodes(3))
    mpath = root / "manifest.json"
    shard = root / "shard-00000.npz"
    if damage == "missing_dir":
        root = tmp_path / "nowhere"
    elif damage == "no_manifest":
        mpath.unlink()
    elif damage == "bad_json":
        mpath.write_text(mpath.read_text()[:50])
    elif damage == "foreign":
        mpath.write_text(json.dumps({"format": "something-else/3"}))
    elif damage == "truncated_shard":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "missing_shard":
        shard.unlink()
    elif damage == "garbage_shard":
        size = shard.stat().st_size
        shard.write_bytes(b"x" * size)
    elif damage == "empty":
        manifest = read_manifest(root)
        mpath.write_text(json.dumps(dict(manifest, episodes=0, shards=[], episode_info=[])))
    with pytest.raises(DatasetError, match=message):
        Dataset.load(root)


def test_bad_input_is_refused_with_choices(tmp_path):
    with pytest.raises(DatasetError, match="choose from"):
        write(tmp_path, make_episodes(1), obs_modes=("depth",))
    with pytest.raises(DatasetError, match="no episodes"):
        write(tmp_path, [])
    write(tmp_path, make_episodes(1), obs_modes=("state",))
    with pytest.raises(DatasetError, match="holds \\['state'\\]"):
        Dataset.load(tmp_path, obs_modes=("pixels",))
    with pytest.raises(DatasetError, match="T\\+1"):
        Episode(
            state=np.zeros((3, 2)),
            pixels=None,
            action=np.zeros((3, 4)),
            reward=np.zeros(3),
            dropped=np.zeros(3),
            success=np.zeros(3),
            terminated=np.zeros(3),
            physics={},
            seed=0,
        )


def test_collect_writes_scripted_random_and_perturbed_episodes(tmp_path):
    from embodied.collect import collect

    manifest = collect(
        "embodied/CupCarry-v0",
        tmp_path,
        episodes=6,
        obs_modes=("state", "pixels"),
        image_size=16,
        random_fraction=0.34,
        grip_fraction=1.0,
        progress=False,
    )
    ds = Dataset.load(tmp_path)
    assert ds.manifest["env_id"] == "embodied/CupCarry-v0" and ds.manifest["task"] == "CupCarry"
    assert manifest["episodes"] == len(ds) == 6 and len(set(ds.manifest["seeds"])) == 6
    styles = [e.meta["style"] for e in ds.episodes]
    assert sum(s.startswith("random") for s in styles) == 2
    assert all(e.meta["grip_perturbed"] for e in ds.episodes if not e.meta["style"].startswith("r"))
    assert ds.episodes[0].pixels.shape[1:] == (16, 16, 3)
    assert "cup_x" in ds.state_labels and len(ds.state_labels) == ds.episodes[0].state.shape[1]
    assert all(e.physics for e in ds.episodes)  # the physics values in force, per episode
    for e in ds.episodes:  # an episode ends where the env ended it: a drop, success or time limit
        assert e.terminated[:-1].sum() == 0
    with pytest.raises(ValueError, match="choose from"):
        collect("embodied/CupCarry-v0", tmp_path / "x", 1, obs_modes=("depth",), progress=False)


def test_append_adds_shards_with_provenance_and_leaves_the_old_ones(tmp_path):
    episodes = make_episodes(5)
    write(tmp_path, episodes[:3])
    before = {p.name: p.read_bytes() for p in tmp_path.glob("shard-*.npz")}
    extra = make_episodes(2, seed=1)
    for e in extra:
        e.meta = {"source": "rounds", "round": 1, "agent": "state", "failure": "tipped"}
    manifest = append_dataset(tmp_path, extra)
    assert {
        p.name: p.read_bytes() for p in tmp_path.glob("shard-*.npz") if p.name in before
    } == before
    ds = Dataset.load(tmp_path)
    assert len(ds) == 5 and manifest["episodes"] == 5
    assert (
        ds.num_transitions == manifest["transitions"] == sum(e.length for e in episodes[:3] + extra)
    )
    assert manifest["seeds"] == [100, 101, 102, 100, 101]
    assert [e["meta"].get("round") for e in manifest["episode_info"]] == [None] * 3 + [1, 1]
    assert manifest["episode_info"][4]["meta"]["failure"] == "tipped"
    assert manifest["episode_info"][4]["dropped"] is True
    np.testing.assert_array_equal(ds.episodes[4].state, extra[1].state.astype(np.float32))


def test_append_refuses_missing_modes_and_a_failed_append_changes_nothing(tmp_path, monkeypatch):
    write(tmp_path, make_episodes(3))
    manifest = (tmp_path / "manifest.json").read_text()
    bare = make_episodes(1)[0]
    bare.pixels = None
    with pytest.raises(DatasetError, match="lacks"):
        append_dataset(tmp_path, [bare])
    with pytest.raises(DatasetError, match="no episodes"):
        append_dataset(tmp_path, [])
    calls = []

    def failing(path, arrays):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    monkeypatch.setattr("embodied.dataset._savez", failing)
    with pytest.raises(OSError, match="No space"):
        append_dataset(tmp_path, make_episodes(4))  # two shards: the second write fails
    assert (tmp_path / "manifest.json").read_text() == manifest
    assert not list(tmp_path.glob(".*.tmp")) and len(Dataset.load(tmp_path)) == 3
