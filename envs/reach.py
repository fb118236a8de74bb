"""Reach: bring the gripper to a point (the sanity task).

Reward per step: ``-min(d, 0.5) / 0.5`` with ``d`` the distance (m) from the grip point to the
target. Success: within 2 cm (the episode ends). No failure mode: ``dropped`` stays false.
"""

from __future__ import annotations

import numpy as np

from embodied.envs.arm import ArmEnv
from embodied.envs.scripted import ScriptedPolicy
from embodied.envs.sensors import norm


class Reach(ArmEnv):
    task_name = "Reach"
    max_episode_steps = 60
    success_radius = 0.02
    reward_entries = ("ee_x", "ee_y", "ee_z")
    progress_point = ("ee", 3)

    def _setup_episode(self, rng: np.random.Generator) -> None:
        start = rng.uniform([0.4, -0.2, 0.18], [0.6, 0.2, 0.35])
        while True:
            target = rng.uniform([0.35, -0.25, 0.15], [0.65, 0.25, 0.4])
            if np.linalg.norm(target - start) > 0.1:
                break
        self.target = target
        self.place_hand(start, opening=0.02)
        # the cup waits on a far corner of the table, out of the way
        self.place_cup(np.array([0.8, 0.5, self.cup_half_height]))

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = norm(self.sensors(sensordata)["ee_pos"] - self.target)
        return -np.minimum(d, 0.5) / 0.5, d < self.success_radius, np.zeros_like(d, dtype=bool)

    def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
        return self.target.copy(), -1.0
