"""The clips stage: the clips a grid's world models are scored on, collected before its cells.

A cell whose agent plans with a world model (its config has a ``world_model`` or a
``planner``) predicts
``video_clips`` held-out clips of its (task, split, seed) open loop for the video metrics; a
learned latent is read by state probes fitted on ``probe_clips`` clips of the task's ``train``
split, the same for every cell of the task. Each such set is one file, at the path the cell
reads it from (``embodied.evaluate.heldout_path`` and ``probe_path``). This stage writes every
file the grid's cells will read, each once and atomically, before any cell starts: a rerun
reuses the files there and never sees half of one, and a cell only reads. The sets run as
tasks of the grid's executor, so a local pool or a Ray cluster collects them in parallel.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from tqdm.auto import tqdm

from embodied.atomic import write_atomic
from embodied.evaluate import (
    CLIP_SPARES,
    EvalSettings,
    cell_seeds,
    heldout_path,
    make_env,
    probe_path,
    read_clips,
)
from embodied.executors import Executor, LocalExecutor
from embodied.grid import Cell
from embodied.rollout import Step, rollout

CUP_LABELS = ("cup_x", "cup_y", "cup_z")
DATA_STYLE, DATA_NOISE = "cautious", 0.1  # the scripted controller that records the clips
PROBE_STREAM = 3  # cell_seeds spawns streams 0-2 of a seed; the probes' clips draw stream 3
# an agent config with either has a world model to score: the configs' own declare it, every
# planning agent takes a planner (one passed in as an object to embodied.evaluate keeps that)
MODEL_KEYS = ("world_model", "planner")


@dataclass(frozen=True)
class ClipSet:
    """One clip file: the held-out clips of (task, split, seed), or, with no seed, the task's
    probe clips (split ``train``, seeds of no cell's)."""

    task: str
    split: str
    seed: int | None = None

    def __str__(self) -> str:
        if self.seed is None:
            return f"probe clips {self.task}/{self.split}"
        return f"clips {self.task}/{self.split}/{self.seed}"

    def path(self, settings: EvalSettings) -> Path:
        if self.seed is None:
            return probe_path(settings, self.task)
        return heldout_path(settings, self.task, self.split, self.seed)

    def seeds(self, settings: EvalSettings) -> tuple[list[int], int]:
        """(candidate seeds in order of use, clips wanted): a held-out set takes its cell
        seed's clip stream, so every agent of the (task, split, seed) meets the same clips."""
        if self.seed is None:
            count = settings.probe_clips
            stream = np.random.SeedSequence(0, spawn_key=(PROBE_STREAM,))
            return [int(s) for s in stream.generate_state(CLIP_SPARES * count)], count
        return cell_seeds(self.seed, 0, settings.video_clips).clips, settings.video_clips


def clip_sets(cells: Sequence[Cell], settings: EvalSettings) -> list[ClipSet]:
    """The clip files ``cells`` read, each once, in grid order: the held-out clips of every
    (task, split, seed) that has a world-model agent, and the probe clips of each such task.

    Whether a model's latent is read exactly, with no probe, shows only once it is built, so
    every task with a world-model agent gets its probe clips when ``probe_clips`` asks for them.
    """
    if settings.video_clips == 0 or settings.video_horizon == 0:
        return []
    planned = [c for c in cells if set(MODEL_KEYS) & set(settings.agents.get(c.agent, {}))]
    heldout = [ClipSet(c.task, c.split, c.seed) for c in planned]
    probes = [ClipSet(c.task, "train") for c in planned] if settings.probe_clips else []
    return list(dict.fromkeys([*heldout, *probes]))


def collect_stage(
    cells: Sequence[Cell],
    settings: EvalSettings,
    executor: Executor | None = None,
    progress: bool = True,
) -> list[ClipSet]:
    """Write every clip file ``cells`` read that is not there yet, on ``executor`` (default:
    this process); returns the sets collected now, the others being reused."""
    needed = clip_sets(cells, settings)
    todo = [s for s in needed if not s.path(settings).is_file()]
    if not todo:  # nothing to start (a Ray executor would start a runtime for nothing)
        return todo
    executor = executor or LocalExecutor(workers=1)
    with tqdm(
        total=len(needed), initial=len(needed) - len(todo), desc="clips", disable=not progress
    ) as bar:
        for clip_set, _ in executor.map(collect_set, todo, settings):
            bar.set_postfix_str(str(clip_set), refresh=False)
            bar.update()
    return todo


def probe_clips(task: str, settings: EvalSettings) -> dict[str, np.ndarray]:
    """The task's probe clips under ``settings.run_dir``, collected there first if missing: for
    a user outside the grid (the video agent fits its frame probe on them)."""
    clip_set = ClipSet(task, "train")
    if not clip_set.path(settings).is_file():
        collect_set(clip_set, settings)
    return read_clips(clip_set.path(settings))


def collect_set(clip_set: ClipSet, settings: EvalSettings) -> dict[str, Any]:
    """Collect one clip set and write its file atomically: a task of the stage's executor."""
    candidates, count = clip_set.seeds(settings)
    clips = collect_clips(clip_set.task, clip_set.split, settings, candidates, count)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **clips)
    path = clip_set.path(settings)
    write_atomic(path, buffer.getvalue())
    return {"path": str(path), "clips": count}


def collect_clips(
    task: str, split: str, settings: EvalSettings, candidates: list[int], count: int
) -> dict[str, np.ndarray]:
    """``count`` H-step clips of (task, split) by the scripted controller.

    The clip runs on through a drop (what happens next is still physics worth predicting); a
    clip whose simulation diverges is replaced by the next candidate seed.
    """
    env = make_env(task, split, settings, "state+pixels")
    horizon = settings.video_horizon
    out: dict[str, list] = {"seed": [], "state": [], "pixels": [], "action": []}
    try:
        for seed in candidates:
            if len(out["seed"]) == count:
                break
            states, frames, actions = record_clip(env, seed, horizon)
            if len(actions) == horizon:
                for key, value in zip(out, (seed, states, frames, actions), strict=True):
                    out[key].append(value)
        if len(out["seed"]) < count:
            raise RuntimeError(f"{task}/{split}: too many clips diverged")
        labels = list(env.unwrapped.state_labels)
    finally:
        env.close()
    clips = {k: np.asarray(v) for k, v in out.items()}
    clips["cup_index"] = np.asarray([labels.index(name) for name in CUP_LABELS])
    return clips


def record_clip(env: gymnasium.Env, seed: int, horizon: int) -> tuple[list, list, list]:
    """(states, frames, actions) of ``horizon`` steps of the scripted controller, run on the
    unwrapped env past the task's end (drop or success); cut short where the simulation
    diverges."""
    controller = env.unwrapped.scripted_policy(DATA_STYLE, noise=DATA_NOISE, seed=seed)
    states: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    actions: list[np.ndarray] = []

    def start(obs: Any, info: dict[str, Any]) -> None:
        states.append(obs["state"])
        frames.append(obs["pixels"])

    def record(step: Step) -> bool:
        if step.info["physics_error"]:
            return True
        actions.append(step.action)
        states.append(step.next_obs["state"])
        frames.append(step.next_obs["pixels"])
        return False

    rollout(env.unwrapped, controller, seed, record, horizon=horizon, on_reset=start)
    return states, frames, actions
