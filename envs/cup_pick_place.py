"""CupPickPlace: grasp the cup from the table, lift it, and set it upright on a coaster.

Reward per step: ``-(0.5 * min(d_hand, 0.5) / 0.5 + d_cup / 0.3)`` with ``d_hand`` the grip
point's distance to the cup's grasp point and ``d_cup`` the cup's distance to its resting pose
on the coaster (m). Success: the cup released (no pad touching it), upright (tilt < 0.3 rad),
resting on the table within 3 cm of the coaster. Failure: after a grasp, the cup leaves the
pads more than 1.5 cm above the table (dropped), or it tips over (tilt > 1 rad).
"""

from __future__ import annotations

import numpy as np

from embodied.envs.arm import TOUCH_MIN, ArmEnv


class CupPickPlace(ArmEnv):
    task_name = "CupPickPlace"
    success_radius = 0.03

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
        self._grasped = False

    @property
    def grasp_offset(self) -> float:
        return 0.4 * self.cup_half_height

    def _judge(self) -> tuple[float, bool, bool]:
        cup = self.sensor("cup_pos")
        h = self.cup_half_height
        grasp_point = cup + np.array([0.0, 0.0, self.grasp_offset])
        d_hand = float(np.linalg.norm(self.sensor("ee_pos") - grasp_point))
        rest = np.array([self.target[0], self.target[1], h])
        d_cup = float(np.linalg.norm(cup - rest))
        reward = -(0.5 * min(d_hand, 0.5) / 0.5 + d_cup / 0.3)
        held = self.held()
        lifted = cup[2] - h > 0.015
        self._grasped = self._grasped or (held and lifted)
        touching = max(self.sensor("left_touch")[0], self.sensor("right_touch")[0]) > TOUCH_MIN
        tilt = self.cup_tilt()
        dropped = self._grasped and not touching and lifted
        failed = dropped or tilt > 1.0
        d_xy = float(np.linalg.norm(cup[:2] - self.target[:2]))
        success = (
            not touching and not lifted and tilt < 0.3 and d_xy < self.success_radius and not failed
        )
        return reward, success, failed
