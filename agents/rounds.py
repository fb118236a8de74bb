"""Rounds of own experience: plan with the model, add what actually happened, refit.

Offline, a model never sees the states its planner drives it into (the pushed cup that tips,
the grasp that knocks it over): no scripted episode went there. Each round closes that gap the
way PETS, MBPO and DAgger-style system identification do (Ross & Bagnell 2012): the current
model and its planner, plus exploration noise, run ``episodes`` episodes of the ``train``
split (ID physics); they join the dataset with their provenance; the model is refitted
(``finetune``: ``finetune_steps`` more steps from the last round's weights, or ``retrain``:
from scratch on everything); a few held-out train-split episodes, planned without noise,
measure it. Round 0 is the model as trained offline.

Everything lives in ``out_dir``::

    data/             the agent's own dataset: the offline episodes, then each round's
    models/round-<k>/ the model after round k (round-0: a copy of the offline one)
    rounds.json       one record per finished round (the commit point of a round)

A rerun resumes at the round it was in: a round's episodes are appended in one atomic write
(found again by their ``meta.round``), its refit resumes through ``train_world_model``, and
its record is written last. Every draw descends from ``seed`` and the round number.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.agents.nets import load_checkpoint
from embodied.agents.training import CHECKPOINT, FORMAT, MODES, train_world_model
from embodied.atomic import write_atomic
from embodied.collect import run_episode
from embodied.dataset import Dataset, Episode, append_dataset, read_manifest, write_dataset
from embodied.evaluate import build_policy, seed_torch

# Episode seeds: collection draws below 2**31, evaluation cells below 2**32 (uint32 states of
# a SeedSequence), so seeds from 2**32 on are no one else's. Round k plans from
# ROUND_SEEDS + k * ROUND_STRIDE on; the held-out checks use CHECK_SEEDS on, every round.
ROUND_SEEDS = 2**32
ROUND_STRIDE = 2**20
CHECK_SEEDS = 2**33
REFITS = ("finetune", "retrain")
LOG = "rounds.json"


@dataclass(frozen=True)
class RoundSettings:
    """What one round does (configs/experience/default.yaml documents each)."""

    episodes: int = 30
    noise: float = 0.1
    grip_noise: float = 0.0
    refit: str = "finetune"
    finetune_steps: int = 1000
    check_episodes: int = 10

    @classmethod
    def of(cls, cfg: DictConfig | dict[str, Any]) -> RoundSettings:
        """From an ``experience`` config block (its other keys, like ``per_task``, ignored)."""
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})

    def __post_init__(self) -> None:
        if self.refit not in REFITS:
            raise ValueError(f"unknown refit {self.refit!r}; valid: {list(REFITS)}")
        if self.episodes < 1 or self.finetune_steps < 1 or self.check_episodes < 0:
            raise ValueError(
                "need episodes >= 1, finetune_steps >= 1, check_episodes >= 0; got "
                f"{self.episodes}, {self.finetune_steps}, {self.check_episodes}"
            )
        if not (self.noise >= 0 and self.grip_noise >= 0):
            raise ValueError(
                f"noise and grip_noise must be >= 0; got {self.noise}, {self.grip_noise}"
            )


def round_seeds(round_: int) -> np.ndarray:
    """Candidate episode seeds of round ``round_`` >= 1 (a diverged episode takes the next)."""
    if round_ < 1:
        raise ValueError(f"rounds that plan episodes are numbered from 1; got {round_}")
    return ROUND_SEEDS + round_ * ROUND_STRIDE + np.arange(ROUND_STRIDE, dtype=np.int64)


def check_seeds(n: int) -> list[int]:
    """The held-out train-split seeds every round is measured on."""
    return [CHECK_SEEDS + i for i in range(n)]


class Explore:
    """A policy with Gaussian noise on its actions: ``noise`` on the motion, ``grip_noise`` on
    the grip (the last entry), clipped to the action space."""

    def __init__(
        self, policy: Any, space: gymnasium.spaces.Box, noise: float, grip: float, seed: int
    ):
        self.policy, self.space = policy, space
        self.std = np.full(space.shape, noise, np.float32)
        self.std[-1] = grip
        self.rng = np.random.default_rng(seed)

    def reset(self, env: gymnasium.Env) -> None:
        self.policy.reset(env)

    def act(self, obs: Any) -> np.ndarray:
        action = np.asarray(self.policy.act(obs), np.float32)
        action = action + self.std * self.rng.standard_normal(action.shape).astype(np.float32)
        action = np.clip(action, self.space.low, self.space.high).astype(np.float32)
        if hasattr(self.policy, "last_action"):  # the MPC agent's belief and prior: what ran
            self.policy.last_action = action
        return action


def _policy(agent_cfg: DictConfig, env: gymnasium.Env, model_dir: Path, seed: int) -> Any:
    seed_torch(seed, int(agent_cfg.get("torch_threads") or 1))
    return build_policy(agent_cfg, env, str(model_dir), seed)


def _stream(seed: int, round_: int, what: int) -> int:
    """An independent seed for (run seed, round, purpose)."""
    return int(np.random.SeedSequence([seed, round_, what]).generate_state(1)[0])


def plan_round(
    agent_cfg: DictConfig,
    env: gymnasium.Env,
    model_dir: Path,
    round_: int,
    settings: RoundSettings,
    seed: int,
    progress: bool = True,
) -> list[Episode]:
    """Round ``round_``'s episodes, planned by the model in ``model_dir`` plus exploration."""
    policy = Explore(
        _policy(agent_cfg, env, model_dir, _stream(seed, round_, 0)),
        env.action_space,
        settings.noise,
        settings.grip_noise,
        _stream(seed, round_, 1),
    )
    name, mode = str(agent_cfg.get("name")), str(agent_cfg.obs_mode)
    out: list[Episode] = []
    bar = tqdm(total=settings.episodes, desc=f"round {round_}: plan", disable=not progress)
    for ep_seed in round_seeds(round_):
        episode = run_episode(env, policy, int(ep_seed), "train", mode)
        if episode.meta.pop("physics_error"):
            continue  # not physics: the next seed replaces it
        episode.meta.update(
            source="rounds",
            round=round_,
            agent=name,
            success=bool(episode.success.any()),
            noise=settings.noise,
            grip_noise=settings.grip_noise,
        )
        out.append(episode)
        bar.update()
        if len(out) == settings.episodes:
            break
    bar.close()
    return out


def check_round(
    agent_cfg: DictConfig,
    env: gymnasium.Env,
    model_dir: Path,
    n: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Success and failure kinds of ``n`` held-out train-split episodes, planned without noise
    (the same seeds and planner seed every round)."""
    policy = _policy(agent_cfg, env, model_dir, _stream(seed, 0, 2))
    outcomes: Counter[str] = Counter()
    for s in tqdm(check_seeds(n), desc="check", disable=not progress):
        episode = run_episode(env, policy, s, "train", str(agent_cfg.obs_mode))
        outcomes[outcome(bool(episode.success.any()), episode.meta)] += 1
    return {"success": outcomes["success"] / n if n else None, "outcomes": dict(outcomes)}


def outcome(success: bool, meta: dict[str, Any]) -> str:
    """``success``, a failure kind (``collect.FAILURES``), or ``timeout`` (neither in time)."""
    return "success" if success else meta.get("failure") or "timeout"


def own_dataset(base: Path, out: Path, obs_mode: str) -> Path:
    """``out``: a copy of the offline dataset ``base`` holding the modes the agent plans from
    (made once; the rounds then grow it, never ``base``, which other agents share)."""
    if (out / "manifest.json").is_file():
        return out
    modes = list(MODES[obs_mode])
    data = Dataset.load(base, obs_modes=modes)
    m = data.manifest
    fields = ("env_id", "task", "split", "image_size", "state_labels")
    derived = {"format", "obs_modes", "episodes", "transitions", "seeds", "shards", "episode_info"}
    extra = {k: v for k, v in m.items() if k not in {*fields, *derived}}  # e.g. collect settings
    write_dataset(out, data.episodes, obs_modes=modes, extra=extra, **{k: m[k] for k in fields})
    return out


def _copy_model(src: Path, dst: Path) -> None:
    """The checkpoint of ``src`` into ``dst`` (atomically: a resumed round finds all or none)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("trained_on.json", "agent.yaml", "losses.csv", "model.pt"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    write_atomic(dst / CHECKPOINT, (src / CHECKPOINT).read_bytes())  # the commit point


def model_step(model_dir: Path) -> int:
    """The training step of the checkpoint in ``model_dir``."""
    return int(load_checkpoint(model_dir / CHECKPOINT, FORMAT)["step"])


def refit(
    agent_cfg: DictConfig,
    data_dir: Path,
    models: Path,
    round_: int,
    settings: RoundSettings,
    train_steps: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Round ``round_``'s model in ``models/round-<k>``: the last one fine-tuned, or a new one."""
    out = models / f"round-{round_}"
    steps = train_steps
    if settings.refit == "finetune":
        before = models / f"round-{round_ - 1}"
        if not (out / CHECKPOINT).is_file():
            _copy_model(before, out)
        steps = model_step(before) + settings.finetune_steps
    env_id = read_manifest(data_dir)["env_id"]
    return train_world_model(
        agent_cfg, data_dir, out, steps=steps, seed=seed, progress=progress, env_id=env_id
    )


def read_log(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of the finished rounds in ``out_dir`` (none yet: [])."""
    path = Path(out_dir) / LOG
    return json.loads(path.read_text())["rounds"] if path.is_file() else []


def run_rounds(
    agent_cfg: DictConfig | dict,
    data_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    rounds: int,
    settings: RoundSettings,
    train_steps: int,
    seed: int = 0,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rounds 1..``rounds`` of own experience after the offline model in ``model_dir`` trained
    on ``data_dir``; returns every round's record (round 0 first), resuming a stopped run."""
    if isinstance(agent_cfg, DictConfig):  # a plain copy: a composed one is struct, and
        agent_cfg = OmegaConf.to_container(agent_cfg, resolve=True)  # per_task adds keys
    agent_cfg = OmegaConf.create(agent_cfg)
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0; got {rounds}")
    out, wanted = Path(out_dir), {"settings": asdict(settings), "seed": seed}
    log = read_log(out)
    if log and json.loads((out / LOG).read_text())["run"] != wanted:
        raise ValueError(f"{out} holds rounds run with other settings; use another out_dir")
    data = own_dataset(Path(data_dir), out / "data", str(agent_cfg.obs_mode))
    models = out / "models"
    if not (models / "round-0" / CHECKPOINT).is_file():
        _copy_model(Path(model_dir), models / "round-0")
    image_size = int(read_manifest(data)["image_size"])
    env = gymnasium.make(
        read_manifest(data)["env_id"],
        obs_mode=str(agent_cfg.obs_mode),
        shift="train",
        image_size=image_size,
        **(env_kwargs or {}),
    )
    bar = tqdm(total=rounds + 1, initial=len(log), desc="rounds", disable=not progress)
    try:
        for k in range(len(log), rounds + 1):
            record = _round(agent_cfg, env, data, models, k, settings, train_steps, seed, progress)
            log.append(record)
            write_atomic(out / LOG, json.dumps({"run": wanted, "rounds": log}, indent=1))
            bar.update()
            bar.set_postfix(success=record["check"]["success"], episodes=record["episodes"])
    finally:
        bar.close()
        env.close()
    return log


def _round(
    agent_cfg: DictConfig,
    env: gymnasium.Env,
    data: Path,
    models: Path,
    k: int,
    settings: RoundSettings,
    train_steps: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Round ``k``: plan and append (unless a stopped run already did), refit, check."""
    record: dict[str, Any] = {"round": k}
    if k > 0:
        info = read_manifest(data)["episode_info"]
        if not any(e.get("meta", {}).get("round") == k for e in info):
            append_dataset(
                data,
                plan_round(agent_cfg, env, models / f"round-{k - 1}", k, settings, seed, progress),
            )
            info = read_manifest(data)["episode_info"]
        mine = [e for e in info if e.get("meta", {}).get("round") == k]
        record["planned"] = dict(Counter(outcome(e["success"], e["meta"]) for e in mine))
        fit = refit(agent_cfg, data, models, k, settings, train_steps, seed, progress)
        record["refit"] = {"step": fit["step"], "wall_s": round(fit["wall_s"], 1)}
    info = read_manifest(data)["episode_info"]
    own = [e for e in info if e.get("meta", {}).get("source") == "rounds"]
    record["episodes"] = len(info)
    record["own_env_steps"] = int(sum(e["length"] for e in own))
    record["model_step"] = model_step(models / f"round-{k}")
    record["check"] = check_round(
        agent_cfg, env, models / f"round-{k}", settings.check_episodes, seed, progress
    )
    return record


def print_rounds(log: list[dict[str, Any]], title: str) -> None:
    """The rounds' table: held-out success per round against own experience so far."""
    print(f"\nrounds of own experience, {title} (held-out train-split episodes)")
    print(
        f"{'round':>5} {'episodes':>8} {'own steps':>9} {'model step':>10} {'success':>7}  outcomes"
    )
    for r in log:
        check = r["check"]
        rate = "-" if check["success"] is None else f"{check['success']:.2f}"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(check["outcomes"].items()))
        print(
            f"{r['round']:>5} {r['episodes']:>8} {r['own_env_steps']:>9} {r['model_step']:>10} "
            f"{rate:>7}  {kinds}"
        )


def publish(out_dir: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """The last round's model into ``model_dir``, where evaluation looks for the agent's model
    (the offline one stays in ``out_dir/models/round-0``); returns the round's directory."""
    last = Path(out_dir) / "models" / f"round-{read_log(out_dir)[-1]['round']}"
    _copy_model(last, Path(model_dir))
    return last


def bench_stage(cfg: DictConfig, jobs: list[Any]) -> None:
    """``embodied-bench``'s rounds: for each trained (task, world-model agent) whose task has
    rounds (``rounds``, or ``experience.per_task[task]``), run them and publish the last
    round's model for evaluation. ``jobs`` are the bench's training jobs."""
    per_task = cfg.experience.get("per_task") or {}
    settings = RoundSettings.of(cfg.experience)
    for job in jobs:
        n = int(per_task.get(job.task, cfg.rounds))
        trainer = (job.agent.get("trainer") or {}).get("_target_", "")
        if n < 1 or not trainer.endswith("training.train_world_model"):
            continue
        out = Path(cfg.run_dir) / "rounds" / job.task / job.agent["name"]
        log = run_rounds(
            job.agent,
            job.data_dir,
            job.out_dir,
            out,
            n,
            settings,
            train_steps=job.steps,
            seed=job.seed,
            progress=bool(cfg.progress),
            env_kwargs=dict(cfg.env.get("kwargs") or {}),
        )
        publish(out, job.out_dir)
        print_rounds(log, f"{job.agent['name']} on {job.task}")
