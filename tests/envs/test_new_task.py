"""A new task is its class and nothing else: a toy cup task defined here, subclassing the base
env, registers itself, and the main job collects, trains ``state``, evaluates and reports it
(the smoke preset's sizes, one cell).

The class is defined inside a fixture so that it is registered for these tests alone: the
tests that iterate over every task keep seeing the suite's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from hydra import compose, initialize_config_module

import embodied  # noqa: F401  (registers the suite's tasks)
from embodied.apps.bench import bench
from embodied.envs.arm import ArmEnv
from embodied.envs.scripted import ScriptedPolicy
from embodied.registration import TASKS, env_id

NAME = "CupHover"


def define_task() -> type[ArmEnv]:
    """What a user writes in envs/cup_hover.py: the class, and nothing else anywhere."""

    class CupHover(ArmEnv):
        """Bring the open hand to hover 10 cm above a standing cup, without knocking it over.

        Reward per step: ``-min(d, 0.5) / 0.5``, ``d`` the grip point's distance to the hover
        point (m). Success: within 3 cm of it, the cup upright. Failure: the cup tips over.
        """

        task_name = NAME
        max_episode_steps = 30
        reward_entries = ("ee_x", "ee_y", "ee_z")

        def _setup_episode(self, rng: np.random.Generator) -> None:
            cup = np.array([*rng.uniform([0.45, -0.1], [0.55, 0.1]), self.cup_half_height])
            self.target = cup + np.array([0.0, 0.0, 0.1])
            self.place_hand(rng.uniform([0.4, -0.2, 0.25], [0.6, 0.2, 0.3]), opening=0.045)
            self.place_cup(cup)

        def score(self, sensordata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            s = self.sensors(sensordata)
            d = np.linalg.norm(s["ee_pos"] - self.target, axis=-1)
            tilt = self.tilt(s)
            return -np.minimum(d, 0.5) / 0.5, (d < 0.03) & (tilt < 0.3), tilt > 1.0

        def waypoint(self, script: ScriptedPolicy) -> tuple[np.ndarray | None, float]:
            return self.target.copy(), -1.0

    return CupHover


@pytest.fixture(scope="module")
def task() -> Iterator[type[ArmEnv]]:
    cls = define_task()
    yield cls
    # forget it again (a test-only step: a task module is imported once and stays)
    gymnasium.registry.pop(env_id(NAME))
    del TASKS[NAME]


def test_a_task_class_registers_itself(task):
    assert TASKS[NAME] is task and env_id(NAME) == "embodied/CupHover-v0"
    spec = gymnasium.spec("embodied/CupHover-v0")
    assert spec.max_episode_steps == 30
    env = gymnasium.make("embodied:embodied/CupHover-v0")
    obs, info = env.reset(seed=0)
    assert env.unwrapped.task_name == NAME and env.observation_space.contains(obs)
    # its own script drives it to success, judged from MuJoCo's hand position
    policy = env.unwrapped.scripted_policy("cautious")
    policy.reset(env)
    for _ in range(spec.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        if terminated or truncated:
            break
    u = env.unwrapped
    assert info["is_success"] and np.linalg.norm(u.sensor("ee_pos") - u.target) < 0.03
    env.close()


def test_configs_derive_its_id_from_its_name(task):
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose("collect", overrides=[f"env.name={NAME}"])
    assert cfg.env.id == "embodied/CupHover-v0"


def test_a_second_class_of_the_same_name_is_refused(task):
    with pytest.raises(ValueError, match="defined twice"):
        type(NAME, (ArmEnv,), {"task_name": NAME, "max_episode_steps": 30})
    with pytest.raises(ValueError, match="max_episode_steps must be an integer"):
        type("NoLimit", (ArmEnv,), {"task_name": "NoLimit"})
    assert TASKS[NAME] is task and "NoLimit" not in TASKS


@pytest.mark.smoke
def test_the_main_job_collects_trains_evaluates_and_reports_it(task, tmp_path):
    overrides = [
        "preset=smoke",
        f"tasks=[{NAME}]",
        "agents=[state]",
        "splits=[id]",
        f"run_dir={tmp_path}",
        "executor.workers=1",  # in this process: a spawned worker would not know the class
        "progress=false",
    ]
    with initialize_config_module("embodied.configs", version_base="1.3"):
        bench(compose("bench", overrides=overrides))

    manifest = json.loads((tmp_path / "data" / NAME / "train" / "manifest.json").read_text())
    assert manifest["env_id"] == "embodied/CupHover-v0" and manifest["episodes"] == 12
    trained_on = json.loads((tmp_path / "models" / NAME / "state" / "trained_on.json").read_text())
    assert trained_on["env_id"] == "embodied/CupHover-v0"
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["cell_id"] for line in lines] == [f"state/{NAME}/id/0"]
    e = lines[0]["embodied"]
    assert e["episodes"] == 2 and 0.0 <= e["success_rate"] <= 1.0
    assert all(ep["steps"] <= 30 for ep in e["per_episode"])  # the class's time limit
    assert lines[0]["video"] is not None  # a world model's cell: open-loop video metrics
    assert NAME in (tmp_path / "report.md").read_text()
