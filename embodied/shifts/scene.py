"""What a shift's writer writes into: the scene the env hands over, and the running episode.

The catalogue's writers name scene elements only by role (``scene["cup_body"]``); the env that
owns the MJCF maps each role to its own element names (``embodied.envs.scene``), so the core
never reads a scene asset. An episode-stage shift (a shove, noisy or delayed actions) acts while
the episode runs, through an :class:`Effect` whose hooks the env calls.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True, eq=False)  # hashed by identity: build_model caches compiled bases by it
class Scene:
    """An MJCF scene and, per role a writer names, the names of the scene's elements in it."""

    xml: str
    roles: Mapping[str, tuple[str, ...]]

    def __getitem__(self, role: str) -> tuple[str, ...]:
        if role not in self.roles:
            raise KeyError(f"the scene names no {role!r}; its roles: {sorted(self.roles)}")
        return self.roles[role]


@dataclass(frozen=True)
class EpisodeStart:
    """What an episode-stage writer may read as the episode starts (after the task's setup)."""

    model: mujoco.MjModel
    scene: Scene
    seed: int  # the episode's seed: an effect draws its own random stream from it
    hold: np.ndarray  # the action that changes nothing now: a delayed arm starts with it


class Effect:
    """The running part of an episode-stage shift; the hooks do nothing unless overridden."""

    per_substep = False  # True: the env calls ``substep`` before every physics substep

    def action(self, action: np.ndarray) -> np.ndarray:
        """The action as it reaches the servos, from the action the agent chose."""
        return action

    def substep(self, data: mujoco.MjData, step: int) -> None:
        """Write into ``data`` before physics substep ``step`` of the episode (0 at reset)."""
