"""CupPickPlace: grasp the cup from the table, lift it, and set it upright on a coaster.

Reward per step: ``-(0.5 * min(d_hand, 0.5) / 0.5 + d_cup / 0.3)`` with ``d_hand`` the grip
point's distance to the cup's grasp point and ``d_cup`` the cup's distance to its resting pose
on the coaster (m). Success: the cup released (no pad touching it), upright (tilt < 0.3 rad),
resting on the table within 3 cm of the coaster. Failure: after a grasp, the cup leaves the
pads more than 1.5 cm above the table (dropped), or it tips over (tilt > 1 rad).
"""

from __future__ import annotations

import numpy as np

from embodied.envs.arm import ArmEnv


class CupPickPlace(ArmEnv):
    task_name = "CupPickPlace"
    success_radius = 0.03
    plan_horizon = 10
    # the cup to the coaster (and the hand to the cup)
    reward_entries = ("cup_x", "cup_y", "cup_z")
    progress_point = ("cup", 2)

    def _setup_episode(self, rng: np.random.Generator) -> None:
        cup = np.array([*rng.uniform([0.42, -0.2], [0.58, 0.0]), self.cup_half_height])
        while True:
            goal = rng.uniform([0.4, 0.0], [0.6, 0.22])
            if np.linalg.norm(goal - cup[:2]) > 0.12:
                break
        self.target = np.array([*goal, 0.005])
        self.place_hand(rng.uniform([0.4, -0.15, 0.2], [0.6, 0.15, 0.28]), opening=0.045)
        self.data.ctrl[6] = -1.0
        self.place_cup(cup)
        self.settle(0.05, grip=-1.0)

    @property
    def grasp_offset(self) -> float:
        return 0.4 * self.cup_half_height

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.sensors(sensordata)
        cup = s["cup_pos"]
        h = self.cup_half_height
        grasp_point = cup + np.array([0.0, 0.0, self.grasp_offset])
        d_hand = np.linalg.norm(s["ee_pos"] - grasp_point, axis=-1)
        rest = np.array([self.target[0], self.target[1], h])
        d_cup = np.linalg.norm(cup - rest, axis=-1)
        reward = -(0.5 * np.minimum(d_hand, 0.5) / 0.5 + d_cup / 0.3)
        # a cup in the air that no pad touches has left the gripper after a grasp
        lifted = cup[..., 2] - h > 0.015
        touching = self.touching(s)
        tilt = self.tilt(s)
        failing = (lifted & ~touching) | (tilt > 1.0)
        d_xy = np.linalg.norm(cup[..., :2] - self.target[:2], axis=-1)
        success = ~touching & ~lifted & (tilt < 0.3) & (d_xy < self.success_radius)
        return reward, success, failing
