"""CupCarry: the cup starts pinched in the gripper; carry it to a point in the air and hold it.

Reward per step: ``-min(d, 0.5) / 0.5 - 10 * max(slip - 0.005, 0)`` with ``d`` the cup's
distance to the target and ``slip`` its distance from where the grasp put it relative to the
hand (m): every step costs, so time matters, and a cup sliding in the fingers costs before it
falls. Success: the cup held within 3 cm of the target for
3 consecutive steps (the episode ends). Failure ("dropped"): the cup is not pinched by both
pads for 2 consecutive control steps (0.1 s), judged from the pads' touch sensors (contact
normal forces) and the cup's distance to the hand; it ends the episode with a penalty larger
than any return still to come.
"""

from __future__ import annotations

import numpy as np

from embodied.envs.arm import ArmEnv


class CupCarry(ArmEnv):
    task_name = "CupCarry"
    success_radius = 0.03
    success_hold = 3
    fail_hold = 2

    def _setup_episode(self, rng: np.random.Generator) -> None:
        start = rng.uniform([0.4, -0.2, 0.18], [0.6, 0.2, 0.3])
        while True:
            target = rng.uniform([0.35, -0.25, 0.15], [0.65, 0.25, 0.4])
            if np.linalg.norm(target - start) > 0.15:
                break
        self.target = target
        self.place_hand(start, opening=self.cup_radius)
        self.place_cup(start - np.array([0.0, 0.0, self.grasp_offset]))
        self.settle(0.15, grip=1.0)

    @property
    def grasp_offset(self) -> float:
        """How far below the pads' centre the cup's centre sits in a grasp."""
        return 0.4 * self.cup_half_height

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.sensors(sensordata)
        d = np.linalg.norm(s["cup_pos"] - self.target, axis=-1)
        grasp = s["ee_pos"] - np.array([0.0, 0.0, self.grasp_offset])
        slip = np.linalg.norm(s["cup_pos"] - grasp, axis=-1)
        held = self.held(s)
        reward = -np.minimum(d, 0.5) / 0.5 - 10.0 * np.maximum(slip - 0.005, 0.0)
        return reward, held & (d < self.success_radius), ~held
