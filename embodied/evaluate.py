"""One cell of the grid: closed-loop episodes (embodied metrics) and open-loop video metrics.

``run_cell(cell, settings)`` returns the cell's results line: its names and split fields, the
``embodied`` and ``video`` metrics (with the state probes of embodied.metrics.probes), the
``videos`` it wrote and ``wall_s``. Every random draw
descends from the cell's seed through a numpy SeedSequence: the episode seeds, the policy's
seed and the seeds of the held-out clips (collected before the grid by the clips stage,
embodied.clips, and only read here). The episode and clip seeds depend on the seed alone,
not on the agent or the split, so every agent meets the same episodes, and a split differs
from ``id`` at the same seed only in what it shifts (paired draws). A look split changes only
what a camera sees, so an agent that observes no camera meets its ``id`` episodes exactly: the
first of those cells to finish stores the episodes' rows and the others reuse them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig, OmegaConf

import embodied
from embodied import videos
from embodied.atomic import write_atomic
from embodied.checkpoints import read_trained_on
from embodied.grid import Cell
from embodied.metrics.probes import (
    PROBE_KINDS,
    errors,
    exact_readout,
    open_loop_latents,
    probe_errors,
    simulator_states,
    state_targets,
)
from embodied.metrics.stats import wilson
from embodied.metrics.video import clip_metrics
from embodied.registration import env_id
from embodied.results import ResultLine
from embodied.rollout import Step, rollout
from embodied.shifts.splits import parse_split


@dataclass(frozen=True)
class EvalSettings:
    """Everything a cell needs besides its name; plain data, so it pickles to any worker."""

    agents: dict[str, dict[str, Any]]  # agent config name -> resolved agent config
    run_dir: str
    episodes: int
    video_clips: int = 0
    video_horizon: int = 0
    probe_clips: int = 0  # train-split clips the learned state probes are fitted on; 0: no probes
    image_size: int = 64
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoints: str | None = None  # <checkpoints>/<Task>/<agent name>/
    video_cells: tuple[str, ...] = ()  # fnmatch patterns of cell ids that get rollout videos
    videos_dir: str | None = None
    video_scale: int = 2
    video_fps: int = 20
    threads: int = 1  # torch (and simulators' rollout) threads per cell: one core each

    def __post_init__(self) -> None:
        """Counts a cell cannot run with fail here, before any cell starts."""
        for key, value, low in (
            ("episodes", self.episodes, 1),
            ("video.clips", self.video_clips, 0),
            ("video.horizon", self.video_horizon, 0),
            ("video.probe_clips", self.probe_clips, 0),
            ("videos.scale", self.video_scale, 1),
            ("videos.fps", self.video_fps, 1),
            ("threads", self.threads, 1),
        ):
            if value < low:
                raise ValueError(f"{key} must be an integer >= {low}; got {value}")


CLIP_SPARES = 4  # candidate clip seeds per clip: a clip whose simulation diverges is replaced


@dataclass(frozen=True)
class CellSeeds:
    episodes: list[int]
    policy: int
    clips: list[int]  # candidates, in order of use


def cell_seeds(seed: int, episodes: int, clips: int) -> CellSeeds:
    """Independent streams for episodes, the policy and held-out clips, from one seed."""
    ep, pol, clip = np.random.SeedSequence(seed).spawn(3)
    return CellSeeds(
        episodes=[int(s) for s in ep.generate_state(episodes)] if episodes else [],
        policy=int(pol.generate_state(1)[0]),
        clips=[int(s) for s in clip.generate_state(CLIP_SPARES * clips)] if clips else [],
    )


def wants_video(cell: Cell, settings: EvalSettings) -> bool:
    return settings.videos_dir is not None and any(
        fnmatch.fnmatchcase(cell.cell_id, p) for p in settings.video_cells
    )


def make_env(
    task: str, split: str, settings: EvalSettings, obs_mode: str, render: bool = False
) -> gymnasium.Env:
    return gymnasium.make(
        env_id(task),
        obs_mode=obs_mode,
        shift=split,
        image_size=settings.image_size,
        render_mode="rgb_array" if render else None,
        **settings.env_kwargs,
    )


def checkpoint_dir(settings: EvalSettings, task: str, agent_name: str) -> str | None:
    """``<checkpoints>/<Task>/<agent name>/`` when it exists, else None."""
    if settings.checkpoints is None:
        return None
    path = Path(settings.checkpoints) / task / agent_name
    return str(path) if path.is_dir() else None


def build_policy(agent_cfg: DictConfig, env: gymnasium.Env, ckpt: str | None, seed: int) -> Any:
    """The agent config's ``policy`` factory, called as the contract says."""
    from hydra.utils import instantiate

    factory = instantiate(agent_cfg.policy)
    return factory(agent_cfg=agent_cfg, checkpoint_dir=ckpt, env=env, seed=seed)


def seed_torch(seed: int, threads: int) -> None:
    """Torch's global generator (weight init, sampling) and a fixed thread count per cell."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- embodied
def run_episode(
    env: gymnasium.Env, policy: Any, seed: int, frames: list[np.ndarray] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One closed-loop episode; returns its per-episode row and its per-frame status flags.

    With ``frames`` given, the env's render of the reset and of every step is appended to it.
    """
    dt = 1.0 / env.metadata["render_fps"]  # gymnasium convention: render_fps = control rate
    flags: dict[str, list[bool]] = {
        "success": [False],
        "dropped": [False],
        "physics_error": [False],
    }
    total, steps, time_to_success = 0.0, 0, None

    def record(step: Step) -> None:
        nonlocal total, steps, time_to_success
        total += step.reward
        steps = step.index
        if step.info["is_success"] and time_to_success is None:
            time_to_success = steps * dt
        flags["success"].append(bool(step.info["is_success"]))
        flags["dropped"].append(bool(step.info["dropped"]))
        flags["physics_error"].append(bool(step.info["physics_error"]))
        if frames is not None:
            frames.append(env.render())

    start = (lambda obs, info: frames.append(env.render())) if frames is not None else None
    last = rollout(env, policy, seed, record, on_reset=start)
    slipped = last is not None and bool(last.info.get("slipped"))  # the arm envs' info has it
    row = {
        "seed": seed,
        "success": time_to_success is not None,
        "dropped": any(flags["dropped"]),
        # held to the end but slid too far in the hand: a failure apart from a drop (an env
        # that carries no cup may not say)
        "slipped": slipped and not any(flags["dropped"]),
        "return": total,
        "steps": steps,
        "time_to_success": time_to_success,
        "physics_error": any(flags["physics_error"]),
    }
    inferred = getattr(policy, "episode_record", None)
    if inferred is not None and last is not None:  # what the policy inferred, beside the truth
        row["estimates"] = inferred()
        row["truth"] = {k: last.info["physics"][k] for k in row["estimates"]}
    return row, {k: np.asarray(v) for k, v in flags.items()}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates with 95% Wilson intervals, mean return and time to success, over episodes."""
    n = len(rows)
    wins = sum(r["success"] for r in rows)
    drops = sum(r["dropped"] for r in rows)
    slips = sum(r["slipped"] for r in rows)
    times = [r["time_to_success"] for r in rows if r["time_to_success"] is not None]
    return {
        "episodes": n,
        "success_rate": wins / n,
        "success_ci": list(wilson(wins, n)),
        "drop_rate": drops / n,
        "drop_ci": list(wilson(drops, n)),
        "slip_rate": slips / n,
        "slip_ci": list(wilson(slips, n)),
        "mean_return": float(np.mean([r["return"] for r in rows])),
        "time_to_success": float(np.mean(times)) if times else None,
        "physics_errors": sum(r["physics_error"] for r in rows),
        "per_episode": rows,
    }


# ----------------------------------------------------------------------------- shared episodes
def id_episodes_path(
    cell: Cell, settings: EvalSettings, agent_cfg: DictConfig, ckpt: str | None
) -> Path | None:
    """Where the cell's episode rows are shared with its ``id`` cell, or None when its episodes
    are its own.

    A look split moves no physics and draws every other parameter as ``id`` does, so an agent
    that observes no camera (obs_mode ``state``) meets the very same episodes under it
    (tests/apps/test_eval_app.py runs every look shift). The name carries a digest of everything
    else the episodes depend on: the agent's config, its checkpoint's bytes, the episode count,
    the task's version (its reward is in every row), the env's keyword arguments, the threads
    and the package version.
    """
    split = parse_split(cell.split)
    if agent_cfg.get("obs_mode", "state") != "state" or split.kind not in ("id", "look"):
        return None
    if split.work:
        return None  # a shift that changes both (cup_size) is not a look alone
    digest = hashlib.sha256()
    key = {
        "agent": OmegaConf.to_container(agent_cfg, resolve=True),
        "episodes": settings.episodes,
        "env_id": env_id(cell.task),
        "env_kwargs": settings.env_kwargs,
        "threads": settings.threads,
        "version": embodied.__version__,
    }
    digest.update(json.dumps(key, sort_keys=True, default=str).encode())
    for path in sorted(Path(ckpt).rglob("*")) if ckpt else []:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    name = f"seed{cell.seed}-{digest.hexdigest()[:16]}.json"
    return Path(settings.run_dir) / "episodes" / cell.task / cell.agent / name


# ----------------------------------------------------------------------------- video
def heldout_path(settings: EvalSettings, task: str, split: str, seed: int) -> Path:
    """The held-out clips of every cell of (task, split, seed)."""
    h, c, s = settings.video_horizon, settings.video_clips, settings.image_size
    return Path(settings.run_dir) / "heldout" / task / split / f"seed{seed}-c{c}-h{h}-s{s}.npz"


def probe_path(settings: EvalSettings, task: str) -> Path:
    """The train-split clips the state probes of every cell of the task are fitted on."""
    h, c, s = settings.video_horizon, settings.probe_clips, settings.image_size
    return Path(settings.run_dir) / "heldout" / task / "train" / f"probe-c{c}-h{h}-s{s}.npz"


def read_clips(path: Path) -> dict[str, np.ndarray]:
    """A clip file the clips stage wrote (embodied.clips): a cell reads clips, never collects."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no clips at {path}: the clips stage collects them before the grid's cells "
            "(embodied-eval and embodied-bench run it; from Python, "
            "embodied.clips.collect_stage(cells, settings))"
        )
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def model_obs(clips: dict[str, np.ndarray], i: int | slice, obs_mode: str) -> Any:
    """The first observation of clip ``i`` (or of a slice of clips, batched) as a model of
    ``obs_mode`` consumes it."""
    state, pixels = clips["state"][i, 0], clips["pixels"][i, 0]
    if obs_mode == "state":
        return state
    if obs_mode == "pixels":
        return pixels
    return {"state": state, "pixels": pixels}


def video_metrics(
    world_model: Any, env: gymnasium.Env, clips: dict[str, np.ndarray]
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """Open-loop prediction of every clip under its true actions, scored step by step.

    The env is reset to each clip's seed first, so a simulator model sees the clip's world.
    Returns the results line's ``video`` field and (truth, prediction) frames of the first clip.
    """
    n, horizon = clips["action"].shape[:2]
    truth_frames = clips["pixels"][:, 1:]
    truth_cup = clips["state"][:, 1:][..., clips["cup_index"]]
    preds, cups, kind = [], [], "none"
    for i in range(n):
        env.reset(seed=int(clips["seed"][i]))
        imagination = world_model.imagine(
            model_obs(clips, i, world_model.obs_mode), clips["action"][i], env
        )
        kind = imagination.frames_kind
        preds.append(imagination.frames)
        cups.append(imagination.cup_pos)
    line: dict[str, Any] = {"horizon": int(horizon), "clips": int(n), "frames_kind": kind}
    first = None
    if all(p is not None for p in preds):
        pred = np.asarray(preds)
        line.update(clip_metrics(truth_frames, pred))
        first = (truth_frames[0], pred[0])
    else:
        line.update(
            {k: None for k in ("mse", "psnr", "ssim", "mse_mean", "psnr_mean", "ssim_mean")}
        )
    if all(c is not None for c in cups):
        err = np.linalg.norm(np.asarray(cups) - truth_cup, axis=-1).mean(axis=0)
        line["cup_pos_error"] = [float(e) for e in err]
        line["cup_pos_error_mean"] = float(err.mean())
    else:
        line["cup_pos_error"] = line["cup_pos_error_mean"] = None
    return line, first


# ----------------------------------------------------------------------------- probes
def probe_latents(
    world_model: Any, env: gymnasium.Env, clips: dict[str, np.ndarray]
) -> tuple[np.ndarray, bool]:
    """(N, H+1, Z): every clip's first observation encoded, then stepped open loop under its
    actions; and whether these are env state vectors, to be read exactly.

    A model bound to the episode's world (``attach``: the simulators) meets each clip's world
    in turn, and its latent, MuJoCo's own state, is read back as the env's state vector there
    and then. Any other model's latent is a state vector when it starts as the clip's own
    (state, retrieval); else it is learned.
    """
    obs_mode = world_model.obs_mode
    if getattr(world_model, "attach", None) is None:
        obs0 = model_obs(clips, slice(None), obs_mode)
        z, states = open_loop_latents(world_model, obs0, clips["action"]), clips["state"]
        same = z.shape[-1] == states.shape[-1] and np.allclose(z[:, 0], states[:, 0], atol=1e-6)
        return z, same
    rows = []
    for i, seed in enumerate(clips["seed"]):
        env.reset(seed=int(seed))
        world_model.attach(env)
        obs0 = model_obs(clips, slice(i, i + 1), obs_mode)
        z = open_loop_latents(world_model, obs0, clips["action"][i : i + 1])
        rows.append(simulator_states(world_model, z))
    return np.concatenate(rows), True


def state_probes(
    world_model: Any,
    env: gymnasium.Env,
    clips: dict[str, np.ndarray],
    train_clips: Callable[[], dict[str, np.ndarray]],
) -> dict[str, dict[str, list[float]]]:
    """The results line's ``video.probe``: per readout kind, the per-horizon errors of the
    state read from the model's open-loop latents on the cell's clips.

    State-vector latents are read exactly; learned ones by linear and MLP probes fitted on the
    model's own rollouts of ``train_clips()`` (called only then).
    """
    labels = env.unwrapped.state_labels
    (z, exact), states = probe_latents(world_model, env, clips), clips["state"]
    if exact:
        truth = state_targets(states, labels)
        return {"exact": errors(exact_readout(z, labels), truth, states.shape[1] - 1).to_dict()}
    train = train_clips()
    train_z, _ = probe_latents(world_model, env, train)
    return {
        kind: probe_errors(kind, train_z, train["state"], z, states, labels).to_dict()
        for kind in PROBE_KINDS
    }


# ----------------------------------------------------------------------------- the cell
def run_cell(cell: Cell, settings: EvalSettings) -> dict[str, Any]:
    """Evaluate one cell; returns its results line (``wall_s`` is the only timing field)."""
    start = time.perf_counter()
    if cell.agent not in settings.agents:
        raise ValueError(f"no config for agent {cell.agent!r}; have {sorted(settings.agents)}")
    agent_cfg = OmegaConf.create(settings.agents[cell.agent])
    seeds = cell_seeds(cell.seed, settings.episodes, settings.video_clips)
    seed_torch(seeds.policy, settings.threads)
    record = wants_video(cell, settings)
    env = make_env(cell.task, cell.split, settings, agent_cfg.obs_mode, render=record)
    written: dict[str, str] = {}
    try:
        ckpt = checkpoint_dir(settings, cell.task, agent_cfg.get("name", cell.agent))
        policy = build_policy(agent_cfg, env, ckpt, seeds.policy)
        shared = id_episodes_path(cell, settings, agent_cfg, ckpt)
        if shared is not None and shared.is_file() and not record:
            rows = json.loads(shared.read_text())
        else:
            rows = []
            for i, seed in enumerate(seeds.episodes):
                frames: list[np.ndarray] | None = [] if record and i == 0 else None
                row, flags = run_episode(env, policy, seed, frames)
                rows.append(row)
                if frames:
                    clip = videos.episode_video(np.asarray(frames), **flags)
                    written["episode"] = _write(settings, cell, "episode", clip)
            if shared is not None:
                write_atomic(shared, json.dumps(rows))
        world_model = getattr(policy, "world_model", None)
        video = None
        if world_model is not None and settings.video_clips > 0 and settings.video_horizon > 0:
            clips = read_clips(heldout_path(settings, cell.task, cell.split, cell.seed))
            video, first = video_metrics(world_model, env, clips)
            if settings.probe_clips > 0 and hasattr(world_model, "step"):
                train = probe_path(settings, cell.task)
                video["probe"] = state_probes(world_model, env, clips, lambda: read_clips(train))
            if record and first is not None:
                strip = videos.triptych(*first, scale=settings.video_scale)
                written["imagination"] = _write(settings, cell, "imagination", strip)
    finally:
        env.close()
    return ResultLine.of(
        cell,
        family=agent_cfg.get("family"),
        version=embodied.__version__,
        embodied=summarise(rows),
        video=video,
        videos=written or None,
        wall_s=round(time.perf_counter() - start, 3),
        train_split=(read_trained_on(ckpt) or {}).get("split") if ckpt else None,
        env_id=env_id(cell.task),
    ).to_json()


def _write(settings: EvalSettings, cell: Cell, kind: str, frames: np.ndarray) -> str:
    """Write a rollout video; returns its path relative to the videos folder."""
    assert settings.videos_dir is not None
    root = Path(settings.videos_dir)
    path = videos.write_video(
        root / cell.agent / cell.task / cell.split / f"seed{cell.seed}-{kind}",
        frames,
        settings.video_fps,
    )
    return str(path.relative_to(root))
