"""Scripted controllers: the data-collection policy and the sanity baseline of every task.

Each task scripts itself (``ArmEnv.waypoint``: the servo target and grip now, from MuJoCo's
state, privileged); :class:`ScriptedPolicy` steers the Cartesian servo targets toward those
waypoints in a style. ``cautious`` moves at a third of the top speed and waits for the hand to
arrive; ``aggressive`` moves at full speed and waits for nothing. ``noise`` adds Gaussian noise
(std, in action units) to every action, from the policy's own seed, and makes the script
itself sloppy where the task has a sloppy variant (``ArmEnv.script_variant``: CupPush).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from embodied.envs.arm import MAX_DELTA, ArmEnv
from embodied.registration import TASKS

STYLES = {"cautious": 0.35, "aggressive": 1.0}


def scripted_tasks() -> list[str]:
    """The tasks whose class scripts itself (overrides ``ArmEnv.waypoint``)."""
    return sorted(n for n, t in TASKS.items() if t.waypoint is not ArmEnv.waypoint)  # type: ignore[attr-defined]


class ScriptedPolicy:
    """A waypoint controller for ``task``; its state (phase, wait, variant) is the script's."""

    def __init__(
        self, task: str, style: str = "cautious", noise: float = 0.0, seed: int | None = None
    ):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; valid: {sorted(STYLES)}")
        if task not in scripted_tasks():
            raise ValueError(f"no scripted controller for {task!r}; valid: {scripted_tasks()}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.task = task
        self.style = style
        self.speed = STYLES[style]
        self.noise = float(noise)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._env: ArmEnv | None = None

    def reset(self, env: gymnasium.Env) -> None:
        unwrapped = env.unwrapped
        if getattr(unwrapped, "task_name", None) != self.task:
            raise ValueError(f"a {self.task} script cannot drive {type(unwrapped).__name__}")
        self._env = unwrapped  # type: ignore[assignment]
        self.phase = 0
        self.wait = 0
        self.variant = self._env.script_variant(self._rng if self.noise else None)

    def act(self, obs: Any) -> np.ndarray:
        env = self._env
        if env is None:
            raise RuntimeError("call reset(env) after env.reset() before act()")
        waypoint, grip = env.waypoint(self)
        action = np.zeros(4)
        if waypoint is not None:
            error = (waypoint - env.data.ctrl[:3]) / MAX_DELTA
            action[:3] = np.clip(error, -self.speed, self.speed)
        action[3] = grip
        if self.noise:
            action += self.noise * self._rng.standard_normal(4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # helpers for scripts
    def arrived(self, env: ArmEnv, waypoint: np.ndarray, tol: float = 0.01) -> bool:
        """Cautious waits for the hand itself; aggressive only for its servo target."""
        where = env.sensor("ee_pos") if self.style == "cautious" else env.data.ctrl[:3]
        return bool(np.linalg.norm(where - waypoint) < tol)

    def advance(self, steps_to_wait: int = 0) -> None:
        self.phase += 1
        self.wait = steps_to_wait


def make_policy(
    agent_cfg: Any = None,
    checkpoint_dir: str | None = None,
    env: gymnasium.Env | None = None,
    seed: int = 0,
) -> ScriptedPolicy:
    """The factory the evaluation grid calls (configs/agent/scripted*.yaml)."""
    if env is None:
        raise ValueError("the scripted agent needs the env to know its task")
    style = (agent_cfg or {}).get("style", "cautious")
    noise = float((agent_cfg or {}).get("noise", 0.0))
    return ScriptedPolicy(env.unwrapped.task_name, style=style, noise=noise, seed=seed)
