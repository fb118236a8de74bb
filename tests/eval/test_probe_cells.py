"""State probes of a cell: ``run_cell`` writes ``video.probe``; exact where the latent is the state.

The fake world models here step nothing (a frozen world), so what is checked is the plumbing and
the readout choice; the physics is checked with the real oracle simulator against MuJoCo's own
recorded states, and a real (tiny, 120-step) state model rolls its own latents.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from embodied import clips as clips_module
from embodied.agents.simulator import SimulatorModel
from embodied.agents.state_model import StateModel
from embodied.clips import collect_clips, collect_stage
from embodied.collect import collect
from embodied.dataset import Dataset
from embodied.envs.arm import STATE_LABELS
from embodied.envs.scripted import make_policy as make_scripted
from embodied.evaluate import EvalSettings, make_env, probe_path, run_cell, state_probes
from embodied.grid import Cell
from embodied.metrics.probes import simulator_states
from embodied.protocols import Imagination

HORIZON = 6
MIX = np.random.default_rng(0).normal(size=(len(STATE_LABELS), 48)).astype(np.float32)


class FrozenState:
    """A latent that is the state vector, predicted never to change."""

    family, obs_mode = "state", "state"

    def encode(self, obs) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, np.float32)).reshape(-1, len(STATE_LABELS))

    def step(self, z, action):
        zeros = torch.zeros(len(z))
        return z, zeros, zeros

    def imagine(self, obs0, actions, env) -> Imagination:
        return Imagination(None, "none", None)


class FrozenMix(FrozenState):
    """A learned-looking latent: a fixed random mix of the state (48 > D dims), frozen."""

    family = "latent"

    def encode(self, obs) -> torch.Tensor:
        return super().encode(obs) @ torch.as_tensor(MIX)


def make_policy(agent_cfg, checkpoint_dir, env, seed):
    policy = make_scripted(agent_cfg, checkpoint_dir, env, seed)
    policy.world_model = instantiate(agent_cfg.world_model)
    return policy


def agent(name: str, world: str) -> dict:
    target = {"_target_": "test_probe_cells.make_policy", "_partial_": True}
    model = {"_target_": f"test_probe_cells.{world}"}
    return {
        "name": name,
        "family": name,
        "obs_mode": "state",
        "world_model": model,
        "policy": target,
    }


def settings(tmp_path, **kw) -> EvalSettings:
    base = dict(
        agents={"frozen": agent("frozen", "FrozenState"), "mix": agent("mix", "FrozenMix")},
        run_dir=str(tmp_path),
        episodes=1,
        video_clips=3,
        video_horizon=HORIZON,
        probe_clips=16,
        env_kwargs={"max_episode_steps": 10},
    )
    return EvalSettings(**{**base, **kw})


def clips_of(split: str, count: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    s = settings("unused")
    return collect_clips("CupCarry", split, s, list(range(seed, seed + 4 * count)), count)


def finite_per_horizon(errors: dict[str, list[float]]) -> bool:
    return all(len(v) == HORIZON + 1 and np.all(np.isfinite(v)) for v in errors.values())


def test_a_state_latent_is_read_exactly_and_needs_no_training_clips(tmp_path):
    cell = Cell("frozen", "CupCarry", "id", 0)
    collect_stage([cell], settings(tmp_path, probe_clips=0), progress=False)  # held-out clips only
    probe = run_cell(cell, settings(tmp_path))["video"]["probe"]
    assert set(probe) == {"exact"} and finite_per_horizon(probe["exact"])
    exact = probe["exact"]
    assert exact["rel"][0] == exact["vel"][0] == exact["held"][0] == 0.0  # t=0: the truth
    assert exact["rel"][-1] > 0.0  # the hand moved; a frozen world says it did not
    assert not probe_path(settings(tmp_path), "CupCarry").exists()


def test_a_learned_latent_gets_probes_fitted_on_train_clips_collected_once(tmp_path, monkeypatch):
    collected = []
    collect = clips_module.collect_clips

    def counting(task, split, *args):
        collected.append(split)
        return collect(task, split, *args)

    monkeypatch.setattr(clips_module, "collect_clips", counting)
    s = settings(tmp_path)
    cells = [Cell("mix", "CupCarry", split, 0) for split in ("id", "ood-cup_mass-3")]
    collect_stage(cells, s, progress=False)
    assert collected == ["id", "ood-cup_mass-3", "train"]  # the train clips: once per task
    lines = [run_cell(cell, s) for cell in cells]
    assert len(collected) == 3  # the cells only read
    with np.load(probe_path(s, "CupCarry")) as data:
        assert data["state"].shape[:2] == (16, HORIZON + 1)
    for line in lines:
        probe = line["video"]["probe"]
        assert set(probe) == {"linear", "mlp"}
        assert all(finite_per_horizon(probe[k]) for k in probe)
    # no probes asked for: none computed
    cell, s = Cell("mix", "CupCarry", "id", 1), settings(tmp_path, probe_clips=0)
    collect_stage([cell], s, progress=False)
    line = run_cell(cell, s)
    assert "probe" not in line["video"]


def test_a_simulator_latent_reads_back_as_the_envs_own_state_vector():
    """At every step of an episode, the env's MuJoCo state (the simulator's ``encode``) read
    back by ``simulator_states`` is the state vector of the env's own data.

    The env's observation takes its sensor entries (hand, cup, touch) from the last substep's
    ``mj_step``, which computes sensors before it integrates: they lag the joints by one
    substep. So against the observation, the joint, target and servo entries are exact and the
    sensed positions within a millimetre; against ``mj_forward`` of the env's data, all are.
    """
    env = make_env("CupCarry", "ood-cup_size-3", settings("unused"), "state")
    sim, u = SimulatorModel("oracle"), env.unwrapped
    controller = u.scripted_policy("cautious", noise=0.1, seed=0)
    exact = [i for i, n in enumerate(STATE_LABELS) if not n.startswith(("ee_", "cup_", "touch"))]
    sensed = [STATE_LABELS.index(n) for n in ("ee_x", "ee_y", "ee_z", "cup_x", "cup_y", "cup_z")]
    obs, _ = env.reset(seed=3)
    controller.reset(env)
    sim.attach(env)
    try:
        for _ in range(40):
            read = simulator_states(sim, sim.encode(obs).numpy())[0]
            np.testing.assert_array_equal(read[exact], obs[exact])
            np.testing.assert_allclose(read[sensed], obs[sensed], atol=1e-3)
            data = copy.copy(u.data)
            mujoco.mj_forward(u.model, data)
            np.testing.assert_allclose(read, u.state_vector(data), atol=1e-5)  # solver warmstart
            obs = env.step(controller.act(obs))[0]
    finally:
        env.close()


def simulator_probes(family: str, split: str) -> dict[str, list[float]]:
    env = make_env("CupCarry", split, settings("unused"), "state")
    try:
        probe = state_probes(SimulatorModel(family), env, clips_of(split), train_clips=_no_train)
    finally:
        env.close()
    assert set(probe) == {"exact"} and finite_per_horizon(probe["exact"])
    return probe["exact"]


def test_the_oracle_predicts_the_clips_state_and_the_nominal_simulator_drifts_ood():
    """In ID only the env's small action noise (std <= 0.02) is unforeseen: the cup's place
    relative to the hand is right to 0.1 mm. Under a 3rd-degree cup mass the nominal
    simulator (training physics) drifts from it; the oracle (the episode's physics) does not."""
    oracle = simulator_probes("oracle", "id")
    assert max(oracle["rel"]) < 1e-4 and max(oracle["vel"]) < 0.02 and max(oracle["held"]) == 0
    assert oracle["rel"][0] == oracle["vel"][0] == 0.0
    nominal, truth = (
        simulator_probes("nominal", "ood-cup_mass-3"),
        simulator_probes("oracle", "ood-cup_mass-3"),
    )
    assert nominal["rel"][-1] > 3 * truth["rel"][-1] > 0.0


def _no_train() -> dict[str, np.ndarray]:
    raise AssertionError("an exact readout needs no training clips")


@pytest.fixture(scope="module")
def state_model(tmp_path_factory) -> StateModel:
    """A tiny state model, 120 training steps (seconds): numbers are plumbing checks."""
    path = tmp_path_factory.mktemp("data")
    collect("embodied/CupCarry-v0", path, episodes=12, obs_modes=("state",), progress=False)
    model = StateModel(members=3, hidden=(32, 32), head_hidden=(32,), batch_size=64, seed=0)
    model.fit(Dataset.load(path), steps=120)
    return model


def test_a_state_model_is_read_exactly_from_its_own_rollout(state_model):
    clips = clips_of("ood-cup_mass-3", count=4)
    env = make_env("CupCarry", "ood-cup_mass-3", settings("unused"), "state")
    try:
        probe = state_probes(state_model, env, clips, train_clips=_no_train)["exact"]
    finally:
        env.close()
    assert finite_per_horizon(probe)
    assert probe["rel"][0] == probe["vel"][0] == 0.0
    assert max(probe["rel"][1:]) > 0.0  # its own predictions, not the truth


def test_the_identifying_simulator_is_probed_like_the_others():
    """sysid encodes the batch of one that the probes hand every simulator (it once indexed
    that batch as a single state vector and failed the quick bench's sysid cells)."""
    from embodied.agents.sysid import SysIDModel

    env = make_env("CupCarry", "id", settings("unused"), "state")
    try:
        probe = state_probes(SysIDModel(), env, clips_of("id"), train_clips=_no_train)
    finally:
        env.close()
    assert set(probe) == {"exact"} and finite_per_horizon(probe["exact"])
    assert probe["exact"]["rel"][0] == 0.0
