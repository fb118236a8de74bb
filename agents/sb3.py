"""Model-free baselines: Stable-Baselines3 SAC and PPO trained on the ``train`` split.

The yardstick beside the world models: an SB3 policy trained by trial and error in the real
(training-distribution) simulator, loaded as the same Policy object the evaluation grid runs
for MPC agents.

Files in ``out_dir``:
- ``model.zip``: the trained policy (what ``make_policy`` loads), replaced atomically; with
  ``normalize_obs`` it also carries the observation statistics (one file, never out of step).
- ``checkpoints/``: the latest ``<family>_<steps>_steps.zip`` and, for off-policy algorithms,
  its ``<family>_replay_buffer_<steps>_steps.pkl``, plus ``config.yaml`` (what they were
  trained with). A rerun with the same config continues from there, replay buffer included;
  the first Ctrl-C (or SIGTERM) stops at the next env step and writes a checkpoint.
- ``progress.csv`` and TensorBoard events (SB3's logger), ``agent.yaml`` (resolved config).
"""

from __future__ import annotations

import csv
import inspect
import os
import re
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from tqdm.auto import tqdm

from embodied.agents.training import graceful_stop
from embodied.atomic import write_atomic
from embodied.dataset import Dataset
from embodied.envs.arm import STATE_LABELS
from embodied.registration import TASKS
from embodied.registration import env_id as task_env_id
from embodied.rollout import Step, rollout

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO}
MODEL_FILE = "model.zip"
CHECKPOINTS = "checkpoints"
PROGRESS = "progress.csv"
NORMALIZER = "obs_normalizer"  # model attribute holding the VecNormalize statistics


def algorithm(agent_cfg: DictConfig) -> type[BaseAlgorithm]:
    """The SB3 class of an agent config's ``family``."""
    family = agent_cfg.get("family")
    if family not in ALGORITHMS:
        raise ValueError(f"unknown sb3 family {family!r}; valid: {sorted(ALGORITHMS)}")
    return ALGORITHMS[family]


# ----------------------------------------------------------------------------- the policy
class SB3Policy:
    """A trained SB3 model as a Policy: the deterministic action (no exploration noise).

    Observations are normalised with the statistics frozen into the model at its last save
    (see :func:`stash_normalizer`), exactly as ``VecNormalize`` did during training.
    """

    def __init__(self, model: BaseAlgorithm):
        self.model = model
        norm = getattr(model, NORMALIZER, None)
        self.norm = None
        if norm is not None:
            scale = np.sqrt(np.asarray(norm["var"]) + norm["epsilon"])
            self.norm = (np.asarray(norm["mean"]), scale, float(norm["clip"]))

    def reset(self, env: gymnasium.Env) -> None:
        """Nothing to reset: the MLP policies here are memoryless."""

    def act(self, obs: Any) -> np.ndarray:
        if self.norm is not None:
            mean, scale, clip = self.norm
            obs = np.clip((np.asarray(obs) - mean) / scale, -clip, clip).astype(np.float32)
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)


def stash_normalizer(model: BaseAlgorithm) -> None:
    """Copy the training ``VecNormalize`` statistics into the model, so its zip carries them.

    SB3 saves a model's attributes, so a model file alone restores the policy (eval) and the
    running statistics (resume); no second file can fall out of step with it.
    """
    vn = model.get_vec_normalize_env()
    if vn is not None:
        rms = vn.obs_rms
        setattr(
            model,
            NORMALIZER,
            {
                "mean": rms.mean.tolist(),
                "var": rms.var.tolist(),
                "count": float(rms.count),
                "clip": float(vn.clip_obs),
                "epsilon": float(vn.epsilon),
            },
        )


def restore_normalizer(model: BaseAlgorithm) -> None:
    """The inverse of :func:`stash_normalizer` on a resumed model's ``VecNormalize``."""
    vn, norm = model.get_vec_normalize_env(), getattr(model, NORMALIZER, None)
    if vn is not None and norm is not None:
        vn.obs_rms.mean = np.asarray(norm["mean"], dtype=np.float64)
        vn.obs_rms.var = np.asarray(norm["var"], dtype=np.float64)
        vn.obs_rms.count = norm["count"]


def load_sb3(path: str | os.PathLike, cls: type[BaseAlgorithm], env: Any = None) -> BaseAlgorithm:
    """``cls.load(path)`` on the CPU, with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trained SB3 model at {path}")
    try:
        return cls.load(str(path), env=env, device="cpu")
    except Exception as e:  # a truncated or foreign file fails in zipfile, pickle or torch
        raise ValueError(
            f"{path} is not a loadable {cls.__name__} model ({type(e).__name__}: {e}); "
            f"delete it and train again"
        ) from e


def make_policy(
    agent_cfg: DictConfig | dict,
    checkpoint_dir: str | os.PathLike | None,
    env: gymnasium.Env,
    seed: int,
) -> SB3Policy:
    """The trained policy in ``checkpoint_dir`` (the ``policy`` factory eval instantiates).

    ``seed`` is unused: deterministic actions draw no random numbers.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    name = agent_cfg.get("name", "?")
    cls = algorithm(agent_cfg)
    if checkpoint_dir is None:
        raise ValueError(
            f"agent {name!r} needs a trained model: pass checkpoint_dir "
            f"(train one with: embodied-train agent={name} env=...)"
        )
    path = Path(checkpoint_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}; train one first: embodied-train agent={name} env=..."
        )
    model = load_sb3(path, cls)
    want, have = model.observation_space, env.observation_space
    if want.shape != have.shape or model.action_space.shape != env.action_space.shape:
        raise ValueError(
            f"{path} was trained for observations {want.shape} and actions "
            f"{model.action_space.shape}, but the env gives {have.shape} and "
            f"{env.action_space.shape} (obs_mode {agent_cfg.get('obs_mode')!r}?)"
        )
    return SB3Policy(model)


# ----------------------------------------------------------------------------- callbacks
class AtomicCheckpoint(CheckpointCallback):
    """SB3's CheckpointCallback, made crash-safe and resumable.

    Saves every ``save_every`` *environment* steps (not callback calls, so the schedule
    survives a resume), replay buffer first and model last (the model file commits the
    checkpoint), each through a temp file + ``os.replace``, and keeps only the newest.
    """

    def __init__(self, save_every: int, save_path: Path, name_prefix: str):
        super().__init__(1, str(save_path), name_prefix, save_replay_buffer=True)
        self.save_every = save_every
        self.saved_at = 0

    def _on_training_start(self) -> None:
        self.saved_at = self.num_timesteps  # a resume starts at a saved checkpoint

    def _on_step(self) -> bool:
        if self.num_timesteps // self.save_every > self.saved_at // self.save_every:
            self.save()
        return True

    def save(self, final: bool = False) -> None:
        """Save now; ``final`` saves again at a step already saved: SB3 calls callbacks before
        it stores the step's transition, so a save from ``_on_step`` lacks the last one."""
        if self.num_timesteps == self.saved_at and not final:
            return
        old = list(Path(self.save_path).glob(f"{self.name_prefix}_*"))
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is not None:
            rb = Path(self._checkpoint_path("replay_buffer_", extension="pkl"))
            write_atomic(rb, self.model.save_replay_buffer, ".tmp.pkl")
        model = Path(self._checkpoint_path(extension="zip"))
        stash_normalizer(self.model)
        write_atomic(model, self.model.save, ".tmp.zip")
        keep = {model.name, f"{self.name_prefix}_replay_buffer_{self.num_timesteps}_steps.pkl"}
        for path in old:
            if path.name not in keep:
                path.unlink(missing_ok=True)
        self.saved_at = self.num_timesteps


class ScheduledEval(EvalCallback):
    """SB3's EvalCallback every ``every`` *environment* steps (a schedule that survives a
    resume), with deterministic actions; ``evaluate()`` runs one now (the end of training)."""

    def __init__(self, eval_env: VecEnv, every: int, episodes: int):
        super().__init__(
            eval_env,
            n_eval_episodes=episodes,
            eval_freq=1,
            deterministic=True,
            warn=False,
            verbose=0,
        )
        self.every = every
        self.done_at = 0
        self.started = 0.0
        self.eval_s = 0.0

    def _on_training_start(self) -> None:
        self.done_at = self.num_timesteps
        self.started, self.eval_s = time.perf_counter(), 0.0

    def _on_step(self) -> bool:
        if self.num_timesteps // self.every > self.done_at // self.every:
            return self.evaluate()
        return True

    def evaluate(self) -> bool:
        """One evaluation now; logs ``time/train_s``, this run's seconds of training so far
        (evaluations left out), beside its ``eval/`` rows."""
        self.done_at = self.num_timesteps
        began = time.perf_counter()
        self.logger.record("time/train_s", began - self.started - self.eval_s)
        go_on = super()._on_step()  # eval_freq=1: the parent evaluates on every call
        self.eval_s += time.perf_counter() - began
        return go_on


class StopOnRequest(BaseCallback):
    """Ends ``learn`` at the next step once Ctrl-C/SIGTERM set the flag."""

    def __init__(self, flag: Any):
        super().__init__()
        self.flag = flag

    def _on_step(self) -> bool:
        return not self.flag.requested


class TqdmProgress(BaseCallback):
    """A tqdm bar over environment steps (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int, desc: str, eval_cb: EvalCallback | None):
        super().__init__()
        self.bar = tqdm(total=total, desc=desc, unit="step")
        self.eval_cb = eval_cb
        self.shown = -np.inf

    def _on_training_start(self) -> None:
        self.bar.n = self.num_timesteps
        self.bar.refresh()

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        if self.eval_cb is not None and self.eval_cb.last_mean_reward != self.shown:
            self.shown = self.eval_cb.last_mean_reward
            self.bar.set_postfix(eval_return=f"{self.shown:.3g}")
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- shaping
# The point of the state each task moves to its target, and the axes that count: the hand
# for Reach, the cup in 3-D for CupCarry, the cup on the table plane for CupPush/CupPickPlace.
PROGRESS_POINT: dict[str, tuple[str, int]] = {
    "Reach": ("ee", 3),
    "CupCarry": ("cup", 3),
    "CupPush": ("cup", 2),
    "CupPickPlace": ("cup", 2),
}


def potential(state: np.ndarray, task: str, scale: float) -> np.ndarray:
    """Phi(s) = -scale x the distance (m) from the task's moving point to the target, read
    from the ``state`` observation (so dataset transitions can be shaped the same way)."""
    if task not in PROGRESS_POINT:
        raise ValueError(
            f"no progress potential for task {task!r}; valid: {sorted(PROGRESS_POINT)}"
        )
    point, dims = PROGRESS_POINT[task]
    i, t = STATE_LABELS.index(f"{point}_x"), STATE_LABELS.index("target_x")
    s = np.asarray(state, dtype=np.float64)
    return -scale * np.linalg.norm(s[..., i : i + dims] - s[..., t : t + dims], axis=-1)


def shaped(rows: list[Transition], task: str, scale: float, gamma: float) -> list[Transition]:
    """Dataset transitions with the reward :class:`ProgressShaping` would have given them."""
    return [
        (
            s,
            n,
            a,
            r + gamma * float(potential(n, task, scale)) - float(potential(s, task, scale)),
            d,
        )
        for s, n, a, r, d in rows
    ]


class ProgressShaping(gymnasium.Wrapper):
    """Potential-based shaping (Ng et al. 1999) for SAC's training env only: each step pays
    ``gamma * Phi(s') - Phi(s)`` on top of the env's reward, with Phi the negative distance to
    the target (:func:`potential`).

    Moving toward the target pays at once, holding still pays nothing. Over an episode the
    extra terms telescope to ``gamma^T Phi(s_T) - Phi(s_0)``: a constant of the start, plus
    a term that only favours ending near the target, so the task's optimal policy stays
    optimal. Observations, termination, truncation and ``info`` (success, drop) pass through
    untouched; evaluation never sees this wrapper.
    """

    def __init__(self, env: gymnasium.Env, scale: float, gamma: float):
        super().__init__(env)
        self.task = str(env.unwrapped.task_name)
        self.scale, self.gamma = float(scale), float(gamma)
        self.phi = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.phi = float(potential(obs, self.task, self.scale))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = float(potential(obs, self.task, self.scale))
        reward = float(reward) + self.gamma * phi - self.phi
        self.phi = phi
        return obs, reward, terminated, truncated, info


# ----------------------------------------------------------------------------- training
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


def continue_csv(logger: Any, old_rows: list[dict[str, str]], fields: list[str]) -> None:
    """Put the rows of earlier runs back into the CSV that SB3's ``configure`` just truncated."""
    for fmt in logger.output_formats:
        if isinstance(fmt, CSVOutputFormat) and fields:
            writer = csv.DictWriter(fmt.file, fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(old_rows)
            fmt.file.flush()
            fmt.keys = list(fields)


def previous_rows(out: Path, upto: int) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of ``progress.csv`` at or before step ``upto`` (what a resume keeps)."""
    path = out / PROGRESS
    if upto <= 0 or not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [
            r
            for r in reader
            if r.get("time/total_timesteps") and float(r["time/total_timesteps"]) <= upto
        ]
    return rows, fields


Transition = tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]  # s, s', a, r, terminated


def dataset_transitions(dataset: Dataset, shape: tuple[int, ...]) -> list[Transition]:
    """The transitions of a collected dataset's episodes (their env rewards)."""
    if dataset.episodes and dataset.episodes[0].state.shape[1:] != shape:
        raise ValueError(
            f"dataset states have shape {dataset.episodes[0].state.shape[1:]}, the env's "
            f"observations {shape}: collect the dataset on the task being trained"
        )
    return [
        (ep.state[t], ep.state[t + 1], ep.action[t], float(ep.reward[t]), bool(ep.terminated[t]))
        for ep in dataset.episodes
        for t in range(len(ep.action))
    ]


def scripted_transitions(
    env: gymnasium.Env,
    episodes: int,
    seed: int,
    style: str,
    noise: float,
    max_steps: int | None = None,
) -> tuple[list[Transition], int]:
    """``episodes`` episodes of the task's scripted controller in ``env`` (demonstrations),
    at most ``max_steps`` transitions of them (the last episode cut there), and how many
    episodes ran.

    ``env`` is the training env as SAC sees it (``train`` split, shaping included), so the
    stored rewards are the ones SAC's own transitions carry. Seeds ``seed``, ``seed + 1``...
    """
    rows: list[Transition] = []

    def keep(step: Step) -> None:
        rows.append((step.obs, step.next_obs, step.action, step.reward, bool(step.terminated)))

    ran = 0
    while ran < episodes and (max_steps is None or len(rows) < max_steps):
        policy = env.unwrapped.scripted_policy(style, noise=noise, seed=seed + ran)
        rollout(env, policy, seed + ran, keep)
        ran += 1
    return rows[:max_steps], ran


def prefill_replay_buffer(model: OffPolicyAlgorithm, rows: list[Transition]) -> int:
    """Add transitions (demonstrations) to the replay buffer; returns how many were added.

    Transitions are added one env slot at a time (SB3 buffers are laid out per env); a
    time-limit end is stored as not done, so SAC bootstraps through it as through its own.
    """
    buffer = model.replay_buffer
    assert buffer is not None
    n_envs = buffer.n_envs
    added = 0
    for i in range(0, len(rows) - len(rows) % n_envs, n_envs):
        obs, nxt, act, rew, done = (np.stack(x) for x in zip(*rows[i : i + n_envs], strict=True))
        buffer.add(obs, nxt, act, rew, done.astype(np.float32), [{}] * n_envs)
        added += n_envs
    return added


def load_demos(dataset_dir: str | os.PathLike | None, env_id: str, episodes: int) -> Dataset:
    """The first ``episodes`` episodes of a collected dataset of ``env_id``, for a prefill."""
    if dataset_dir is None:
        raise ValueError("prefill_episodes > 0 needs dataset_dir (a collected dataset)")
    dataset = Dataset.load(dataset_dir, obs_modes=("state",))
    if dataset.manifest.get("env_id") != env_id:
        raise ValueError(
            f"{dataset_dir} holds {dataset.manifest.get('env_id')!r} episodes; "
            f"training {env_id!r} needs a dataset of the same task"
        )
    return dataset.subset(range(min(episodes, len(dataset.episodes))))


def _container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def train_sb3(
    agent_cfg: DictConfig | dict,
    dataset_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    steps: int,
    env_id: str | None = None,
    per_task: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """:func:`train` with the ``per_task`` settings of ``env_id``'s task over ``settings``.

    The bench trains every task with one agent config; ``per_task`` maps a task name to the
    trainer settings (and an ``algo`` mapping over ``agent_cfg.algo``) that task needs, so a
    recipe measured on one task leaves the others as they were measured.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    table = _container(per_task) or {}
    unknown = sorted(set(table) - set(TASKS))
    if unknown:
        raise ValueError(f"per_task names unknown tasks {unknown}; valid: {sorted(TASKS)}")
    task = next((t for t in TASKS if task_env_id(t) == env_id), None)
    over = dict(table.get(task) or {})
    algo = over.pop("algo", None)
    valid = set(inspect.signature(train).parameters) - {"agent_cfg", "dataset_dir", "out_dir"}
    if set(over) - valid:
        raise ValueError(
            f"per_task.{task} sets unknown settings {sorted(set(over) - valid)}; valid: "
            f"{sorted(valid | {'algo'})}"
        )
    if algo:  # onto a plain copy: a composed config is in struct mode (no new keys)
        agent_cfg = OmegaConf.merge(OmegaConf.create(_container(agent_cfg)), {"algo": algo})
    return train(agent_cfg, dataset_dir, out_dir, steps, env_id=env_id, **{**settings, **over})


def train(
    agent_cfg: DictConfig | dict,
    dataset_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    progress: bool = True,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 2,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    checkpoint_every: int = 5000,
    prefill_episodes: int = 0,
    demo_episodes: int = 0,
    demo_style: str = "cautious",
    demo_noise: float = 0.0,
    bc_steps: int = 0,
    bc_weight: float = 0.0,
    critic_steps: int = 0,
    shaping: float = 0.0,
    normalize_obs: bool = False,
    threads: int = 1,
    **_: Any,
) -> dict[str, Any]:
    """Train ``agent_cfg``'s SB3 algorithm on ``env_id``'s ``train`` split to ``steps`` env steps.

    ``agent_cfg.algo`` holds the algorithm's keyword arguments (a ``buffer_size`` is capped at
    what the run can fill: ``steps`` plus the prefill). ``n_envs`` envs step in a DummyVecEnv;
    every ``eval_every`` steps SB3's EvalCallback scores ``eval_episodes`` deterministic
    episodes on the ``id`` split; ``normalize_obs`` wraps both in ``VecNormalize`` (rewards
    untouched). Resumes from ``out_dir/checkpoints``; ``dataset_dir`` is read only for a
    replay-buffer prefill with its first ``prefill_episodes`` episodes (off-policy, fresh
    runs). ``demo_episodes`` more come from the task's scripted controller (``demo_style``,
    ``demo_noise``) in the training env, at most a third of ``steps`` in transitions
    (:func:`demo_budget`); ``bc_steps`` > 0 then pre-trains the actor on all of these by
    behaviour cloning before SAC starts, ``critic_steps`` > 0 then fits the critic alone to
    them (:func:`warm_critic`), and ``bc_weight`` > 0 keeps cloning them while SAC learns
    (:class:`BehaviourCloning`). ``shaping`` > 0 adds :class:`ProgressShaping` with that
    scale to the training env (and the prefill's rewards). Returns a summary with ``step``,
    ``interrupted``, ``wall_s``, last ``eval_return``, the demonstrations' ``demo_episodes``
    and ``bc_steps`` and a ``note`` when the budget cut them.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    cls = algorithm(agent_cfg)
    family = str(agent_cfg.family)
    if env_id is None:
        raise ValueError(
            "train_sb3 needs env_id (e.g. 'embodied/Reach-v0'); the train app sets it from "
            "env=<reach|cup_push|cup_carry|cup_pick_place>"
        )
    if steps < 0 or n_envs < 1 or eval_every < 1 or checkpoint_every < 1:
        raise ValueError(
            f"need steps >= 0, n_envs, eval_every, checkpoint_every >= 1; got {steps}, "
            f"{n_envs}, {eval_every}, {checkpoint_every}"
        )
    levers = {
        "prefill_episodes": prefill_episodes,
        "demo_episodes": demo_episodes,
        "demo_noise": demo_noise,
        "bc_steps": bc_steps,
        "bc_weight": bc_weight,
        "critic_steps": critic_steps,
        "shaping": shaping,
    }
    if min(levers.values()) < 0:
        raise ValueError(f"these settings must be >= 0: {levers}")
    demo_steps, bc_cut, critic_cut = demo_budget(steps, bc_steps, critic_steps)
    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    hyper = dict(_container(agent_cfg.get("algo")) or {})
    env_kwargs = {
        "obs_mode": str(agent_cfg.get("obs_mode", "state")),
        **(_container(env_kwargs) or {}),
    }
    identity = OmegaConf.to_yaml(
        {
            "family": family,
            "algo": hyper,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "n_envs": n_envs,
            "normalize_obs": normalize_obs,
            **levers,
            "demo_style": demo_style,
        }
    )
    saved_identity = ckpt_dir / "config.yaml"
    if saved_identity.is_file() and saved_identity.read_text() != identity:
        raise ValueError(
            f"{ckpt_dir} holds checkpoints of a different config; use another out_dir or "
            f"delete {ckpt_dir}.\ncheckpoint:\n{saved_identity.read_text()}requested:\n{identity}"
        )
    write_atomic(saved_identity, identity)
    write_atomic(out / "agent.yaml", OmegaConf.to_yaml(agent_cfg, resolve=True))
    torch.set_num_threads(threads)
    off_policy = issubclass(cls, OffPolicyAlgorithm)
    latest = latest_checkpoint(ckpt_dir, family, needs_buffer=off_policy)
    start_step = latest[0] if latest else 0
    summary: dict[str, Any] = {
        "out_dir": str(out),
        "steps": steps,
        "interrupted": False,
        "demo_episodes": 0,
        "bc_steps": bc_cut,
        "note": "",
    }
    if latest and start_step >= steps:
        if not (out / MODEL_FILE).is_file():
            write_atomic(out / MODEL_FILE, latest[1].read_bytes())
        return {**summary, "step": start_step, "wall_s": 0.0, "eval_return": None}

    train_kwargs = {"shift": "train", **env_kwargs}
    gamma = float(hyper.get("gamma", 0.99))
    wrap = (lambda env: ProgressShaping(env, shaping, gamma)) if shaping > 0 else None
    venv: VecEnv = make_vec_env(
        env_id,
        n_envs,
        seed=seed,
        env_kwargs=train_kwargs,
        vec_env_cls=DummyVecEnv,
        wrapper_class=wrap,
    )
    eval_env: VecEnv = make_vec_env(
        env_id,
        1,
        seed=seed + 10_000,
        env_kwargs={**env_kwargs, "shift": "id"},
        vec_env_cls=DummyVecEnv,
    )
    if normalize_obs:  # running mean/std of observations; rewards stay as the task defines
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False)
        eval_env = VecNormalize(eval_env, training=False, norm_obs=True, norm_reward=False)
    try:
        rows: list[Transition] = []  # demonstrations: a fresh run's prefill, BC's data
        if off_policy and (latest is None or bc_weight > 0):
            rows, ran = demo_rows(
                venv.observation_space.shape,
                dataset_dir,
                env_id,
                train_kwargs,
                prefill_episodes,
                (demo_episodes, demo_steps),
                demo_style,
                demo_noise,
                seed,
                shaping,
                gamma,
            )
            summary["demo_episodes"] = ran
            if (ran, bc_cut, critic_cut) != (demo_episodes, bc_steps, critic_steps):
                summary["note"] = (
                    f"{steps} env steps: demonstrations cut to fit the run, {ran} scripted "
                    f"episodes (of {demo_episodes}, at most {demo_steps} steps), {bc_cut} "
                    f"behaviour-cloning steps (of {bc_steps}) and {critic_cut} critic "
                    f"warm-up steps (of {critic_steps})"
                )
                if progress:
                    print(summary["note"])
        bc_steps, critic_steps = bc_cut, critic_cut
        model = _build(cls, hyper, venv, seed, steps + len(rows), latest, ckpt_dir, family)
        demos = DemoBatches(rows, seed) if rows else None
        extra: list[BaseCallback] = []
        if demos is not None and bc_weight > 0:
            extra.append(BehaviourCloning(demos, bc_weight))
        if demos is not None and latest is None:
            added = prefill_replay_buffer(model, rows)
            if isinstance(venv, VecNormalize):  # the statistics start from the demos' states
                venv.obs_rms.update(demos.obs)
            if bc_steps > 0:
                pretrain_actor(model, demos, bc_steps)
            if critic_steps > 0:
                warm_critic(model, critic_steps)  # type: ignore[arg-type]
            if progress:
                print(
                    f"prefilled the replay buffer with {added} demonstration transitions"
                    + (f", actor pre-trained for {bc_steps} steps" if bc_steps else "")
                )
        old_rows, fields = previous_rows(out, start_step)
        logger = configure(str(out), ["csv", "tensorboard"])
        continue_csv(logger, old_rows, fields)
        model.set_logger(logger)
        if progress and latest:
            print(f"resuming {family} from step {start_step} in {out}")
        summary.update(
            _learn(
                model,
                eval_env,
                out,
                ckpt_dir,
                family,
                steps,
                start_step,
                eval_every,
                eval_episodes,
                checkpoint_every,
                progress,
                extra,
            )
        )
        logger.close()
    finally:
        venv.close()
        eval_env.close()
    return summary


def demo_budget(steps: int, bc_steps: int, critic_steps: int) -> tuple[int, int, int]:
    """(env steps of scripted demonstrations, BC steps, critic warm-up steps) that a run of
    ``steps`` env steps allows.

    Demonstrations stay a sideline of the run: at most a third of its env steps in scripted
    transitions (counted as run, so short successful episodes buy more of them) and no more
    BC or warm-up steps than env steps, so a smoke run gets smoke-sized demos and says so.
    """
    return steps // 3, min(bc_steps, steps), min(critic_steps, steps)


def demo_rows(
    shape: tuple[int, ...],
    dataset_dir: str | os.PathLike | None,
    env_id: str,
    env_kwargs: dict[str, Any],
    prefill_episodes: int,
    demos: tuple[int, int],
    style: str,
    noise: float,
    seed: int,
    shaping: float,
    gamma: float,
) -> tuple[list[Transition], int]:
    """The demonstrations for a fresh off-policy run and how many scripted episodes ran:
    dataset episodes, then ``demos`` = (episodes, at most so many steps) of the scripted
    controller, all with the rewards of the training env (shaped when it is)."""
    env: gymnasium.Env = gymnasium.make(env_id, **env_kwargs)
    if shaping > 0:
        env = ProgressShaping(env, shaping, gamma)
    try:
        rows: list[Transition] = []
        if prefill_episodes > 0:
            rows += dataset_transitions(load_demos(dataset_dir, env_id, prefill_episodes), shape)
            if shaping > 0:
                rows = shaped(rows, str(env.unwrapped.task_name), shaping, gamma)
        episodes, max_steps = demos
        ran = 0
        if episodes > 0:  # seeds apart from the training envs' (seed, seed + 1, ...)
            scripted, ran = scripted_transitions(
                env, episodes, seed + 20_000, style, noise, max_steps
            )
            rows += scripted
        return rows, ran
    finally:
        env.close()


class DemoBatches:
    """Demonstrated (observation, action) pairs, served as batches normalised as SAC sees
    them; actions kept just inside +-1, where tanh (SAC's squashing) has a finite inverse."""

    def __init__(self, rows: list[Transition], seed: int):
        self.obs = np.stack([r[0] for r in rows])
        self.act = torch.as_tensor(np.clip(np.stack([r[2] for r in rows]), -0.97, 0.97))
        self.rng = np.random.default_rng(seed)

    def sample(self, model: BaseAlgorithm, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.integers(len(self.obs), size=size)
        obs = self.obs[idx]
        vn = model.get_vec_normalize_env()
        if vn is not None:
            obs = vn.normalize_obs(obs)
        return torch.as_tensor(obs, dtype=torch.float32), self.act[idx].float()


def demo_nll(model: BaseAlgorithm, demos: DemoBatches) -> torch.Tensor:
    """The actor's mean negative log-likelihood of a batch of demonstrated actions: fits the
    action and how sure to be of it (a grip it must never loosen gets a narrow spread)."""
    actor = model.actor  # type: ignore[attr-defined]
    obs, act = demos.sample(model, int(getattr(model, "batch_size", 256)))
    mean, log_std, _ = actor.get_action_dist_params(obs)
    return -actor.action_dist.proba_distribution(mean, log_std).log_prob(act).mean()


def pretrain_actor(model: BaseAlgorithm, demos: DemoBatches, steps: int) -> None:
    """Behaviour cloning: ``steps`` steps of the actor's own optimiser on :func:`demo_nll`."""
    actor = model.actor  # type: ignore[attr-defined]
    for _ in range(steps):
        loss = demo_nll(model, demos)
        actor.optimizer.zero_grad()
        loss.backward()
        actor.optimizer.step()


def warm_critic(model: SAC, steps: int) -> None:
    """``steps`` of SAC's own critic update (soft Bellman targets, Polyak-averaged target
    nets) on the replay buffer as it stands, the actor and temperature held fixed.

    Offline-to-online practice: after a prefill and behaviour cloning, the critic first
    learns what the cloned actor is worth, so the first actor updates follow a critic that
    knows carrying from dropping instead of a random one.
    """
    buffer = model.replay_buffer
    assert buffer is not None
    ent_coef = (
        float(torch.exp(model.log_ent_coef.detach()))
        if model.log_ent_coef is not None
        else float(model.ent_coef_tensor)
    )
    model.policy.set_training_mode(True)
    for _ in range(steps):
        data = buffer.sample(model.batch_size, env=model.get_vec_normalize_env())
        with torch.no_grad():
            nxt, logp = model.actor.action_log_prob(data.next_observations)
            q_next = torch.cat(model.critic_target(data.next_observations, nxt), dim=1)
            q_next = q_next.min(dim=1, keepdim=True).values - ent_coef * logp.reshape(-1, 1)
            target = data.rewards + (1 - data.dones) * model.gamma * q_next
        loss = 0.5 * sum(
            torch.nn.functional.mse_loss(q, target)
            for q in model.critic(data.observations, data.actions)
        )
        model.critic.optimizer.zero_grad()
        loss.backward()
        model.critic.optimizer.step()
        polyak_update(model.critic.parameters(), model.critic_target.parameters(), model.tau)
    model.policy.set_training_mode(False)


class BehaviourCloning(BaseCallback):
    """Keeps pulling SAC's actor toward the demonstrations while it learns: after each env
    step once updates have begun, one step of the actor's optimiser on ``weight`` x
    :func:`demo_nll`, so an untrained critic cannot argue the actor out of carrying."""

    def __init__(self, demos: DemoBatches, weight: float):
        super().__init__()
        self.demos, self.weight = demos, weight

    def _on_step(self) -> bool:
        if self.num_timesteps > self.model.learning_starts:  # type: ignore[attr-defined]
            actor = self.model.actor  # type: ignore[attr-defined]
            loss = self.weight * demo_nll(self.model, self.demos)
            actor.optimizer.zero_grad()
            loss.backward()
            actor.optimizer.step()
        return True


def _build(
    cls: type[BaseAlgorithm],
    hyper: dict[str, Any],
    venv: VecEnv,
    seed: int,
    capacity: int,
    latest: tuple[int, Path] | None,
    ckpt_dir: Path,
    family: str,
) -> BaseAlgorithm:
    """A fresh model, or the latest checkpoint (with its replay buffer) on ``venv``."""
    if latest is None:
        hyper = dict(hyper)
        if "buffer_size" in hyper:  # no larger than the run needs: nothing would be evicted
            hyper["buffer_size"] = max(1, min(int(hyper["buffer_size"]), capacity))
        return cls(env=venv, seed=seed, device="cpu", verbose=0, **hyper)
    model = load_sb3(latest[1], cls, env=venv)
    restore_normalizer(model)
    if isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(ckpt_dir / f"{family}_replay_buffer_{latest[0]}_steps.pkl")
    return model


def _learn(
    model: BaseAlgorithm,
    eval_env: VecEnv,
    out: Path,
    ckpt_dir: Path,
    family: str,
    steps: int,
    start_step: int,
    eval_every: int,
    eval_episodes: int,
    checkpoint_every: int,
    progress: bool,
    extra: list[BaseCallback],
) -> dict[str, Any]:
    """``model.learn`` with eval, checkpoint, stop and progress callbacks; writes model.zip."""
    checkpoint = AtomicCheckpoint(checkpoint_every, ckpt_dir, family)
    evaluate = ScheduledEval(eval_env, eval_every, eval_episodes)
    start = time.perf_counter()
    with graceful_stop() as flag:
        callbacks: list[BaseCallback] = [*extra, evaluate, checkpoint, StopOnRequest(flag)]
        if progress:
            callbacks.append(TqdmProgress(steps, f"train {family}", evaluate))
        model.learn(
            total_timesteps=steps - start_step,
            callback=CallbackList(callbacks),
            reset_num_timesteps=start_step == 0,
        )
        if not flag.requested and evaluate.done_at != model.num_timesteps:
            evaluate.evaluate()
        checkpoint.save(final=not flag.requested)
        stash_normalizer(model)
        write_atomic(out / MODEL_FILE, model.save, ".tmp.zip")
    last = evaluate.last_mean_reward
    return {
        "step": int(model.num_timesteps),
        "interrupted": flag.requested,
        "wall_s": time.perf_counter() - start,
        "eval_return": None if not np.isfinite(last) else float(last),
    }
