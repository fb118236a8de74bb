"""The one episode loop: when it starts and stops, and that its users see the same episode."""

from typing import Any

import gymnasium
import numpy as np
import pytest

from embodied.clips import record_clip
from embodied.collect import run_episode as collect_episode
from embodied.evaluate import run_episode as eval_episode
from embodied.rollout import Step, rollout


class Countdown(gymnasium.Env):
    """Observation = steps left; terminates when it reaches 0 (and keeps counting below)."""

    observation_space = gymnasium.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 3 + (options or {}).get("extra", 0)
        return np.array([self.left], np.float32), {"seed": seed}

    def step(self, action):
        self.left -= 1
        return np.array([self.left], np.float32), float(action[0]), self.left <= 0, False, {}


class Echo:
    """Acts with the observation it was given; remembers the order of calls."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def reset(self, env: gymnasium.Env) -> None:
        self.calls.append(("reset", float(env.left)))

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls.append(("act", float(obs[0])))
        return obs / 10


def test_an_episode_runs_until_the_env_ends_it():
    env, policy, steps = Countdown(), Echo(), []
    starts = []
    last = rollout(
        env, policy, 7, steps.append, options={"extra": 1}, on_reset=lambda o, i: starts.append(i)
    )
    assert starts == [{"seed": 7}] and policy.calls[0] == ("reset", 4.0)
    assert [s.index for s in steps] == [1, 2, 3, 4] and last is steps[-1] and last.terminated
    assert all(a.next_obs == b.obs for a, b in zip(steps, steps[1:], strict=False))
    assert steps[0].action.dtype == np.float32 and steps[0].reward == pytest.approx(0.4)


def test_a_horizon_runs_on_past_the_end_and_on_step_can_stop_it():
    steps: list[Step] = []
    last = rollout(Countdown(), Echo(), 0, steps.append, horizon=5)
    assert last.index == 5 and [float(s.next_obs[0]) for s in steps] == [2, 1, 0, -1, -2]
    stopped = rollout(Countdown(), Echo(), 0, lambda s: s.index == 2)
    assert stopped.index == 2 and not stopped.terminated
    assert rollout(Countdown(), Echo(), 0, horizon=0) is None


def test_collection_and_evaluation_see_the_same_episode():
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state", shift="id", max_episode_steps=40)
    episode = collect_episode(env, env.unwrapped.scripted_policy("cautious"), 3, "id", "state")
    row, flags = eval_episode(env, env.unwrapped.scripted_policy("cautious"), 3)
    assert row["steps"] == len(episode.action) > 1 and row["success"] == episode.success[-1]
    assert row["return"] == pytest.approx(float(episode.reward.sum()), rel=1e-5)
    assert list(flags["dropped"][1:]) == list(episode.dropped)
    # the data's last state is MuJoCo's own state after the last step
    assert np.allclose(episode.state[-1], env.unwrapped.state_vector())
    env.close()


def test_a_video_clip_records_horizon_steps_past_the_task_end():
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state+pixels", image_size=16)
    states, frames, actions = record_clip(env, seed=1, horizon=6)
    assert len(actions) == 6 and len(states) == len(frames) == 7
    assert frames[0].shape == (16, 16, 3)
    env.close()
