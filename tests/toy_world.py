"""A tiny frame world shared by the pixel and latent model tests (and ``stepped``, the
reference every world model's whole-horizon ``rollout`` is tested against).

A 3x3 red 'cup' moves by the first two action entries on a 16x16 frame with a green target
pixel; reward is minus its distance to the target. With ``drops``, a grip below -0.8 (after
step 4) ends the episode with a drop, so failure heads have something to learn. The 'hand'
(proprioception, ``PROPRIO``) holds the cup: its entries follow the cup's; only the cup is drawn.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import torch

from embodied.agents.mpc import MPCAgent
from embodied.agents.planners import ICEM
from embodied.dataset import Episode, write_dataset

LABELS = ["cup_x", "cup_y", "target_x", "target_y", "target_z", "hand_x", "hand_y"]
PROPRIO = ["hand_x", "hand_y"]
CUP = [0, 1]  # the cup's entries of the state vector
SIZE = 16


def draw(state: np.ndarray) -> np.ndarray:
    """A 16x16 frame: a red 3x3 'cup' at (cup_x, cup_y) and a green target pixel."""
    frame = np.full((SIZE, SIZE, 3), 40, np.uint8)
    cx, cy = (np.clip(state[:2], -1, 1) * 6 + 7).astype(int)
    tx, ty = (np.clip(state[2:4], -1, 1) * 6 + 7).astype(int)
    frame[ty, tx] = (30, 220, 30)
    frame[cy : cy + 3, cx : cx + 3] = (220, 40, 40)
    return frame


def toy_episodes(n: int = 8, steps: int = 12, seed: int = 0, drops: bool = True) -> list[Episode]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        state = np.zeros((steps + 1, len(LABELS)), np.float32)
        state[0, :2] = rng.uniform(-0.6, 0.6, 2)
        state[:, 2:4] = rng.uniform(-0.8, 0.8, 2)
        action = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
        for t in range(steps):
            state[t + 1, :2] = np.clip(state[t, :2] + 0.15 * action[t, :2], -1, 1)
        state[:, 5:7] = state[:, :2]
        dropped = np.zeros(steps, bool)
        t_end = steps
        if drops:
            drop_at = np.flatnonzero(action[:, 3] < -0.8)
            t_end = int(drop_at[0]) + 1 if len(drop_at) and drop_at[0] >= 4 else steps
            dropped[t_end - 1] = t_end < steps
        reward = -np.linalg.norm(state[1:, :2] - state[1:, 2:4], axis=1)
        reward[dropped] -= 100.0
        episodes.append(
            Episode(
                state=state[: t_end + 1],
                pixels=np.stack([draw(s) for s in state[: t_end + 1]]),
                action=action[:t_end],
                reward=reward[:t_end],
                dropped=dropped[:t_end],
                success=np.zeros(t_end, bool),
                terminated=dropped[:t_end].copy(),
                physics={},
                seed=i,
            )
        )
    return episodes


def write_toy(path: Path, episodes: list[Episode], labels=LABELS, size: int = SIZE) -> Path:
    write_dataset(
        path,
        episodes,
        env_id="embodied/Toy-v0",
        task="Toy",
        split="train",
        obs_modes=("state", "pixels"),
        image_size=size,
        state_labels=labels,
    )
    return path


class SpaceOnlyEnv:
    """Just enough env for ``make_policy`` and the MPC agent: an action space."""

    action_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)

    @property
    def unwrapped(self) -> SpaceOnlyEnv:
        return self


def obs_of(ep: Episode, t: int = 0) -> dict[str, np.ndarray]:
    return {"state": ep.state[t], "pixels": ep.pixels[t]}


def stepped(model, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, p_fail), each (N, H), from ``model.step`` called H times: what the model's
    whole-horizon ``rollout`` must equal."""
    z = z0.reshape(1, -1).expand(len(actions), -1)
    rewards, fails = [], []
    for t in range(actions.shape[1]):
        z, r, p = model.step(z, actions[:, t])
        rewards.append(r)
        fails.append(p)
    return torch.stack(rewards, 1), torch.stack(fails, 1)


def check_rollout_of_toy_model(model) -> None:
    """A frame model's ``rollout`` from a toy observation equals stepping, out of bounds too."""
    z0 = model.encode(obs_of(toy_episodes(1, seed=4)[0]))[0]
    actions = torch.rand(6, 5, 4, generator=torch.Generator().manual_seed(0)) * 3 - 1.5
    whole = model.rollout(z0, actions)  # actions beyond the bounds: both clamp
    for got, want in zip(whole, stepped(model, z0, actions), strict=True):
        assert got.shape == (6, 5)
        torch.testing.assert_close(got, want)
    assert whole[1].std() > 0  # the candidates' predictions differ


def check_plans_like_a_fresh_load(model, path: Path) -> None:
    """A model that trained (its conv weights switched layout and back) plans an episode's
    actions bit for bit as the same weights loaded into a fresh model: the planner amplifies
    any rounding difference in an encoding into other actions."""
    assert all(p.is_contiguous() for p in model.parameters())  # the layout plans were made in
    model.save(path)
    loaded = type(model).load(path)
    ep = toy_episodes(1, seed=5)[0]
    runs = []
    for m in (model, loaded):
        planner = ICEM(horizon=4, population=16, elites=4, particles=1, population_decay=2.0)
        agent = MPCAgent(m, planner)
        agent.reset(SpaceOnlyEnv())
        runs.append(np.stack([agent.act(obs_of(ep, t)) for t in range(4)]))
    np.testing.assert_array_equal(runs[0], runs[1])
