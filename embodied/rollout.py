"""The episode loop: reset at a seed, then ``policy.act`` -> ``env.step`` until the episode ends.

Collection, evaluation, the held-out video clips and the benchmarks all run episodes through
``rollout``, so they agree on how an episode starts (``env.reset(seed=...)`` then
``policy.reset(env)``), what an action is (float32, as the action space declares) and when it
ends; what each of them records is its ``on_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from embodied.protocols import Policy


@dataclass(frozen=True)
class Step:
    """One ``env.step`` of a rollout: what went in and what came out."""

    index: int  # 1 for the first step
    obs: Any  # the observation the action was chosen from
    action: np.ndarray
    next_obs: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


def rollout(
    env: gymnasium.Env,
    policy: Policy,
    seed: int,
    on_step: Callable[[Step], bool | None] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    horizon: int | None = None,
    on_reset: Callable[[Any, dict[str, Any]], None] | None = None,
) -> Step | None:
    """Run one episode of ``policy`` in ``env`` from ``env.reset(seed=seed, options=...)``.

    The episode ends when the env terminates or truncates it, or, with ``horizon``, after
    exactly that many steps whatever the env says (a clip that runs on through a drop), or
    when ``on_step`` returns True. ``on_reset(obs, info)`` sees the start. Returns the last
    step (None when ``horizon`` is 0).
    """
    obs, info = env.reset(seed=seed, options=dict(options) if options else None)
    policy.reset(env)
    if on_reset is not None:
        on_reset(obs, info)
    last, index = None, 0
    while horizon is None or index < horizon:
        index += 1
        action = np.asarray(policy.act(obs), np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        last = Step(index, obs, action, next_obs, float(reward), terminated, truncated, info)
        obs = next_obs
        stop = on_step(last) if on_step is not None else False
        if stop or (horizon is None and (terminated or truncated)):
            break
    return last
