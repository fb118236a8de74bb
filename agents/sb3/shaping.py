"""Potential-based progress shaping (Ng et al. 1999) for SAC's training env.

The potential reads the point each task moves to its target from the task class's
``progress_point`` (``envs/arm.py``), so a new task declares it in its own file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np

from embodied.envs.arm import STATE_LABELS

if TYPE_CHECKING:
    from embodied.agents.sb3.demos import Transition

Point = tuple[str, int]  # (state label prefix of the moving point, axes that count)


def progress_point(task_cls: type) -> Point:
    """A task class's ``progress_point``, failing clearly where the task declares none."""
    point = getattr(task_cls, "progress_point", None)
    if point is None:
        raise ValueError(
            f"no progress potential for task {getattr(task_cls, 'task_name', '?')!r} "
            f"({task_cls.__module__}.{task_cls.__qualname__}): declare progress_point = "
            f"(point, axes) on the class, e.g. ('cup', 2) for the cup on the table plane"
        )
    return point


def potential(state: np.ndarray, point: Point, scale: float) -> np.ndarray:
    """Phi(s) = -scale x the distance (m) from the task's moving ``point`` to the target, read
    from the ``state`` observation (so dataset transitions can be shaped the same way)."""
    name, dims = point
    i, t = STATE_LABELS.index(f"{name}_x"), STATE_LABELS.index("target_x")
    s = np.asarray(state, dtype=np.float64)
    return -scale * np.linalg.norm(s[..., i : i + dims] - s[..., t : t + dims], axis=-1)


def shaped(rows: list[Transition], point: Point, scale: float, gamma: float) -> list[Transition]:
    """Dataset transitions with the reward :class:`ProgressShaping` would have given them."""
    return [
        (
            s,
            n,
            a,
            r + gamma * float(potential(n, point, scale)) - float(potential(s, point, scale)),
            d,
        )
        for s, n, a, r, d in rows
    ]


class ProgressShaping(gymnasium.Wrapper):
    """Potential-based shaping for SAC's training env only: each step pays
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
        self.point = progress_point(type(env.unwrapped))
        self.scale, self.gamma = float(scale), float(gamma)
        self.phi = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.phi = float(potential(obs, self.point, self.scale))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = float(potential(obs, self.point, self.scale))
        reward = float(reward) + self.gamma * phi - self.phi
        self.phi = phi
        return obs, reward, terminated, truncated, info
