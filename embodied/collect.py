"""Data collection: the task's scripted controller (with noise) and random actions, saved.

Episodes that end in a drop are kept: a world model must see failures to predict them. A run whose
simulation diverges (``info["physics_error"]``) is skipped and replaced by the next seed, because
its states are not physics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.registration import parse_env_id
from tqdm.auto import tqdm

from embodied.dataset import OBS_MODES, Episode, write_dataset
from embodied.rollout import Step, rollout

STYLES = ("cautious", "aggressive")
FAILURES = ("dropped", "tipped", "slipped")  # failure_kind's labels
TIP_ANGLE = 1.0  # rad: the cup tasks' tipping threshold (envs/cup_push.py, cup_pick_place.py)


class RandomActions:
    """Temporally correlated random actions: they wander further than white noise would.

    With ``hold`` the grip stays closed (grip = 1), so the episode explores carrying motions
    instead of ending in a drop within a few steps; without it the grip is random too.
    """

    def __init__(
        self,
        action_space: gymnasium.spaces.Box,
        seed: int,
        hold: bool = False,
        smoothing: float = 0.8,
    ):
        self.space = action_space
        self.rng = np.random.default_rng(seed)
        self.hold = hold
        self.smoothing = smoothing
        self.prev = np.zeros(action_space.shape, np.float32)

    def reset(self, env: gymnasium.Env) -> None:
        self.prev = self.rng.uniform(self.space.low, self.space.high).astype(np.float32)

    def act(self, obs: Any) -> np.ndarray:
        fresh = self.rng.uniform(self.space.low, self.space.high)
        self.prev = (self.smoothing * self.prev + (1 - self.smoothing) * fresh).astype(np.float32)
        action = self.prev.copy()
        if self.hold:
            action[-1] = self.space.high[-1]
        return np.clip(action, self.space.low, self.space.high)


class GripPerturbed:
    """A policy whose grip is now and then replaced by a random value for a few steps.

    Scripted controllers always squeeze; without these episodes a model never sees what a
    looser grip does (the cup slips, the pads lose touch, it falls or is caught again), and a
    planner, free to pick any grip, finds that out only by dropping the cup.
    """

    def __init__(self, policy: Any, seed: int, prob: float = 0.08, max_len: int = 3):
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.prob, self.max_len = prob, max_len
        self.left, self.grip = 0, 1.0

    def reset(self, env: gymnasium.Env) -> None:
        self.policy.reset(env)
        self.left = 0

    def act(self, obs: Any) -> np.ndarray:
        action = np.array(self.policy.act(obs), np.float32)
        if self.left == 0 and self.rng.random() < self.prob:
            self.left = int(self.rng.integers(1, self.max_len + 1))
            self.grip = float(self.rng.uniform(-1.0, 1.0))
        if self.left > 0:
            self.left -= 1
            action[-1] = self.grip
        return action


def env_obs_mode(obs_modes: Sequence[str]) -> str:
    """The gymnasium ``obs_mode`` that yields every requested observation."""
    modes = set(obs_modes)
    bad = modes - set(OBS_MODES)
    if bad or not modes:
        raise ValueError(f"obs_modes {list(obs_modes)} invalid; choose from {list(OBS_MODES)}")
    return "state+pixels" if len(modes) == 2 else modes.pop()


def split_obs(obs: Any, obs_mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(state, pixels) from an observation of the given env obs_mode."""
    if obs_mode == "state+pixels":
        return obs["state"], obs["pixels"]
    return (obs, None) if obs_mode == "state" else (None, obs)


def failure_kind(env: gymnasium.Env, info: dict[str, Any]) -> str | None:
    """How an episode failed, from its last ``info`` and MuJoCo's state at its end.

    ``dropped`` in the envs' info is every failure that ends an episode; the cup's tilt in
    MuJoCo then tells a tip (over ``TIP_ANGLE``, the tasks' threshold) from a fall (out of the
    pads, off the table). ``slipped``: held to the end but slid too far in the hand.
    """
    if info.get("dropped"):
        arm = env.unwrapped
        tilt = float(arm.tilt(arm.sensors(arm.data.sensordata)))
        return "tipped" if tilt > TIP_ANGLE else "dropped"
    return "slipped" if info.get("slipped") else None


def run_episode(env: gymnasium.Env, policy: Any, seed: int, split: str, obs_mode: str) -> Episode:
    """One episode of ``policy`` in ``env``; ``meta["physics_error"]`` marks a diverged one and
    ``meta["failure"]`` says how it failed (``failure_kind``), None when it did not."""
    states, frames, physics = [], [], {}
    steps: dict[str, list] = {
        k: [] for k in ("action", "reward", "dropped", "success", "terminated")
    }
    physics_error = False

    def start(obs: Any, info: dict[str, Any]) -> None:
        physics.update(info.get("physics", {}))
        s, p = split_obs(obs, obs_mode)
        states.append(s)
        frames.append(p)

    def record(step: Step) -> None:
        nonlocal physics_error
        steps["action"].append(step.action)
        steps["reward"].append(step.reward)
        steps["dropped"].append(bool(step.info.get("dropped", False)))
        steps["success"].append(bool(step.info.get("is_success", False)))
        steps["terminated"].append(bool(step.terminated))
        physics_error = physics_error or bool(step.info.get("physics_error", False))
        s, p = split_obs(step.next_obs, obs_mode)
        states.append(s)
        frames.append(p)

    last = rollout(env, policy, seed, record, options={"shift": split}, on_reset=start)
    failure = None if last is None else failure_kind(env, last.info)
    return Episode(
        state=None if states[0] is None else np.stack(states),
        pixels=None if frames[0] is None else np.stack(frames),
        physics=physics,
        seed=seed,
        meta={"physics_error": physics_error, "failure": failure},
        **{k: np.asarray(v) for k, v in steps.items()},
    )


def _check_mix(
    episodes: int,
    styles: Sequence[str],
    noises: Sequence[float],
    random_fraction: float,
    grip_fraction: float,
) -> None:
    """ValueError naming the valid values when the collection's mix is not one."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1; got {episodes}")
    for name, value in (("random_fraction", random_fraction), ("grip_fraction", grip_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {value}")
    if not styles or set(styles) - set(STYLES):
        raise ValueError(f"styles {list(styles)} invalid; choose from {list(STYLES)}")
    if not noises or not all(0.0 <= n < float("inf") for n in noises):
        raise ValueError(f"noises must be finite numbers >= 0; got {list(noises)}")


def _draw_policy(
    env: gymnasium.Env,
    rng: np.random.Generator,
    ep_seed: int,
    random: bool,
    styles: Sequence[str],
    noises: Sequence[float],
    grip_fraction: float,
) -> tuple[Any, dict[str, Any]]:
    """One episode's policy and its meta: random actions (half holding the grip closed) or the
    task's script with a drawn style and noise, a share of them with a perturbed grip."""
    if random:
        hold = bool(rng.random() < 0.5)
        meta = {"style": "random-hold" if hold else "random", "noise": 1.0}
        return RandomActions(env.action_space, ep_seed, hold=hold), meta
    meta = {"style": str(rng.choice(styles)), "noise": float(rng.choice(noises))}
    policy = env.unwrapped.scripted_policy(style=meta["style"], noise=meta["noise"], seed=ep_seed)
    meta["grip_perturbed"] = bool(rng.random() < grip_fraction)
    if meta["grip_perturbed"]:
        policy = GripPerturbed(policy, ep_seed + 1)
    return policy, meta


def collect(
    env_id: str,
    out_dir: str | os.PathLike,
    episodes: int,
    split: str = "train",
    seed: int = 0,
    obs_modes: Sequence[str] = ("state", "pixels"),
    image_size: int = 64,
    styles: Sequence[str] = STYLES,
    noises: Sequence[float] = (0.0, 0.1, 0.3),
    random_fraction: float = 0.1,
    grip_fraction: float = 0.3,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect ``episodes`` episodes of ``split`` into ``out_dir``; returns the manifest.

    Each episode is either random actions (a ``random_fraction`` share, half of them with the grip
    held closed) or the scripted policy (a ``grip_fraction`` share of them with random grip
    perturbations, see ``GripPerturbed``)
    with a style and action noise drawn from ``styles`` / ``noises``; every draw descends from
    ``seed``.
    """
    _check_mix(episodes, styles, noises, random_fraction, grip_fraction)
    obs_mode = env_obs_mode(obs_modes)
    env = gymnasium.make(
        env_id, obs_mode=obs_mode, shift=split, image_size=image_size, **(env_kwargs or {})
    )
    rng = np.random.default_rng(seed)
    n_random = int(round(random_fraction * episodes))
    is_random = np.zeros(episodes, bool)
    is_random[rng.choice(episodes, n_random, replace=False)] = True
    out: list[Episode] = []
    skipped = 0
    bar = tqdm(total=episodes, desc=f"collect {env_id} {split}", disable=not progress)
    try:
        while len(out) < episodes:
            ep_seed = int(rng.integers(2**31 - 1))
            mix = (styles, noises, grip_fraction)
            policy, meta = _draw_policy(env, rng, ep_seed, bool(is_random[len(out)]), *mix)
            episode = run_episode(env, policy, ep_seed, split, obs_mode)
            if episode.meta.pop("physics_error"):
                skipped += 1
                if skipped > episodes:
                    raise RuntimeError(f"{skipped} episodes diverged in {env_id}; giving up")
                continue
            episode.meta.update(meta)
            out.append(episode)
            bar.update()
            bar.set_postfix(
                success=f"{np.mean([e.success.any() for e in out]):.2f}",
                drop=f"{np.mean([e.dropped.any() for e in out]):.2f}",
            )
    finally:
        bar.close()
        env.close()
    unwrapped = env.unwrapped
    return write_dataset(
        out_dir,
        out,
        env_id=env_id,
        task=parse_env_id(env_id)[1],
        split=split,
        obs_modes=list(obs_modes),
        image_size=image_size,
        state_labels=list(getattr(unwrapped, "state_labels", [])),
        extra={
            "collect": {
                "seed": seed,
                "styles": list(styles),
                "noises": [float(n) for n in noises],
                "random_fraction": random_fraction,
                "grip_fraction": grip_fraction,
                "skipped_physics_errors": skipped,
            }
        },
    )
