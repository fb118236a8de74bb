"""The clips stage: the clip files a grid's cells read, written once before them; cells only read.

The world-model agent is the frozen fake of tests/eval/test_videos.py (it declares a
``world_model``); the scripted controller declares none and needs no clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_videos import AGENTS

from embodied import clips as clips_module
from embodied.clips import ClipSet, clip_sets, collect_clips, collect_stage
from embodied.evaluate import EvalSettings, cell_seeds, heldout_path, probe_path, run_cell
from embodied.grid import Cell, expand

SCRIPTED = {
    "name": "scripted",
    "kind": "scripted",
    "family": "scripted",
    "obs_mode": "state",
    "style": "cautious",
    "noise": 0.0,
    "trainer": None,
    "policy": {"_target_": "embodied.envs.scripted.make_policy", "_partial_": True},
}
SPLITS = ["id", "ood-cup_mass-3"]
CELLS = expand(["frozen", "scripted"], ["CupCarry"], SPLITS, [0, 1])


def settings(tmp_path: Path, **kw) -> EvalSettings:
    base = dict(
        agents={"frozen": AGENTS["frozen"], "scripted": SCRIPTED},
        run_dir=str(tmp_path),
        episodes=1,
        video_clips=2,
        video_horizon=4,
        probe_clips=3,
        env_kwargs={"max_episode_steps": 10},
    )
    return EvalSettings(**{**base, **kw})


def files(run_dir: Path) -> dict[str, int]:
    """Every file under heldout/ (temporary ones too), relative path -> mtime in ns."""
    root = run_dir / "heldout"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_the_stage_writes_exactly_the_clips_the_grid_reads(tmp_path):
    s = settings(tmp_path)
    collected = collect_stage(CELLS, s, progress=False)
    heldout = {f"CupCarry/{split}/seed{seed}-c2-h4-s64.npz" for split in SPLITS for seed in (0, 1)}
    assert set(files(tmp_path)) == heldout | {"CupCarry/train/probe-c3-h4-s64.npz"}
    assert len(collected) == 5  # one per (task, split, seed) of the world model, one probe set
    # the clips a cell collected for itself before there was a stage: same seeds, same arrays
    cell = Cell("frozen", "CupCarry", "ood-cup_mass-3", 1)
    candidates = cell_seeds(cell.seed, s.episodes, s.video_clips).clips
    direct = collect_clips(cell.task, cell.split, s, candidates, s.video_clips)
    written = load(heldout_path(s, cell.task, cell.split, cell.seed))
    assert set(written) == set(direct) == {"seed", "state", "pixels", "action", "cup_index"}
    for key, value in direct.items():
        np.testing.assert_array_equal(written[key], value)
    assert (
        written["state"].shape[:2] == (2, 5) and load(probe_path(s, "CupCarry"))["seed"].size == 3
    )


@pytest.mark.parametrize(
    ("agents", "kw", "expected"),
    [
        (["scripted"], {}, []),  # no world model: no clips
        (["planning"], {"probe_clips": 0}, [ClipSet("CupCarry", "id", 0)]),  # a planner: a model
        (["frozen"], {"video_clips": 0}, []),  # no video metrics asked for
        (["frozen"], {"probe_clips": 0}, [ClipSet("CupCarry", "id", 0)]),
        (
            ["frozen", "scripted"],
            {},
            [ClipSet("CupCarry", "id", 0), ClipSet("CupCarry", "train")],
        ),
    ],
)
def test_only_world_model_cells_need_clips(tmp_path, agents, kw, expected):
    cells = expand(agents, ["CupCarry"], ["id"], [0])
    planning = {**SCRIPTED, "name": "planning", "planner": {"horizon": 5}}
    known = {"frozen": AGENTS["frozen"], "scripted": SCRIPTED, "planning": planning}
    assert clip_sets(cells, settings(tmp_path, agents=known, **kw)) == expected


def test_a_cell_whose_clips_are_missing_fails_naming_the_stage(tmp_path):
    s = settings(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no clips at .*seed0-c2-h4-s64\.npz: the clips"):
        run_cell(Cell("frozen", "CupCarry", "id", 0), s)
    assert not (tmp_path / "heldout").exists()  # and it collected nothing itself
    # a learned latent whose probe clips are missing fails the same way (held-out clips there)
    mix = {**AGENTS["frozen"], "world_model": {"_target_": "test_probe_cells.FrozenMix"}}
    s = settings(tmp_path, agents={"mix": mix})
    held_out_only = settings(tmp_path, agents={"mix": mix}, probe_clips=0)
    assert len(collect_stage([Cell("mix", "CupCarry", "id", 0)], held_out_only)) == 1
    with pytest.raises(FileNotFoundError, match=r"probe-c3-h4-s64\.npz: the clips stage"):
        run_cell(Cell("mix", "CupCarry", "id", 0), s)


def test_a_second_run_reuses_every_file_and_collects_nothing(tmp_path, monkeypatch):
    s = settings(tmp_path)
    collect_stage(CELLS, s, progress=False)
    before = files(tmp_path)

    def refuse(*args):
        raise AssertionError("recollected a clip file that was there")

    monkeypatch.setattr(clips_module, "collect_clips", refuse)
    assert collect_stage(CELLS, s, progress=False) == []
    assert files(tmp_path) == before  # same files, not rewritten


def test_an_interrupted_stage_keeps_whole_files_and_a_rerun_collects_the_rest(
    tmp_path, monkeypatch
):
    """A kill mid-write leaves at most a temporary file beside the target, which no reader
    takes for the clips: the rerun collects that set again and only it."""
    s = settings(tmp_path)
    wanted = clip_sets(CELLS, s)
    collect, calls = clips_module.collect_clips, []

    def interrupt_the_second(task, split, *args):
        calls.append(split)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return collect(task, split, *args)

    monkeypatch.setattr(clips_module, "collect_clips", interrupt_the_second)
    with pytest.raises(KeyboardInterrupt):
        collect_stage(CELLS, s, progress=False)
    torn = wanted[1].path(s)
    leftover = torn.parent / f".{torn.name}.x1y2.tmp"  # what a kill inside write_atomic leaves
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    assert set(files(tmp_path)) == {
        str(wanted[0].path(s).relative_to(tmp_path / "heldout")),
        str(leftover.relative_to(tmp_path / "heldout")),
    }
    monkeypatch.setattr(clips_module, "collect_clips", collect)
    assert collect_stage(CELLS, s, progress=False) == wanted[1:]
    for clip_set in wanted:
        assert load(clip_set.path(s))["action"].shape[1] == 4
