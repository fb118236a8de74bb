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
from embodied.envs.scripted import ScriptedPolicy
from embodied.envs.sensors import norm

HIGH = 0.2  # m: the script's height for moves above the table


class CupPickPlace(ArmEnv):
    task_name = "CupPickPlace"
    max_episode_steps = 160
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
        d_hand = norm(s["ee_pos"] - grasp_point)
        rest = np.array([self.target[0], self.target[1], h])
        d_cup = norm(cup - rest)
        reward = -(0.5 * np.minimum(d_hand, 0.5) / 0.5 + d_cup / 0.3)
        # a cup in the air that no pad touches has left the gripper after a grasp
        lifted = cup[..., 2] - h > 0.015
        touching = self.touching(s)
        tilt = self.tilt(s)
        failing = (lifted & ~touching) | (tilt > 1.0)
        d_xy = norm(cup[..., :2] - self.target[:2])
        success = ~touching & ~lifted & (tilt < 0.3) & (d_xy < self.success_radius)
        return reward, success, failing

    def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
        """Above the cup, down around it, squeeze, lift, over the coaster, down, let go, rise."""
        cup = self.sensor("cup_pos")
        grasp_z = self.cup_half_height + self.grasp_offset
        if script.wait > 0:
            script.wait -= 1
            return self.data.ctrl[:3].copy(), (1.0 if 2 <= script.phase <= 5 else -1.0)
        if script.phase == 0:  # open, above the cup
            wp = np.array([cup[0], cup[1], HIGH])
            if script.arrived(self, wp, 0.015):
                script.advance()
            return wp, -1.0
        if script.phase == 1:  # down around the cup
            wp = np.array([cup[0], cup[1], grasp_z])
            if script.arrived(self, wp, 0.008):
                script.advance(steps_to_wait=4)
            return wp, -1.0
        if script.phase == 2:  # squeezed: lift
            wp = np.array([self.data.ctrl[0], self.data.ctrl[1], HIGH])
            if script.arrived(self, wp, 0.02):
                script.advance()
            return wp, 1.0
        if script.phase == 3:  # over the coaster
            wp = np.array([self.target[0], self.target[1], HIGH])
            if script.arrived(self, wp, 0.01):
                script.advance(steps_to_wait=2 if script.style == "cautious" else 0)
            return wp, 1.0
        if script.phase == 4:  # lower until the cup stands on the table
            wp = np.array([self.target[0], self.target[1], grasp_z + 0.004])
            if script.arrived(self, wp, 0.006):
                script.advance(steps_to_wait=2)
            return wp, 1.0
        if script.phase == 5:  # let go
            script.advance(steps_to_wait=3)
            return self.data.ctrl[:3].copy(), -1.0
        return np.array([self.target[0], self.target[1], HIGH]), -1.0  # and rise clear
