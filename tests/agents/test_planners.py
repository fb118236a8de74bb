"""CEM, iCEM and MPPI find the optimum of toy quadratic models, respect bounds, avoid failure."""

from __future__ import annotations

import gymnasium
import mujoco
import mujoco.rollout
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from model_checks import planned_actions
from omegaconf import OmegaConf

from embodied.agents.mpc import MPCAgent, build_planner, make_policy
from embodied.agents.planners import CEM, ICEM, MPPI, ModelStep, step_function, zero_cost_step
from embodied.agents.simulator import SimulatorModel
from embodied.agents.training import for_task
from embodied.apps.eval import load_agents
from embodied.envs.arm import MAX_DELTA
from embodied.registration import TASKS, env_id

PLANNERS = [CEM, ICEM, MPPI]
GOAL = torch.tensor([0.5, -0.4, 0.3])


def reach_step(z: torch.Tensor, a: torch.Tensor):
    """A point mass moved by the action; reward: minus squared distance to GOAL."""
    z2 = z + 0.1 * a[:, :3]
    return z2, -((z2 - GOAL) ** 2).sum(-1), torch.zeros(len(z))


def make(cls, **kw):
    args = dict(horizon=3, population=128, iterations=5, particles=1, seed=0)
    if cls in (CEM, ICEM):
        args["elites"] = 16
    args.update(kw)
    return cls(**args)


@pytest.mark.parametrize("cls", PLANNERS)
def test_finds_the_optimum_of_a_static_quadratic(cls):
    best = torch.tensor([0.3, -0.5, 0.8, -0.2])
    planner = make(cls)

    def step(z, a):
        return z, -((a - best) ** 2).sum(-1), torch.zeros(len(z))

    for _ in range(8):  # warm starts refine the plan
        action = planner.plan(step, torch.zeros(3))
    assert np.abs(action - best.numpy()).max() < 0.1


@pytest.mark.parametrize("cls", PLANNERS)
def test_closed_loop_reaches_the_goal(cls):
    planner = make(cls)
    z = torch.zeros(3)
    for _ in range(15):
        action = planner.plan(reach_step, z)
        z = reach_step(z[None], torch.as_tensor(action)[None])[0][0]
    assert float((z - GOAL).norm()) < 0.03


@pytest.mark.parametrize("cls", PLANNERS)
def test_every_candidate_and_action_respects_the_bounds(cls):
    low = np.array([-0.2, -1.0, 0.0, -0.5], np.float32)
    high = np.array([0.5, 0.1, 1.0, 0.5], np.float32)
    seen = []

    def step(z, a):
        seen.append(a.clone())
        return z, 5.0 * a.sum(-1), torch.zeros(len(z))  # optimum beyond the box corner

    planner = make(cls, action_low=low, action_high=high)
    action = planner.plan(step, torch.zeros(2))
    tried = torch.cat(seen)
    assert bool((tried >= torch.as_tensor(low)).all() and (tried <= torch.as_tensor(high)).all())
    assert action.dtype == np.float32 and action.shape == (4,)
    assert np.all(action >= low) and np.all(action <= high)
    assert np.all(action > (low + high) / 2)  # moved toward the corner the reward points to


@pytest.mark.parametrize("cls", PLANNERS)
def test_predicted_failure_outweighs_reward(cls):
    def step(z, a):
        # opening the grip (a[3] < 0) pays a little more, but fails for sure
        p_fail = (a[:, 3] < 0).float()
        return z, 0.1 * (a[:, 3] < 0).float(), p_fail

    planner = make(cls, failure_penalty=10.0)
    for _ in range(3):
        action = planner.plan(step, torch.zeros(2))
    assert action[3] >= 0


def test_particles_are_batched_in_member_order():
    rows = []

    def step(z, a):
        rows.append(len(z))
        # particle j of a candidate sits at row p * K + j: give particle 0 a bad outcome
        bad = torch.arange(len(z)) % 3 == 0
        return z, torch.where(bad, -1.0, 0.0), torch.zeros(len(z))

    planner = make(CEM, population=10, elites=2, particles=3, horizon=2, iterations=1)
    cost = planner.cost(step, torch.zeros(2), torch.zeros(10, 2, 4))
    assert rows == [30, 30]
    torch.testing.assert_close(cost, torch.full((10,), 2.0 / 3.0))


def test_zero_cost_model_and_validation():
    z, r, p = zero_cost_step(torch.ones(5, 3), torch.zeros(5, 4))
    assert z.shape == (5, 3) and float(r.abs().sum() + p.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="elites"):
        CEM(population=4, elites=8)
    with pytest.raises(ValueError, match="horizon"):
        MPPI(horizon=0)
    with pytest.raises(ValueError, match="temperature"):
        MPPI(temperature=0.0)


class ToyModel:
    """A WorldModel stand-in over the point mass, recording attach calls."""

    family, obs_mode = "toy", "state"

    def __init__(self):
        self.attached = 0

    def attach(self, env):
        self.attached += 1

    def encode(self, obs):
        return torch.as_tensor(np.asarray(obs, np.float32)).reshape(1, -1)

    def step(self, z, a):
        return reach_step(z, a)


def test_mpc_agent_attaches_and_acts_within_bounds():
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    model = ToyModel()
    agent = MPCAgent(model, make(CEM))
    env.reset(seed=0)
    agent.reset(env)
    assert model.attached == 1 and agent.planner.mean is None
    action = agent.act(np.zeros(3, np.float32))
    assert action.shape == (4,) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0) and action[0] > 0 and action[1] < 0
    env.close()


def test_make_policy_requires_a_trained_model(tmp_path):
    cfg = OmegaConf.create(load_agents(["state"], OmegaConf.create())["state"])
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    with pytest.raises(FileNotFoundError, match="embodied-train agent=state"):
        make_policy(cfg, tmp_path, env, seed=0)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        make_policy(cfg, None, env, seed=0)
    env.close()


SIMULATORS = ("oracle", "nominal", "sysid")
CUP_TASKS = ("Reach", "CupCarry", "CupPush", "CupPickPlace")
# CupCarry's simulator planner as its difficulty table (embodied/shifts/difficulty.json) and
# the quick bench measured it: a per-task planner must leave it alone.
CUP_CARRY_PLANNER = {
    "_target_": "embodied.agents.planners.ICEM",
    "horizon": None,
    "population": 12,
    "iterations": 3,
    "population_decay": 2.0,
    "elites": 3,
    "init_std": 0.3,
    "particles": 1,
    "min_std": 0.05,
    "momentum": 0.1,
    "failure_penalty": 100.0,
    "noise_beta": 2.0,
    "keep_elites": 0.3,
    "grip": "continuous",
    "grip_std": None,
}


def simulator_config(agent: str, task: str):
    """``agent``'s config as the eval loads it, with ``task``'s own settings merged."""
    return for_task(OmegaConf.create(load_agents([agent], OmegaConf.create())[agent]), task)


def simulator_planner(agent: str, task: str):
    """The planner ``agent``'s own policy factory builds on ``task``, as the eval builds it."""
    cfg = OmegaConf.create(load_agents([agent], OmegaConf.create())[agent])
    env = gymnasium.make(env_id(task), obs_mode="state")
    try:
        return instantiate(cfg.policy)(cfg, None, env, 0).planner
    finally:
        env.close()


def planner_settings(planner) -> dict:
    """A planner's settings (its class and every plain attribute; not its tensors or state)."""
    plain = (int, float, str, bool, type(None))
    own = {k: v for k, v in vars(planner).items() if isinstance(v, plain)}
    return {"class": type(planner).__name__, **own}


@pytest.mark.parametrize("task", CUP_TASKS)
def test_the_simulators_plan_alike_on_every_task(task):
    """nominal and sysid plan exactly as the oracle on each task, per-task settings included:
    the report's gap closed, (agent - nominal) / (oracle - nominal), compares the three."""
    settings = {agent: planner_settings(simulator_planner(agent, task)) for agent in SIMULATORS}
    assert settings["nominal"] == settings["oracle"] == settings["sysid"]
    planner = simulator_config("oracle", task).planner  # the task's settings reach the policy
    assert settings["oracle"]["horizon"] == (planner.horizon or TASKS[task].plan_horizon)
    assert settings["oracle"]["population"] == planner.population


@pytest.mark.parametrize("agent", SIMULATORS)
def test_cup_carry_keeps_the_simulator_planner_its_difficulty_table_measured(agent):
    assert OmegaConf.to_container(simulator_config(agent, "CupCarry").planner) == CUP_CARRY_PLANNER
    planner = simulator_planner(agent, "CupCarry")
    assert (planner.horizon, planner.population) == (5, 12)  # CupCarry's plan_horizon


@pytest.mark.parametrize("agent", SIMULATORS)
def test_simulators_plan_as_far_ahead_as_the_task_declares(agent):
    cfg = OmegaConf.create(load_agents([agent], OmegaConf.create())[agent])
    assert cfg.planner.horizon is None
    for task, horizon in (("CupCarry", 5), ("CupPush", 10), ("CupPickPlace", 10)):
        env = gymnasium.make(env_id(task))
        assert env.unwrapped.plan_horizon == horizon
        assert build_planner(cfg.planner, env, 0, None).horizon == horizon
        explicit = OmegaConf.merge(cfg.planner, {"horizon": 7})
        assert build_planner(explicit, env, 0, None).horizon == 7  # a number wins
        env.close()


def test_a_null_horizon_needs_a_task_that_declares_one():
    cfg = OmegaConf.create({"_target_": "embodied.agents.planners.CEM", "horizon": None})
    env = gymnasium.make("Pendulum-v1")  # no plan_horizon
    with pytest.raises(ValueError, match="plan_horizon"):
        build_planner(cfg, env, 0, None)
    env.close()


def test_icem_noise_is_unit_variance_and_coloured():
    white = make(ICEM, horizon=16, noise_beta=0.0, action_dim=2)._coloured(4000)
    brown = make(ICEM, horizon=16, noise_beta=2.0, action_dim=2)._coloured(4000)
    for noise in (white, brown):
        assert noise.shape == (4000, 16, 2)
        assert abs(float(noise.var()) - 1.0) < 0.1

    def lag1(x):
        return float((x[:, 1:] * x[:, :-1]).mean() / x.var())

    assert abs(lag1(white)) < 0.05 and lag1(brown) > 0.5  # brown noise: smooth in time


def test_icem_noise_basis_does_not_depend_on_the_torch_threads():
    """Built on 2 threads the FFT rounded differently: the same seed planned other actions."""
    before = torch.get_num_threads()
    try:
        bases = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            bases.append(ICEM(horizon=5, population=12, elites=3)._basis)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(bases[0], bases[1])


def test_icem_keeps_shifted_elites_and_returns_its_best_candidate():
    scored = []

    class Recording(ICEM):
        def cost(self, step_fn, z0, actions):
            cost = super().cost(step_fn, z0, actions)
            scored.append((actions.clone(), cost))
            return cost

    def step(z, a):
        return z, -((a - 0.3) ** 2).sum(-1) - (a[:, 3] < 0.8).float(), torch.zeros(len(z))

    planner = Recording(
        horizon=3, population=20, elites=10, keep_elites=0.5, iterations=2, particles=1, seed=0
    )
    planner.plan(step, torch.zeros(2))
    assert len(planner.kept) == 5
    scored.clear()
    planner.plan(step, torch.zeros(2))
    assert len(scored[0][0]) == 20 + 5  # the population plus last step's 5 elites, shifted
    actions = torch.cat([a for a, _ in scored])
    costs = torch.cat([c for _, c in scored])
    torch.testing.assert_close(planner.mean, actions[costs.argmin()])  # the best, not a mean
    with pytest.raises(ValueError, match="keep_elites"):
        ICEM(keep_elites=2.0)


def test_whole_horizon_cost_equals_stepping():
    whole_calls, step_calls = [], []

    class Stepper:
        def __call__(self, z, a):
            step_calls.append(1)
            return reach_step(z, a)

        def rollout(self, z0, actions):
            whole_calls.append(1)
            z = z0.reshape(1, -1).expand(len(actions), -1)
            rewards, fails = [], []
            for t in range(actions.shape[1]):
                z, r, p = reach_step(z, actions[:, t])
                rewards.append(r)
                fails.append(0.1 * torch.ones_like(r))
            return torch.stack(rewards, 1), torch.stack(fails, 1)

    def stepped(z, a):
        z2, r, _ = reach_step(z, a)
        return z2, r, 0.1 * torch.ones_like(r)

    planner = make(CEM, horizon=4)
    actions = torch.rand(7, 4, 4) * 2 - 1
    whole = planner.cost(Stepper(), torch.zeros(3), actions)
    torch.testing.assert_close(whole, planner.cost(stepped, torch.zeros(3), actions))
    assert whole_calls == [1] and not step_calls


def test_the_simulators_whole_horizon_equals_its_steps_and_the_planner_takes_it():
    """One ``mujoco.rollout`` over the horizon scores each candidate's steps as ``step`` does
    (``step`` restarts the contact solver's warm start at each step, ``rollout`` carries it as
    the env does: a cup let go may then slip apart by centimetres); and the planner is handed
    that fast path."""
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    try:
        obs, _ = env.reset(seed=1)
        sim = SimulatorModel("oracle")
        sim.attach(env)
        z0 = sim.encode(obs)[0]
        actions = torch.rand(5, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
        actions[..., 3] = 1.0  # keep the grip: a cup let go slips chaotically
        z, rewards = z0.reshape(1, -1).expand(5, -1), []
        for t in range(4):
            z, r, _ = sim.step(z, actions[:, t])
            rewards.append(r)
        reward, p_fail = sim.rollout(z0, actions)
        torch.testing.assert_close(reward, torch.stack(rewards, 1), atol=1e-4, rtol=0)
        assert reward.std() > 0.01 and p_fail.shape == (5, 4)  # the candidates differ
    finally:
        env.close()
    fast = step_function(sim)
    assert isinstance(fast, ModelStep) and fast.rollout(z0, actions)[0].shape == (5, 4)
    assert step_function(OmegaConf.create({"step": 1})) == 1  # no rollout: the bare step


@pytest.mark.parametrize("cls", PLANNERS)
def test_model_runs_on_the_callers_threads_and_the_planner_on_one(cls, monkeypatch):
    """The planner's tiny ops stay off the thread pool (a wake-up per op on a busy machine);
    the model keeps the caller's threads, and the count is restored afterwards."""
    seen = {"model": set(), "planner": set()}

    def step(z, a):
        seen["model"].add(torch.get_num_threads())
        return reach_step(z, a)

    real_randn = torch.randn

    def randn(*args, **kwargs):
        seen["planner"].add(torch.get_num_threads())
        return real_randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", randn)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        make(cls, iterations=2).plan(step, torch.zeros(3))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == {"model": {2}, "planner": {1}}


def test_a_simulator_plans_on_the_cells_threads_with_the_same_result():
    """``threads: null`` rolls out on as many MuJoCo threads as the cell's torch threads (the
    eval's ``threads``), and which thread runs a rollout never changes its numbers."""
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            obs, _ = env.reset(seed=1)
            sim = SimulatorModel("oracle")
            sim.attach(env)
            assert len(sim.datas) == threads
            actions = torch.rand(6, 5, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
            results[threads] = sim.rollout(sim.encode(obs)[0], actions)
    finally:
        torch.set_num_threads(before)
        env.close()
    assert results[1][0].std() > 0.01  # the candidates differ
    for one, two in zip(results[1], results[2], strict=True):
        assert torch.equal(one, two)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        SimulatorModel("oracle", threads=0)


def reference_rollout(sim: SimulatorModel, z0: torch.Tensor, actions: torch.Tensor):
    """The simulator's rollout as it was before its own thread pool: a plain
    ``mujoco.rollout.rollout`` call (a fresh pool, checked and tiled inputs, states recorded)."""
    z0 = z0.numpy().reshape(-1)
    acts = np.clip(actions.numpy().astype(np.float64), -1.0, 1.0)
    n, h = acts.shape[:2]
    ctrl = np.tile(z0[sim.nstate :], (n, 1))
    controls = np.empty((n, h, sim.nu))
    for t in range(h):
        ctrl[:, :3] = np.clip(ctrl[:, :3] + MAX_DELTA * acts[:, t, :3], sim._lo, sim._hi)
        ctrl[:, 6] = acts[:, t, 3]
        controls[:, t] = ctrl
    sub = sim.env_substeps
    states, sensors = mujoco.rollout.rollout(
        sim.model,
        sim.datas,
        np.tile(z0[: sim.nstate], (n, 1)),
        np.repeat(controls, sub, axis=1),
        nstep=h * sub,
    )
    reward, _, failing = sim.env.score(sensors[:, sub - 1 :: sub])
    return reward, failing, states[:, sub - 1], sensors[:, sub - 1]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_simulators_pooled_rollout_is_bit_identical_to_a_plain_mujoco_rollout(threads):
    """The simulator rolls out on one thread pool of its own with the wrapper's checks skipped
    and no states recorded: the very numbers of a plain ``mujoco.rollout.rollout`` call, for
    the whole horizon (planning) and one step (``step``), and one pool for every call."""
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    try:
        obs, _ = env.reset(seed=2)
        sim = SimulatorModel("oracle", threads=threads)
        sim.attach(env)
        pool = sim._pool
        z0 = sim.encode(obs)[0]
        actions = torch.rand(7, 5, 4, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
        reward, failing = sim.rollout(z0, actions)
        ref_reward, ref_failing, ref_state, ref_sensors = reference_rollout(sim, z0, actions)
        assert reward.std() > 0.01  # the candidates differ
        assert torch.equal(reward, torch.as_tensor(ref_reward, dtype=torch.float32))
        assert torch.equal(failing, torch.as_tensor(ref_failing, dtype=torch.float32))
        # in float64, as the rollout computes its controls (float32 actions round differently)
        z1, r1, _ = sim.step(z0.reshape(1, -1).expand(7, -1), actions[:, 0].double())
        np.testing.assert_array_equal(z1[:, : sim.nstate].numpy(), ref_state)
        ref_r1, _, _ = env.unwrapped.score(ref_sensors)
        assert torch.equal(r1, torch.as_tensor(ref_r1, dtype=torch.float32))
        obs, _ = env.reset(seed=3)
        sim.attach(env)  # a new episode keeps the pool
        assert sim._pool is pool and pool.nthread == (threads if threads > 1 else 0)
        with pytest.raises(ValueError, match="controls"):
            sim._simulate(sim.model, np.zeros((2, sim.nstate)), np.zeros((3, 4, sim.nu)))
    finally:
        env.close()


def test_a_deterministic_model_rolls_each_sequence_out_once_per_plan_and_plans_the_same():
    """The oracle's iCEM with the memo plans the very same actions as without it, with fewer
    rollouts: the kept elites and last step's best (also the warm start) are not re-run."""
    cfg = OmegaConf.create(load_agents(["oracle"], OmegaConf.create())["oracle"])
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state")
    runs = {}
    try:
        for memo in (True, False):
            sim = SimulatorModel("oracle")
            sim.deterministic = memo
            rows, real = [], sim.rollout

            def counted(z0, actions, real=real, rows=rows):
                rows.append(len(actions))
                return real(z0, actions)

            sim.rollout = counted
            agent = MPCAgent(sim, build_planner(cfg.planner, env, 0, sim))
            runs[memo] = planned_actions(agent, env, 5), sum(rows)
    finally:
        env.close()
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    assert runs[False][1] == 5 * 24 - 1  # 12+6+3 candidates and a kept elite per iteration
    # the kept elite of iterations 2 and 3 always, last step's best when it is the warm start
    assert runs[True][1] <= runs[False][1] - 5 * 2


def test_cem_refit_to_raw_draws_keeps_a_grip_the_model_is_indifferent_to_at_the_bound():
    """A grip that costs nothing anywhere above 0.6 (a learned model that never saw a full grip
    slip): refitted to the clipped draws CEM grips ~0.88 on average, to the raw ones ~0.98."""

    def step(z, a):
        hold = 10 * torch.relu(0.6 - a[:, 3])
        return z, -((a[:, :3] - 0.3) ** 2).sum(-1) - hold, torch.zeros(len(z))

    grip = {}
    for refit in ("clipped", "raw"):
        planner = make(CEM, horizon=5, population=64, iterations=2, elites=8, refit=refit)
        hold = torch.tensor([0.0, 0.0, 0.0, 1.0])  # the MPC agent's prior: the grip it holds
        grip[refit] = np.mean([planner.plan(step, torch.zeros(3), hold)[3] for _ in range(20)])
    assert grip["raw"] > 0.95 > 0.92 > grip["clipped"]
    with pytest.raises(ValueError, match="unknown refit"):
        CEM(refit="mean")
    with pytest.raises(ValueError, match="refit: clipped"):
        ICEM(refit="raw")


def grip_step(z, a):
    """Motion is free; the grip must be closed (> 0) until step 4 of the episode, then open.
    ``z`` counts the steps; a half-open grip earns half."""
    want = torch.where(z[:, 0] < 4, 1.0, -1.0)
    return z + 1, -((a[:, 3] - want) ** 2) - (a[:, :3] ** 2).sum(-1), torch.zeros(len(z))


@pytest.mark.parametrize("cls", PLANNERS)
def test_a_binary_grip_is_firm_and_switches_once(cls):
    executed = {}
    for grip in ("continuous", "binary"):
        planner = make(cls, horizon=4, population=64, iterations=3, grip=grip)
        held, z, grips = 1.0, torch.zeros(1), []
        for _ in range(10):  # the MPC agent's prior: no motion, the grip it holds
            held = float(planner.plan(grip_step, z, torch.tensor([0.0, 0.0, 0.0, held]))[3])
            grips.append(held)
            z = z + 1
        executed[grip] = np.array(grips)
    firm = executed["binary"]
    assert set(firm) <= {-1.0, 1.0} and np.count_nonzero(np.diff(firm)) == 1
    assert firm[0] == 1.0 and firm[-1] == -1.0 and firm[6] == -1.0
    # the continuous grip drifts off the bounds: a hand half open
    assert np.abs(np.abs(executed["continuous"]) - 1).max() > 0.05
    planner = make(cls, grip="binary")
    decided = planner._decide(torch.tensor([[0.3, 0.2, -0.9, 0.1], [0.0, 0.0, 0.0, -0.2]]))
    assert decided[:, 3].tolist() == [1.0, -1.0] and decided[0, 2] == pytest.approx(-0.9)


def test_the_grip_options_leave_the_default_plan_alone_and_are_checked():
    plain, named = make(CEM), make(CEM, grip="continuous", grip_std=None)
    for _ in range(3):
        np.testing.assert_array_equal(
            plain.plan(reach_step, torch.zeros(3)), named.plan(reach_step, torch.zeros(3))
        )
    std = make(CEM, init_std=0.5, grip_std=0.2)._initial_std(torch.zeros(3, 4))
    assert std[:, :3].eq(0.5).all() and std[:, 3].eq(0.2).all()
    with pytest.raises(ValueError, match="unknown grip"):
        make(CEM, grip="sticky")
    with pytest.raises(ValueError, match="grip_std"):
        make(MPPI, grip_std=0.0)
