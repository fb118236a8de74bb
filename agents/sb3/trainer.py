"""Training an SB3 algorithm online on a task's ``train`` split, resumable.

Files in ``out_dir``:
- ``model.zip``: the trained policy (what ``make_policy`` loads), replaced atomically; with
  ``normalize_obs`` it also carries the observation statistics (one file, never out of step).
- ``checkpoints/``: the latest ``<family>_<steps>_steps.zip`` and, for off-policy algorithms,
  its ``<family>_replay_buffer_<steps>_steps.pkl``, plus ``config.yaml`` (what they were
  trained with). A rerun with the same config continues from there, replay buffer included;
  the first Ctrl-C (or SIGTERM) stops at the next env step and writes a checkpoint.
- ``progress.csv`` and TensorBoard events (SB3's logger), ``agent.yaml`` (resolved config),
  ``trained_on.json`` (the task version it was trained on, checked before use).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.envs.registration import parse_env_id
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from embodied.agents.sb3.callbacks import (
    AtomicCheckpoint,
    ScheduledEval,
    StopOnRequest,
    TqdmProgress,
)
from embodied.agents.sb3.cloning import BehaviourCloning, DemoBatches, pretrain_actor, warm_critic
from embodied.agents.sb3.demos import Transition, demo_budget, demo_rows, prefill_replay_buffer
from embodied.agents.sb3.policy import (
    MODEL_FILE,
    algorithm,
    load_sb3,
    restore_normalizer,
    stash_normalizer,
)
from embodied.agents.sb3.shaping import ProgressShaping
from embodied.agents.trainer import StopFlag, Trainer, resumed_rows
from embodied.agents.training import for_task
from embodied.atomic import write_atomic
from embodied.checkpoints import read_trained_on

CHECKPOINTS = "checkpoints"
PROGRESS = "progress.csv"
LEVERS = (  # the demonstration and shaping settings, each >= 0 (0: off)
    "prefill_episodes",
    "demo_episodes",
    "demo_noise",
    "bc_steps",
    "bc_weight",
    "critic_steps",
    "shaping",
)


@dataclass(frozen=True)
class SB3Settings:
    """The ``trainer`` block of ``configs/agent/sac.yaml`` and ``ppo.yaml``.

    ``n_envs`` envs step in a DummyVecEnv; every ``eval_every`` env steps SB3's EvalCallback
    scores ``eval_episodes`` deterministic episodes on the ``id`` split; ``normalize_obs``
    wraps both in ``VecNormalize`` (rewards untouched). Off-policy, fresh runs only: the
    replay buffer is prefilled with a dataset's first ``prefill_episodes`` episodes and
    ``demo_episodes`` of the task's scripted controller (``demo_style``, ``demo_noise``), at
    most a third of the run's steps (:func:`demo_budget`); ``bc_steps`` > 0 then pre-trains
    the actor on them by behaviour cloning, ``critic_steps`` > 0 fits the critic alone to
    them (:func:`warm_critic`), and ``bc_weight`` > 0 keeps cloning them while SAC learns.
    ``shaping`` > 0 adds :class:`ProgressShaping` with that scale to the training env (and
    the prefill's rewards).
    """

    env_kwargs: dict[str, Any] | None = None
    n_envs: int = 2
    eval_every: int = 5000
    eval_episodes: int = 10
    checkpoint_every: int = 5000
    prefill_episodes: int = 0
    demo_episodes: int = 0
    demo_style: str = "cautious"
    demo_noise: float = 0.0
    bc_steps: int = 0
    bc_weight: float = 0.0
    critic_steps: int = 0
    shaping: float = 0.0
    normalize_obs: bool = False
    threads: int = 1

    def __post_init__(self) -> None:
        if self.n_envs < 1 or self.eval_every < 1 or self.checkpoint_every < 1:
            raise ValueError(
                f"need n_envs, eval_every, checkpoint_every >= 1; got {self.n_envs}, "
                f"{self.eval_every}, {self.checkpoint_every}"
            )
        levers = self.levers()
        if min(levers.values()) < 0:
            raise ValueError(f"these settings must be >= 0: {levers}")

    @classmethod
    def from_mapping(cls, settings: dict[str, Any], where: str = "trainer") -> SB3Settings:
        """The settings of a config block; a key that is not a setting fails naming them."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - valid)
        if unknown:
            raise ValueError(f"{where} has unknown settings {unknown}; valid: {sorted(valid)}")
        return cls(**{k: _container(v) for k, v in settings.items()})

    def levers(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LEVERS}


def _container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def latest_checkpoint(folder: Path, prefix: str, needs_buffer: bool) -> tuple[int, Path] | None:
    """(steps, model path) of the newest complete checkpoint in ``folder``, if any."""
    found = []
    for path in folder.glob(f"{prefix}_*_steps.zip"):
        match = re.fullmatch(rf"{re.escape(prefix)}_(\d+)_steps\.zip", path.name)
        if match is None:
            continue
        steps = int(match.group(1))
        rb = folder / f"{prefix}_replay_buffer_{steps}_steps.pkl"
        if not needs_buffer or rb.is_file():
            found.append((steps, path))
    return max(found) if found else None


def continue_csv(logger: Any, fields: list[str], old_rows: list[dict[str, str]]) -> None:
    """Put the rows of earlier runs back into the CSV that SB3's ``configure`` just truncated."""
    for fmt in logger.output_formats:
        if isinstance(fmt, CSVOutputFormat) and fields:
            writer = csv.DictWriter(fmt.file, fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(old_rows)
            fmt.file.flush()
            fmt.keys = list(fields)


class SB3Trainer(Trainer):
    """``agent_cfg``'s SB3 algorithm (``family``, keyword arguments ``algo``; a ``buffer_size``
    is capped at what the run can fill: ``steps`` plus the prefill) trained on ``env_id``'s
    ``train`` split to ``steps`` env steps, resuming from ``out_dir/checkpoints``."""

    def __init__(
        self,
        agent_cfg: DictConfig,
        settings: SB3Settings,
        dataset_dir: str | os.PathLike | None,
        out_dir: str | os.PathLike,
        steps: int,
        seed: int,
        progress: bool,
        env_id: str,
    ):
        if steps < 0:
            raise ValueError(f"need steps >= 0; got {steps}")
        super().__init__(agent_cfg, out_dir, steps, seed, progress)
        self.settings, self.dataset_dir, self.env_id = settings, dataset_dir, env_id
        self.cls = algorithm(agent_cfg)
        self.family = str(agent_cfg.family)
        self.off_policy = issubclass(self.cls, OffPolicyAlgorithm)
        self.hyper = dict(_container(agent_cfg.get("algo")) or {})
        self.env_kwargs = {
            "obs_mode": str(agent_cfg.get("obs_mode", "state")),
            **(settings.env_kwargs or {}),
        }
        self.ckpt_dir = self.out / CHECKPOINTS
        self.demo_steps, self.bc_steps, self.critic_steps = demo_budget(
            steps, settings.bc_steps, settings.critic_steps
        )
        self.trained_on = {
            "env_id": env_id,
            "task": parse_env_id(env_id)[1],
            "split": "train",
            "family": self.family,
            "world_model": None,
        }
        self.envs: list[VecEnv] = []
        self.logger: Any = None
        self.demos = {"demo_episodes": 0, "bc_steps": self.bc_steps, "note": ""}

    def identity(self) -> str:
        """What a checkpoint must have been trained with to be resumed."""
        s = self.settings
        return OmegaConf.to_yaml(
            {
                "family": self.family,
                "algo": self.hyper,
                "env_id": self.env_id,
                "env_kwargs": self.env_kwargs,
                "n_envs": s.n_envs,
                "normalize_obs": s.normalize_obs,
                **s.levers(),
                "demo_style": s.demo_style,
            }
        )

    def restore(self) -> int:
        saved, identity = self.ckpt_dir / "config.yaml", self.identity()
        before = saved.read_text() if saved.is_file() else None
        self.check_resume(read_trained_on(self.out), before, identity, self.ckpt_dir, "config")
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(saved, identity)
        torch.set_num_threads(self.settings.threads)
        self.latest = latest_checkpoint(self.ckpt_dir, self.family, needs_buffer=self.off_policy)
        return self.latest[0] if self.latest else 0

    def done(self, step: int) -> bool:
        return self.latest is not None and step >= self.steps

    def finished(self, step: int) -> dict[str, Any]:
        assert self.latest is not None
        if not (self.out / MODEL_FILE).is_file():
            write_atomic(self.out / MODEL_FILE, self.latest[1].read_bytes())
        return {**self.demos, "step": step, "wall_s": 0.0, "eval_return": None}

    def prepare(self, step: int) -> None:
        self.venv, self.eval_env = self.make_envs()
        rows = self.demonstrations()
        self.model = self.build(len(rows))
        self.callbacks = self.warm_start(rows)
        fields, old_rows = resumed_rows(self.out / PROGRESS, "time/total_timesteps", step)
        self.logger = configure(str(self.out), ["csv", "tensorboard"])
        continue_csv(self.logger, fields, old_rows)
        self.model.set_logger(self.logger)
        if self.progress and self.latest:
            print(f"resuming {self.family} from step {step} in {self.out}")

    def make_envs(self) -> tuple[VecEnv, VecEnv]:
        """The training envs (``train`` split, shaped when ``shaping`` > 0) and the eval env
        (``id`` split), observation-normalised with ``normalize_obs``."""
        s = self.settings
        gamma = float(self.hyper.get("gamma", 0.99))
        wrap = (lambda env: ProgressShaping(env, s.shaping, gamma)) if s.shaping > 0 else None
        venv: VecEnv = make_vec_env(
            self.env_id,
            s.n_envs,
            seed=self.seed,
            env_kwargs={"shift": "train", **self.env_kwargs},
            vec_env_cls=DummyVecEnv,
            wrapper_class=wrap,
        )
        self.envs.append(venv)
        eval_env: VecEnv = make_vec_env(
            self.env_id,
            1,
            seed=self.seed + 10_000,
            env_kwargs={**self.env_kwargs, "shift": "id"},
            vec_env_cls=DummyVecEnv,
        )
        self.envs.append(eval_env)
        if s.normalize_obs:  # running mean/std of observations; rewards stay as the task defines
            venv = VecNormalize(venv, norm_obs=True, norm_reward=False)
            eval_env = VecNormalize(eval_env, training=False, norm_obs=True, norm_reward=False)
            self.envs = [venv, eval_env]
        return venv, eval_env

    def demonstrations(self) -> list[Transition]:
        """A fresh off-policy run's prefill and BC's data (a resume with BC needs them too),
        cut to the run's budget, which the summary's ``note`` then reports."""
        s = self.settings
        if not self.off_policy or (self.latest is not None and s.bc_weight <= 0):
            return []
        rows, ran = demo_rows(
            self.venv.observation_space.shape,
            self.dataset_dir,
            self.env_id,
            {"shift": "train", **self.env_kwargs},
            s.prefill_episodes,
            (s.demo_episodes, self.demo_steps),
            s.demo_style,
            s.demo_noise,
            self.seed,
            s.shaping,
            float(self.hyper.get("gamma", 0.99)),
        )
        self.demos["demo_episodes"] = ran
        if (ran, self.bc_steps, self.critic_steps) != (s.demo_episodes, s.bc_steps, s.critic_steps):
            self.demos["note"] = (
                f"{self.steps} env steps: demonstrations cut to fit the run, {ran} scripted "
                f"episodes (of {s.demo_episodes}, at most {self.demo_steps} steps), "
                f"{self.bc_steps} behaviour-cloning steps (of {s.bc_steps}) and "
                f"{self.critic_steps} critic warm-up steps (of {s.critic_steps})"
            )
            if self.progress:
                print(self.demos["note"])
        return rows

    def build(self, prefill: int) -> BaseAlgorithm:
        """A fresh model (its replay buffer no larger than the run and ``prefill`` can fill),
        or the latest checkpoint with its replay buffer, on the training envs."""
        if self.latest is None:
            hyper = dict(self.hyper)
            if "buffer_size" in hyper:  # nothing would be evicted
                hyper["buffer_size"] = max(1, min(int(hyper["buffer_size"]), self.steps + prefill))
            return self.cls(env=self.venv, seed=self.seed, device="cpu", verbose=0, **hyper)
        steps, path = self.latest
        model = load_sb3(path, self.cls, env=self.venv)
        restore_normalizer(model)
        if isinstance(model, OffPolicyAlgorithm):
            model.load_replay_buffer(
                self.ckpt_dir / f"{self.family}_replay_buffer_{steps}_steps.pkl"
            )
        return model

    def warm_start(self, rows: list[Transition]) -> list[BaseCallback]:
        """A fresh run: the demonstrations into the replay buffer (and the observation
        statistics), then behaviour cloning and the critic's warm-up; the BC callback that
        keeps cloning them while SAC learns."""
        if not rows:
            return []
        s, demos = self.settings, DemoBatches(rows, self.seed)
        callbacks: list[BaseCallback] = []
        if s.bc_weight > 0:
            callbacks.append(BehaviourCloning(demos, s.bc_weight))
        if self.latest is None:
            added = prefill_replay_buffer(self.model, rows)  # type: ignore[arg-type]
            if isinstance(self.venv, VecNormalize):  # statistics start from the demos' states
                self.venv.obs_rms.update(demos.obs)
            if self.bc_steps > 0:
                pretrain_actor(self.model, demos, self.bc_steps)
            if self.critic_steps > 0:
                warm_critic(self.model, self.critic_steps)  # type: ignore[arg-type]
            if self.progress:
                print(
                    f"prefilled the replay buffer with {added} demonstration transitions"
                    + (f", actor pre-trained for {self.bc_steps} steps" if self.bc_steps else "")
                )
        return callbacks

    def fit(self, step: int, stop: StopFlag) -> dict[str, Any]:
        """``model.learn`` with eval, checkpoint, stop and progress callbacks; model.zip."""
        model, s = self.model, self.settings
        checkpoint = AtomicCheckpoint(s.checkpoint_every, self.ckpt_dir, self.family)
        evaluate = ScheduledEval(self.eval_env, s.eval_every, s.eval_episodes)
        start = time.perf_counter()
        callbacks = [*self.callbacks, evaluate, checkpoint, StopOnRequest(stop)]
        if self.progress:
            callbacks.append(TqdmProgress(self.steps, f"train {self.family}", evaluate))
        model.learn(
            total_timesteps=self.steps - step,
            callback=CallbackList(callbacks),
            reset_num_timesteps=step == 0,
        )
        if not stop.requested and evaluate.done_at != model.num_timesteps:
            evaluate.evaluate()
        checkpoint.save(final=not stop.requested)
        stash_normalizer(model)
        write_atomic(self.out / MODEL_FILE, model.save, ".tmp.zip")
        last = evaluate.last_mean_reward
        return {
            **self.demos,
            "step": int(model.num_timesteps),
            "wall_s": time.perf_counter() - start,
            "eval_return": None if not np.isfinite(last) else float(last),
        }

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        for env in self.envs:
            env.close()


def task_settings(
    agent_cfg: DictConfig, env_id: str, settings: dict[str, Any]
) -> tuple[DictConfig, SB3Settings]:
    """The agent config and trainer settings for ``env_id``'s task: the agent's
    ``per_task[task]`` merged over the config (:func:`for_task`), its ``trainer`` block over
    the trainer's ``settings``, so a recipe measured on one task leaves the others alone."""
    task = parse_env_id(env_id)[1]
    agent_cfg = for_task(agent_cfg, task)
    over = _container(((agent_cfg.get("per_task") or {}).get(task) or {}).get("trainer")) or {}
    SB3Settings.from_mapping(over, where=f"per_task.{task}.trainer")
    return agent_cfg, SB3Settings.from_mapping({**settings, **over})


def train_sb3(
    agent_cfg: DictConfig | dict,
    dataset_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    progress: bool = True,
    env_id: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``agent_cfg``'s SB3 algorithm on ``env_id``'s ``train`` split to ``steps`` env
    steps (:class:`SB3Trainer`; ``settings``: :class:`SB3Settings`, the agent's ``per_task``
    over them). ``dataset_dir`` is read only for a replay-buffer prefill.

    Returns a summary with ``step``, ``interrupted``, ``wall_s``, last ``eval_return``, the
    demonstrations' ``demo_episodes`` and ``bc_steps`` and a ``note`` when the budget cut them.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    if env_id is None:
        raise ValueError(
            "train_sb3 needs env_id (e.g. 'embodied/Reach-v0'); the train app sets it from "
            "env=<reach|cup_push|cup_carry|cup_pick_place>"
        )
    agent_cfg, parsed = task_settings(agent_cfg, env_id, settings)
    trainer = SB3Trainer(agent_cfg, parsed, dataset_dir, out_dir, steps, seed, progress, env_id)
    return trainer.train()
