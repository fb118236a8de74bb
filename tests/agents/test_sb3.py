"""SB3 baselines: smoke-sized SAC/PPO training, resume, deterministic reloaded policies, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import signal
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from stable_baselines3 import SAC

from embodied.agents.sb3.callbacks import StopOnRequest
from embodied.agents.sb3.cloning import DemoBatches, pretrain_actor, warm_critic
from embodied.agents.sb3.demos import prefill_replay_buffer, scripted_transitions
from embodied.agents.sb3.policy import MODEL_FILE, NORMALIZER, SB3Policy, load_sb3, make_policy
from embodied.agents.sb3.shaping import ProgressShaping, progress_point, shaped
from embodied.agents.sb3.trainer import PROGRESS, SB3Settings, SB3Trainer, task_settings
from embodied.checkpoints import TRAINED_ON, check_trained_on
from embodied.dataset import Dataset, Episode, write_dataset
from embodied.envs.arm import STATE_LABELS, ArmEnv
from embodied.envs.cup_carry import CupCarry
from embodied.protocols import Policy, Trainer

PLAIN = [  # checkpoint mechanics on plain SAC (exact buffer counts); demos, BC, shaping below
    "agent.trainer.demo_episodes=0",
    "agent.trainer.bc_steps=0",
    "agent.trainer.bc_weight=0.0",
    "agent.trainer.shaping=0.0",
]
SMALL = {  # smoke-sized: seconds on 2 CPU cores
    "sac": [
        "agent.algo.learning_starts=100",
        "agent.algo.policy_kwargs.net_arch=[32,32]",
        *PLAIN,
    ],
    "ppo": ["agent.algo.n_steps=64", "agent.algo.policy_kwargs.net_arch={pi:[32],vf:[32]}"],
}
COMMON = [
    "agent.algo.batch_size=32",
    "agent.trainer.eval_every=200",
    "agent.trainer.eval_episodes=2",
    "agent.trainer.checkpoint_every=200",
]


def config(agent: str = "sac", overrides: tuple[str, ...] = ()) -> DictConfig:
    """The train app's config for ``agent`` on Reach with the smoke preset."""
    with initialize_config_module("embodied.configs", version_base=None):
        return compose(
            "train",
            [f"agent={agent}", "env=reach", "preset=smoke", *SMALL[agent], *COMMON, *overrides],
        )


def train(cfg: DictConfig, out: Path, steps: int, **kw) -> dict:
    return instantiate(cfg.agent.trainer, **kw)(
        agent_cfg=cfg.agent, dataset_dir=None, out_dir=out, steps=steps, seed=0, progress=False
    )


def policy_for(cfg: DictConfig, out: Path | None, env: gymnasium.Env) -> SB3Policy:
    return instantiate(cfg.agent.policy)(agent_cfg=cfg.agent, checkpoint_dir=out, env=env, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DictConfig, Path, dict]:
    cfg = config()
    out = tmp_path_factory.mktemp("sac")
    return cfg, out, train(cfg, out, int(cfg.agent.steps))


@pytest.fixture
def env() -> gymnasium.Env:
    env = gymnasium.make("embodied/Reach-v0", shift="id")
    yield env
    env.close()


def test_configs_resolve_through_the_train_app() -> None:
    for name in ("sac", "ppo"):
        cfg = config(name)
        assert cfg.agent.kind == "sb3" and cfg.agent.family == name
        assert cfg.agent.obs_mode == "state"
        assert cfg.agent.trainer.env_id == "embodied/Reach-v0"
        assert cfg.agent.steps == cfg.preset.sb3_steps == 300
    for preset in ("smoke", "quick", "full"):
        with initialize_config_module("embodied.configs", version_base=None):
            assert compose("train", [f"preset={preset}"]).preset.sb3_steps > 0


@pytest.mark.smoke
def test_sac_trains_saves_and_reloads_deterministically(trained, env) -> None:
    cfg, out, summary = trained
    assert summary["step"] == 300 and not summary["interrupted"]
    assert {"out_dir", "steps", "step", "interrupted", "wall_s"} <= set(summary)
    assert summary["eval_return"] is not None
    assert (out / MODEL_FILE).is_file()
    assert (out / "checkpoints" / "sac_300_steps.zip").is_file()
    assert (out / "checkpoints" / "sac_replay_buffer_300_steps.pkl").is_file()
    assert not list((out / "checkpoints").glob("sac_200_*")), "older checkpoints are pruned"
    assert list(out.glob("events.out.tfevents.*"))
    with open(out / PROGRESS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("eval/success_rate") for r in rows)

    policy = policy_for(cfg, out, env)
    assert isinstance(policy, Policy)
    assert policy.norm is not None, "trained with normalize_obs: the policy normalises too"
    obs, _ = env.reset(seed=3)
    policy.reset(env)
    first, second = policy.act(obs), policy.act(obs)
    assert first.shape == (4,) and first.dtype == np.float32
    assert np.all(np.abs(first) <= 1.0)
    np.testing.assert_array_equal(first, second)
    reloaded = policy_for(cfg, out, env)
    np.testing.assert_array_equal(reloaded.act(obs), first)
    other, _ = env.reset(seed=4)
    assert not np.array_equal(policy.act(other), first), "the action depends on the observation"


def test_a_model_of_another_task_version_is_refused(trained, tmp_path, env) -> None:
    """SB3 models carry ``trained_on.json`` like the world models: a model trained on another
    version of its task is refused by the eval check, the policy factory and a resume."""
    cfg, out, _ = trained
    record = json.loads((out / TRAINED_ON).read_text())
    assert record == {
        "env_id": "embodied/Reach-v0",
        "task": "Reach",
        "split": "train",
        "family": "sac",
        "world_model": None,
    }
    check_trained_on(out, "Reach", cfg.agent)  # the version it was trained on passes
    forged = tmp_path / "forged"
    shutil.copytree(out, forged)
    name, version = record["env_id"].rsplit("-v", 1)
    other = f"{name}-v{int(version) + 1}"
    (forged / TRAINED_ON).write_text(json.dumps({**record, "env_id": other}))
    refusal = rf"trained on {other} data; the task is now embodied/Reach-v0"
    with pytest.raises(ValueError, match=refusal):
        check_trained_on(forged, "Reach", cfg.agent)
    with pytest.raises(ValueError, match=refusal):
        policy_for(cfg, forged, env)
    with pytest.raises(ValueError, match=rf"holds a model trained on '{other}' data; this run"):
        train(cfg, forged, 400)  # nor is it trained further on the current version


@pytest.mark.smoke
def test_resume_continues_from_the_checkpoint_with_its_replay_buffer(trained, tmp_path) -> None:
    cfg, done, _ = trained
    out = tmp_path / "resume"
    out.mkdir()
    for path in [*done.glob("*.csv"), *(done / "checkpoints").iterdir()]:
        target = out / path.relative_to(done)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
    summary = train(cfg, out, 400)
    assert summary["step"] == 400
    assert not (out / "checkpoints" / "sac_300_steps.zip").exists()
    model = load_sb3(out / "checkpoints" / "sac_400_steps.zip", SAC)
    model.load_replay_buffer(out / "checkpoints" / "sac_replay_buffer_400_steps.pkl")
    assert model.num_timesteps == 400
    # the observation statistics ride in the model file and keep counting across the resume
    assert getattr(model, NORMALIZER)["count"] > 390
    # a fresh buffer would hold the 100 new transitions; the loaded one is full (the buffer
    # was sized to the first run's 300 steps)
    assert model.replay_buffer.size() * model.replay_buffer.n_envs == 300
    with open(out / PROGRESS, newline="") as f:
        steps = [float(r["time/total_timesteps"]) for r in csv.DictReader(f)]
    assert min(steps) <= 300 < max(steps), "rows of the first run are kept"
    again = train(cfg, out, 400)
    assert again["step"] == 400 and again["wall_s"] == 0.0


@pytest.mark.smoke
def test_ctrl_c_leaves_a_checkpoint_that_a_rerun_finishes(tmp_path, monkeypatch) -> None:
    cfg = config()
    on_step = StopOnRequest._on_step

    def ctrl_c_at_150(self: StopOnRequest) -> bool:
        if self.num_timesteps == 150:
            signal.raise_signal(signal.SIGINT)  # what the first Ctrl-C delivers
        return on_step(self)

    monkeypatch.setattr(StopOnRequest, "_on_step", ctrl_c_at_150)
    summary = train(cfg, tmp_path, 300)
    assert summary["interrupted"] and summary["step"] == 150
    assert (tmp_path / "checkpoints" / "sac_150_steps.zip").is_file()
    assert (tmp_path / MODEL_FILE).is_file()
    monkeypatch.undo()
    assert train(cfg, tmp_path, 300)["step"] == 300


@pytest.mark.smoke
def test_ppo_trains_and_reloads(tmp_path, env) -> None:
    cfg = config("ppo")
    summary = train(cfg, tmp_path, 256)
    assert summary["step"] == 256
    policy = policy_for(cfg, tmp_path, env)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(policy.act(obs), policy.act(obs))


def test_missing_or_bad_checkpoints_fail_clearly(trained, tmp_path, env) -> None:
    cfg, _, _ = trained
    with pytest.raises(ValueError, match="needs a trained model.*embodied-train agent=sac"):
        policy_for(cfg, None, env)
    with pytest.raises(FileNotFoundError, match="no trained model at .*model.zip"):
        policy_for(cfg, tmp_path, env)
    (tmp_path / MODEL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a loadable SAC model"):
        policy_for(cfg, tmp_path, env)


def test_bad_settings_fail_with_the_valid_choices(trained, tmp_path, env) -> None:
    cfg, out, _ = trained
    bad = cfg.agent.copy()
    bad.family = "dqn"
    with pytest.raises(ValueError, match=r"unknown sb3 family 'dqn'; valid: \['ppo', 'sac'\]"):
        make_policy(bad, out, env, 0)
    with pytest.raises(ValueError, match="needs env_id"):
        train(cfg, tmp_path, 10, env_id=None)
    with pytest.raises(ValueError, match="different config"):
        train(config(overrides=("agent.algo.gamma=0.5",)), out, 400)
    pixels = gymnasium.make("embodied/Reach-v0", obs_mode="pixels", image_size=8)
    with pytest.raises(ValueError, match="trained for observations"):
        make_policy(cfg.agent, out, pixels, 0)
    pixels.close()


def scripted_dataset(path: Path, env_id: str, episodes: int) -> None:
    """A few scripted episodes written as the collect app would."""
    env = gymnasium.make(env_id)
    eps = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy = env.unwrapped.scripted_policy("cautious")
        policy.reset(env)
        states, actions, rewards, flags = [obs], [], [], []
        done = False
        while not done:
            action = policy.act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            states.append(obs)
            actions.append(action)
            rewards.append(reward)
            flags.append((info["dropped"], info["is_success"], terminated))
            done = terminated or truncated
        dropped, success, terminated = (np.array(f) for f in zip(*flags, strict=True))
        eps.append(
            Episode(
                state=np.array(states),
                pixels=None,
                action=np.array(actions),
                reward=np.array(rewards),
                dropped=dropped,
                success=success,
                terminated=terminated,
                physics=info["physics"],
                seed=seed,
            )
        )
    write_dataset(
        path,
        eps,
        env_id=env_id,
        task=env.unwrapped.task_name,
        split="train",
        obs_modes=["state"],
        image_size=64,
        state_labels=env.unwrapped.state_labels,
    )
    env.close()


@pytest.mark.smoke
def test_prefill_puts_dataset_transitions_in_the_replay_buffer(tmp_path) -> None:
    data = tmp_path / "data"
    scripted_dataset(data, "embodied/Reach-v0", 3)
    demos = sum(len(e.action) for e in Dataset.load(data).episodes)
    cfg = config(overrides=("agent.trainer.prefill_episodes=3",))
    out = tmp_path / "out"
    summary = instantiate(cfg.agent.trainer)(
        agent_cfg=cfg.agent, dataset_dir=data, out_dir=out, steps=120, seed=0, progress=False
    )
    assert summary["step"] == 120
    model = load_sb3(out / "checkpoints" / "sac_120_steps.zip", SAC)
    model.load_replay_buffer(out / "checkpoints" / "sac_replay_buffer_120_steps.pkl")
    stored = model.replay_buffer.size() * model.replay_buffer.n_envs
    assert stored == 120 + demos - demos % 2
    with pytest.raises(ValueError, match="same task"):
        instantiate(cfg.agent.trainer, env_id="embodied/CupCarry-v0")(
            agent_cfg=cfg.agent, dataset_dir=data, out_dir=tmp_path / "x", steps=10
        )


# ----------------------------------------------------------------------------- demos, shaping
def scripted_run(env: gymnasium.Env, seed: int) -> list[tuple]:
    """One cautious scripted episode: (obs, action, reward, terminated, truncated, info)."""
    obs, _ = env.reset(seed=seed)
    policy = env.unwrapped.scripted_policy("cautious")
    policy.reset(env)
    steps, done = [], False
    while not done:
        action = policy.act(obs)
        nxt, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, action, reward, terminated, truncated, info))
        obs, done = nxt, terminated or truncated
    return steps


def test_shaping_pays_progress_and_leaves_success_and_termination_alone() -> None:
    gamma, scale = 0.98, 2.0
    bare = gymnasium.make("embodied/CupCarry-v0", shift="train")
    wrapped = ProgressShaping(gymnasium.make("embodied/CupCarry-v0", shift="train"), scale, gamma)
    plain, shaped_run = scripted_run(bare, 5), scripted_run(wrapped, 5)
    assert len(plain) == len(shaped_run)
    assert plain[-1][5]["is_success"], "the scripted carry succeeds: the check covers a success"
    env = wrapped.unwrapped
    last = -scale * np.linalg.norm(env.sensor("cup_pos") - env.target)  # Phi(s_T), MuJoCo
    extra = []
    for (o1, a1, r1, te1, tr1, i1), (o2, a2, r2, te2, tr2, i2) in zip(
        plain, shaped_run, strict=True
    ):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(a1, a2)
        assert (te1, tr1) == (te2, tr2)
        assert {k: i1[k] for k in ("is_success", "dropped", "slipped", "physics_error")} == {
            k: i2[k] for k in ("is_success", "dropped", "slipped", "physics_error")
        }
        extra.append(r2 - r1)
    # the extra reward is gamma * Phi(s') - Phi(s), with Phi from MuJoCo's cup and target
    states = [s[0] for s in plain]
    cup, target = STATE_LABELS.index("cup_x"), STATE_LABELS.index("target_x")
    phi = [-scale * np.linalg.norm(s[cup : cup + 3] - s[target : target + 3]) for s in states]
    phi.append(last)
    np.testing.assert_allclose(
        extra, [gamma * phi[t + 1] - phi[t] for t in range(len(plain))], atol=1e-5
    )
    assert last > -scale * 0.03, "the episode ends with the cup (MuJoCo's) on the target"
    # dataset transitions are shaped to exactly what the wrapper pays
    rows = [(s[0], n[0], s[1], s[2], s[3]) for s, n in zip(plain, plain[1:], strict=False)]
    rows = shaped(rows, CupCarry.progress_point, scale, gamma)
    np.testing.assert_allclose([r[3] for r in rows], [s[2] for s in shaped_run[:-1]], atol=1e-5)
    # the point comes from the task class; a task that declares none fails saying so
    toy = type("Toy", (ArmEnv,), {})  # named after its creation: not registered as a task
    toy.task_name = "Toy"
    with pytest.raises(ValueError, match=r"no progress potential for task 'Toy' \(.*Toy\): decl"):
        progress_point(toy)
    bare.close()
    wrapped.close()


@pytest.mark.smoke
def test_scripted_demos_fill_the_replay_buffer_and_bc_fits_them(tmp_path) -> None:
    """Smoke sizes (preset=smoke, 32-unit nets, 400 env steps): plumbing, not a result. The
    recipe's 50 demo episodes and 2000 BC steps are cut to the run (a third of its env steps
    in scripted transitions), which says so."""
    cfg = config(
        overrides=(
            "agent.trainer.demo_episodes=50",
            "agent.trainer.demo_noise=0.0",
            "agent.trainer.bc_steps=2000",
            "agent.trainer.bc_weight=0.5",
            "agent.trainer.critic_steps=500",
            "agent.trainer.shaping=1.0",
        )
    )
    assert cfg.preset.name == "smoke"
    summary = train(cfg, tmp_path, 400)
    assert summary["step"] == 400
    model = load_sb3(tmp_path / "checkpoints" / "sac_400_steps.zip", SAC)
    model.load_replay_buffer(tmp_path / "checkpoints" / "sac_replay_buffer_400_steps.pkl")
    # the demos, re-run here by hand: the controller on the train split, seeds 20000, 20001...
    # until 400 // 3 = 133 transitions, the last episode cut there
    gamma = float(cfg.agent.algo.gamma)
    env = ProgressShaping(gymnasium.make("embodied/Reach-v0", shift="train"), 1.0, gamma)
    demo, episodes = [], 0
    while len(demo) < 133:
        demo += scripted_run(env, 20_000 + episodes)
        episodes += 1
    demo = demo[:133]
    env.close()
    assert 2 <= episodes < 50, "the cut falls inside the recipe's 50 episodes"
    # no more BC steps than env steps
    assert (summary["demo_episodes"], summary["bc_steps"]) == (episodes, 400)
    assert (
        f"cut to fit the run, {episodes} scripted episodes (of 50, at most 133 steps), 400"
        in summary["note"]
    )
    assert "and 400 critic warm-up steps (of 500)" in summary["note"]
    n = len(demo) - len(demo) % 2
    buffer = model.replay_buffer
    assert buffer.size() * buffer.n_envs == 400 + n
    # SB3 lays transitions out (slot, env): two at a time, in order
    stored_obs = buffer.observations[: n // 2].reshape(n, -1)
    np.testing.assert_allclose(stored_obs, np.stack([d[0] for d in demo[:n]]), atol=1e-6)
    np.testing.assert_allclose(
        buffer.actions[: n // 2].reshape(n, -1), np.stack([d[1] for d in demo[:n]]), atol=1e-6
    )
    np.testing.assert_allclose(
        buffer.rewards[: n // 2].reshape(n), [d[2] for d in demo[:n]], atol=1e-5
    )
    assert buffer.dones[: n // 2].sum() == sum(d[3] for d in demo[:n])


def test_behaviour_cloning_moves_the_actor_onto_the_demonstrations() -> None:
    env = gymnasium.make("embodied/Reach-v0", shift="train")
    rows, _ = scripted_transitions(env, 3, seed=0, style="cautious", noise=0.1)
    model = SAC("MlpPolicy", env, batch_size=64, policy_kwargs={"net_arch": [32, 32]}, seed=0)
    demos = DemoBatches(rows, seed=0)
    obs = torch.as_tensor(demos.obs)

    def error_and_spread() -> tuple[float, np.ndarray]:
        with torch.no_grad():
            act = model.actor(obs, deterministic=True).numpy()
            _, log_std, _ = model.actor.get_action_dist_params(obs)
        return float(((act - demos.act.numpy()) ** 2).mean()), log_std.exp().mean(0).numpy()

    error, spread = error_and_spread()
    pretrain_actor(model, demos, 300)
    error_after, spread_after = error_and_spread()
    assert error_after < 0.25 * error
    # Reach's controller always opens the grip (-1): the actor grows sure of it
    assert spread_after[3] < 0.5 * spread[3]
    env.close()


def test_critic_warm_up_fits_the_buffer_and_leaves_the_actor_alone() -> None:
    """The critic alone moves: its soft Bellman error on the demonstrations falls, while the
    actor and the temperature stay exactly as behaviour cloning left them."""
    env = gymnasium.make("embodied/Reach-v0", shift="train")
    rows, _ = scripted_transitions(env, 4, seed=0, style="cautious", noise=0.1)
    model = SAC(
        "MlpPolicy", env, batch_size=64, gamma=0.5, policy_kwargs={"net_arch": [32, 32]}, seed=0
    )
    prefill_replay_buffer(model, rows)
    batch = model.replay_buffer.sample(len(rows), env=None)

    def bellman_error() -> float:
        with torch.no_grad():
            nxt, logp = model.actor.action_log_prob(batch.next_observations)
            q_next = torch.cat(model.critic(batch.next_observations, nxt), dim=1).min(1).values
            ent = torch.exp(model.log_ent_coef)
            target = batch.rewards[:, 0] + (1 - batch.dones[:, 0]) * 0.5 * (q_next - ent * logp)
            q = model.critic(batch.observations, batch.actions)[0][:, 0]
            return float(((q - target) ** 2).mean())

    actor = [p.detach().clone() for p in model.actor.parameters()]
    temperature = model.log_ent_coef.detach().clone()
    before = bellman_error()
    warm_critic(model, 500)
    assert bellman_error() < 0.5 * before  # measured 1.25 -> 0.38
    for p, q in zip(model.actor.parameters(), actor, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    torch.testing.assert_close(model.log_ent_coef.detach(), temperature, rtol=0, atol=0)
    env.close()


def with_per_task(cfg: DictConfig, table: dict) -> DictConfig:
    agent = cfg.agent.copy()
    with open_dict(agent):
        agent.per_task = table
    return agent


def test_per_task_settings_apply_to_their_task_only() -> None:
    """The agent's ``per_task`` puts a task's ``trainer`` settings and ``algo`` over the
    config's for that task alone; unknown tasks and settings fail naming the valid ones."""
    table = {
        "CupCarry": {"trainer": {"bc_weight": 2.0}, "algo": {"gamma": 0.9, "target_entropy": -8}}
    }
    cfg = with_per_task(config(), table)  # composed: in struct mode, target_entropy a new key
    given = {"bc_weight": 0.5}
    carry, carry_kw = task_settings(cfg, "embodied/CupCarry-v0", given)
    reach, reach_kw = task_settings(cfg, "embodied/Reach-v0", given)
    assert (carry.algo.gamma, carry.algo.target_entropy, carry_kw.bc_weight) == (0.9, -8, 2.0)
    assert carry.algo.tau == cfg.algo.tau
    assert (reach.algo.gamma, reach_kw.bc_weight) == (0.98, 0.5)
    with pytest.raises(ValueError, match=r"unknown tasks \['Carry'\]; valid: \['CupCarry'"):
        task_settings(with_per_task(config(), {"Carry": {}}), "embodied/Reach-v0", {})
    with pytest.raises(ValueError, match=r"unknown settings \['bc_wieght'\]; valid: .*'bc_weight'"):
        task_settings(
            with_per_task(config(), {"CupCarry": {"trainer": {"bc_wieght": 1}}}),
            "embodied/CupCarry-v0",
            {},
        )


# sac.yaml's CupCarry recipe as it stood under trainer.per_task (before per_task moved up to
# the agent): the settings that produced docs/measurements.md's numbers
OLD_CUPCARRY = {
    "demo_episodes": 200,
    "demo_noise": 0.1,
    "bc_steps": 2000,
    "bc_weight": 2.0,
    "critic_steps": 2000,
    "shaping": 1.0,
    "algo": {"learning_starts": 200, "ent_coef": "auto_0.01", "target_entropy": -8},
}


@pytest.mark.parametrize("task", ["CupCarry", "Reach"])
def test_sac_settings_per_task_are_the_ones_measured(task, tmp_path) -> None:
    """The agent-level ``per_task`` hands every task exactly the trainer settings and algo the
    old ``trainer.per_task`` did: same seeds, same SAC."""
    with initialize_config_module("embodied.configs", version_base=None):
        cfg = compose("train", ["agent=sac", f"env={task.lower().replace('cup', 'cup_')}"])
    block = {k: v for k, v in OmegaConf.to_container(cfg.agent.trainer, resolve=True).items()}
    env_id = block.pop("env_id")
    del block["_target_"], block["_partial_"]
    old = dict(OLD_CUPCARRY) if task == "CupCarry" else {}
    old_algo = {**OmegaConf.to_container(cfg.agent.algo), **old.pop("algo", {})}
    agent, settings = task_settings(cfg.agent, env_id, block)
    assert dataclasses.asdict(settings) == dataclasses.asdict(SB3Settings(**{**block, **old}))
    assert OmegaConf.to_container(agent.algo, resolve=True) == old_algo
    assert list(OmegaConf.to_container(agent.algo)) == list(old_algo)  # same order: same identity
    trainer = SB3Trainer(agent, settings, None, tmp_path, 10, 0, False, env_id)
    assert isinstance(trainer, Trainer) and trainer.trained_on["task"] == task


def test_a_misspelt_trainer_key_is_refused(tmp_path) -> None:
    cfg = config(overrides=("+agent.trainer.bc_wieght=1.0",))
    with pytest.raises(ValueError, match=r"trainer has unknown settings \['bc_wieght'\]; valid:"):
        train(cfg, tmp_path, 10)
    assert not tmp_path.joinpath("checkpoints").exists(), "refused before anything was written"
