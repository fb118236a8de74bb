"""CupPush: push a standing cup across the table onto a target spot.

Reward per step: ``-(d_cup / 0.3 + 0.3 * min(d_hand, 0.5) / 0.5)`` with ``d_cup`` the cup's
horizontal distance to the target and ``d_hand`` the grip point's distance to the push spot (m):
2 cm behind the cup on the line away from the target, 3 cm above the table. (v0 measured
``d_hand`` to the cup itself, which paid as much for standing beside or in front of it as behind:
a short-horizon planner parked there, or reached the cup from above and tipped it.)
Success: the cup upright (tilt < 0.3 rad) within 3 cm of the target. Failure: the cup tips
over (tilt > 1 rad) or leaves the table top.

The script comes down behind the cup and pushes it along the line to the target. A noisy
script is sloppy too: it draws per episode the hand's height at the cup, how far its servo
target leads the cup and the gap it leaves when it comes down behind the cup (``SLOPPY_PUSH``),
so some pushes tip the cup. Collected data needs those failures: a model that never saw a cup
tip cannot tell a plan that tips it.
"""

from __future__ import annotations

import numpy as np

from embodied.envs.arm import ArmEnv
from embodied.envs.scripted import STYLES, ScriptedPolicy
from embodied.envs.sensors import norm

TABLE_X = (0.0, 0.9)
TABLE_Y = (-0.6, 0.6)
PUSH_GAP, PUSH_HEIGHT = 0.02, 0.03  # where a push starts: behind the cup, low (m)
# The script's contact: hand height (m), servo lead (x the clean step), gap behind the cup (m).
CLEAN_PUSH = {"height": 0.03, "lead": 1.0, "gap": 0.03}
SLOPPY_PUSH = {"height": (0.03, 0.09), "lead": (1.0, 3.0), "gap": (0.0, 0.03)}


class CupPush(ArmEnv):
    task_name = "CupPush"
    version = 1  # v1: the reward's hand term points behind the cup
    max_episode_steps = 120
    success_radius = 0.03
    plan_horizon = 10
    # the cup to the target (and the hand to the cup)
    reward_entries = ("cup_x", "cup_y", "cup_z")
    progress_point = ("cup", 2)

    def _setup_episode(self, rng: np.random.Generator) -> None:
        cup = np.array([*rng.uniform([0.42, -0.12], [0.55, 0.12]), self.cup_half_height])
        while True:
            angle = rng.uniform(-np.pi, np.pi)
            dist = rng.uniform(0.1, 0.18)
            goal = cup[:2] + dist * np.array([np.cos(angle), np.sin(angle)])
            if 0.35 <= goal[0] <= 0.65 and -0.22 <= goal[1] <= 0.22:
                break
        self.target = np.array([*goal, 0.005])
        self.place_hand(rng.uniform([0.35, -0.2, 0.2], [0.6, 0.2, 0.28]), opening=0.0)
        self.data.ctrl[6] = 1.0
        self.place_cup(cup)
        self.settle(0.1, grip=1.0)

    def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.sensors(sensordata)
        cup, hand = s["cup_pos"], s["ee_pos"]
        cup_xy = cup[..., :2]
        to_goal = self.target[:2] - cup_xy
        d_cup = norm(to_goal)
        u = to_goal / np.maximum(d_cup, 1e-6)[..., None]
        push_xy = cup_xy - u * (self.cup_radius + PUSH_GAP)
        # |hand - (push_xy, PUSH_HEIGHT)| summed in norm's order, the push point never built
        off_xy, off_z = hand[..., :2] - push_xy, hand[..., 2] - PUSH_HEIGHT
        d_hand = np.sqrt(np.add.reduce(off_xy * off_xy, axis=-1) + off_z * off_z)
        reward = -(d_cup / 0.3 + 0.3 * np.minimum(d_hand, 0.5) / 0.5)
        tilt = self.tilt(s)
        on_table = (
            (TABLE_X[0] < cup[..., 0])
            & (cup[..., 0] < TABLE_X[1])
            & (TABLE_Y[0] < cup[..., 1])
            & (cup[..., 1] < TABLE_Y[1])
            & (cup[..., 2] > 0.0)
        )
        failing = (tilt > 1.0) | ~on_table
        return reward, (d_cup < self.success_radius) & (tilt < 0.3), failing

    def script_variant(self, rng: np.random.Generator | None) -> dict[str, float]:
        if rng is None:
            return dict(CLEAN_PUSH)
        return {k: float(rng.uniform(*r)) for k, r in SLOPPY_PUSH.items()}

    def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
        cup = self.sensor("cup_pos")
        to_goal = self.target[:2] - cup[:2]
        dist = np.linalg.norm(to_goal)
        u = to_goal / max(dist, 1e-6)
        behind = cup[:2] - u * (self.cup_radius + script.variant["gap"])
        low, high = script.variant["height"], 0.15
        if dist < 0.01:
            return None, 1.0
        hand = self.sensor("ee_pos")
        if script.phase == 0:  # above the spot behind the cup
            wp = np.array([*behind, high])
            if script.arrived(self, wp, 0.02):
                script.advance()
            return wp, 1.0
        if script.phase == 1:  # down beside the cup
            wp = np.array([*behind, low])
            if script.arrived(self, wp, 0.015):
                script.advance()
            return wp, 1.0
        # push along the line to the goal; back off and re-approach when off the line
        rel = hand[:2] - cup[:2]
        lateral = abs(rel[0] * u[1] - rel[1] * u[0])
        if lateral > 0.025 or rel @ u > 0:
            script.phase = 0
            return np.array([*hand[:2], high]), 1.0
        step = min(dist, script.variant["lead"] * 0.02 * script.speed / STYLES["cautious"])
        return np.array([*(cup[:2] - u * (self.cup_radius + 0.012) + u * step), low]), 1.0
