"""Scripted controllers: the data-collection policy and the sanity baseline of every task.

They read MuJoCo's state through ``env.unwrapped`` (privileged) and steer the Cartesian servo
targets toward waypoints. ``cautious`` moves at a third of the top speed and waits for the
hand to arrive; ``aggressive`` moves at full speed and waits for nothing. ``noise`` adds
Gaussian noise (std, in action units) to every action, from the policy's own seed, and makes
the script itself sloppy where a task has a sloppy variant: a noisy CupPush draws per episode
the hand's height at the cup, how far its servo target leads the cup and the gap it leaves
when it comes down behind the cup (``SLOPPY_PUSH``), so some pushes tip the cup. Collected
data needs those failures: a model that never saw a cup tip cannot tell a plan that tips it.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from embodied.envs.arm import MAX_DELTA, ArmEnv

STYLES = {"cautious": 0.35, "aggressive": 1.0}
# CupPush's contact: hand height (m), servo lead (x the clean step), gap behind the cup (m).
CLEAN_PUSH = {"height": 0.03, "lead": 1.0, "gap": 0.03}
SLOPPY_PUSH = {"height": (0.03, 0.09), "lead": (1.0, 3.0), "gap": (0.0, 0.03)}


class ScriptedPolicy:
    """A waypoint controller; ``_waypoint`` is each task's script."""

    def __init__(
        self, task: str, style: str = "cautious", noise: float = 0.0, seed: int | None = None
    ):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; valid: {sorted(STYLES)}")
        if task not in SCRIPTS:
            raise ValueError(f"no scripted controller for {task!r}; valid: {sorted(SCRIPTS)}")
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
        self._env = env.unwrapped  # type: ignore[assignment]
        self.phase = 0
        self.wait = 0
        self.push = dict(CLEAN_PUSH)
        if self.noise and self.task == "CupPush":
            self.push = {k: float(self._rng.uniform(*r)) for k, r in SLOPPY_PUSH.items()}

    def act(self, obs: Any) -> np.ndarray:
        env = self._env
        if env is None:
            raise RuntimeError("call reset(env) after env.reset() before act()")
        waypoint, grip = SCRIPTS[self.task](self, env)
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


def _reach(policy: ScriptedPolicy, env: ArmEnv) -> tuple[np.ndarray | None, float]:
    return env.target.copy(), -1.0


def _carry(policy: ScriptedPolicy, env: ArmEnv) -> tuple[np.ndarray | None, float]:
    # the servo target is offset so that the cup, not the hand, lands on the target
    return env.target + np.array([0.0, 0.0, env.grasp_offset]), 1.0


def _push(policy: ScriptedPolicy, env: ArmEnv) -> tuple[np.ndarray | None, float]:
    cup = env.sensor("cup_pos")
    to_goal = env.target[:2] - cup[:2]
    dist = np.linalg.norm(to_goal)
    u = to_goal / max(dist, 1e-6)
    behind = cup[:2] - u * (env.cup_radius + policy.push["gap"])
    low, high = policy.push["height"], 0.15
    if dist < 0.01:
        return None, 1.0
    hand = env.sensor("ee_pos")
    if policy.phase == 0:  # above the spot behind the cup
        wp = np.array([*behind, high])
        if policy.arrived(env, wp, 0.02):
            policy.advance()
        return wp, 1.0
    if policy.phase == 1:  # down beside the cup
        wp = np.array([*behind, low])
        if policy.arrived(env, wp, 0.015):
            policy.advance()
        return wp, 1.0
    # push along the line to the goal; back off and re-approach when off the line
    rel = hand[:2] - cup[:2]
    lateral = abs(rel[0] * u[1] - rel[1] * u[0])
    if lateral > 0.025 or rel @ u > 0:
        policy.phase = 0
        return np.array([*hand[:2], high]), 1.0
    step = min(dist, policy.push["lead"] * 0.02 * policy.speed / STYLES["cautious"])
    return np.array([*(cup[:2] - u * (env.cup_radius + 0.012) + u * step), low]), 1.0


def _pick_place(policy: ScriptedPolicy, env: ArmEnv) -> tuple[np.ndarray | None, float]:
    cup = env.sensor("cup_pos")
    high = 0.2
    grasp_z = env.cup_half_height + env.grasp_offset
    if policy.wait > 0:
        policy.wait -= 1
        return env.data.ctrl[:3].copy(), (1.0 if 2 <= policy.phase <= 5 else -1.0)
    if policy.phase == 0:  # open, above the cup
        wp = np.array([cup[0], cup[1], high])
        if policy.arrived(env, wp, 0.015):
            policy.advance()
        return wp, -1.0
    if policy.phase == 1:  # down around the cup
        wp = np.array([cup[0], cup[1], grasp_z])
        if policy.arrived(env, wp, 0.008):
            policy.advance(steps_to_wait=4)
        return wp, -1.0
    if policy.phase == 2:  # squeezed: lift
        wp = np.array([env.data.ctrl[0], env.data.ctrl[1], high])
        if policy.arrived(env, wp, 0.02):
            policy.advance()
        return wp, 1.0
    if policy.phase == 3:  # over the coaster
        wp = np.array([env.target[0], env.target[1], high])
        if policy.arrived(env, wp, 0.01):
            policy.advance(steps_to_wait=2 if policy.style == "cautious" else 0)
        return wp, 1.0
    if policy.phase == 4:  # lower until the cup stands on the table
        wp = np.array([env.target[0], env.target[1], grasp_z + 0.004])
        if policy.arrived(env, wp, 0.006):
            policy.advance(steps_to_wait=2)
        return wp, 1.0
    if policy.phase == 5:  # let go
        policy.advance(steps_to_wait=3)
        return env.data.ctrl[:3].copy(), -1.0
    wp = np.array([env.target[0], env.target[1], high])  # and rise clear
    return wp, -1.0


SCRIPTS = {"Reach": _reach, "CupCarry": _carry, "CupPush": _push, "CupPickPlace": _pick_place}


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
