"""CupCarry: the cup starts pinched in the gripper; carry it to a point in the air and hold it.

Reward per step: ``-min(d, 0.5) / 0.5 - 10 * max(slip - 0.005, 0)`` with ``d`` the cup's
distance to the target and ``slip`` its distance from where the grasp put it relative to the
hand (m): every step costs, so time matters, and a cup sliding in the fingers costs before it
falls. Success: the cup pinched by both pads, not slipped, within 3 cm of the target for 3
consecutive steps (the episode ends). Two failures, each judged from the pads' touch sensors
(contact normal forces) and the poses of cup and hand, and each lasting 2 control steps
(0.1 s) to count:

- dropped: the cup has left the grasp. Neither pad touches it, and it is out of the fingers'
  reach: its top below the pads' lower edge, its axis more than ``REACH`` beside the hand, or
  resting on the table. It ends the episode with a penalty larger than any return still to
  come.
- slipped: a pad still touches the cup, but it sits more than ``SLIP_LIMIT`` from where the
  grasp put it. The episode goes on (the simulation decides whether the cup then falls) but
  can no longer succeed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from embodied.envs.arm import ArmEnv
from embodied.envs.scripted import ScriptedPolicy
from embodied.envs.sensors import norm

SLIP_LIMIT = 0.04  # m from the grasp point: the pads then hold the (nominal) cup's top 1 cm
REACH = 0.05  # m beyond the cup's radius, horizontally: past it the pads cannot close on the cup
TABLE_GAP = 0.005  # m between the cup's bottom and the table for the cup to rest on it


class CupCarry(ArmEnv):
    task_name = "CupCarry"
    max_episode_steps = 60
    success_radius = 0.03
    # the reward measures the cup, which rides at a fixed offset below the hand while held (a
    # slip costs apart): the hand stands for it
    reward_entries = ("ee_x", "ee_y", "ee_z")
    progress_point = ("cup", 3)
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

    def _grasp(self, s: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(slip, out of reach): the cup's distance from its grasp point, and whether the pads
        could close on it at all where it is."""
        cup, hand = s["cup_pos"], s["ee_pos"]
        half = self.cup_half_height
        slip = norm(cup - (hand - np.array([0.0, 0.0, self.grasp_offset])))
        cup_z = cup[..., 2]
        pad_bottom = hand[..., 2] - self.pad_half_height  # the pads are centred on the ee site
        below = cup_z + half < pad_bottom
        beside = norm(cup[..., :2] - hand[..., :2]) > self.cup_radius + REACH
        on_table = cup_z < half + TABLE_GAP
        return slip, below | beside | on_table

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.sensors(sensordata)
        d = norm(s["cup_pos"] - self.target)
        slip, out_of_reach = self._grasp(s)
        touching = self.touching(s)
        reward = -np.minimum(d, 0.5) / 0.5 - 10.0 * np.maximum(slip - 0.005, 0.0)
        success = self.pinched(s) & (slip <= SLIP_LIMIT) & (d < self.success_radius)
        # touching: slipping (too far in the hand); else dropping (out of the pads' reach)
        return reward, success, np.where(touching, slip > SLIP_LIMIT, out_of_reach)

    def slipping(self, sensordata: np.ndarray) -> np.ndarray:
        s = self.sensors(sensordata)
        return self.touching(s) & (self._grasp(s)[0] > SLIP_LIMIT)

    def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
        # the servo target is offset so that the cup, not the hand, lands on the target
        return self.target + np.array([0.0, 0.0, self.grasp_offset]), 1.0
