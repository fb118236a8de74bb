"""Median milliseconds per MPC action of each agent's own planner config, beside the floor.

Each agent is timed as ``embodied-eval`` runs it: its composed config (the planner group it
picks, with its own overrides, and its ``per_task`` settings for ``--env``'s task), on
``--threads`` threads (the eval's ``threads``, 1 by default: torch's, and the simulators'
``mujoco.rollout`` threads). The floor is the same planner with a
model that predicts nothing, instantly (``zero_cost_step``): the planner's own overhead. For
the simulators (``oracle``, ``nominal``, ``sysid``) the rollout column times bare
``mujoco.rollout`` replaying exactly the calls one action made (batch and steps of each call,
planning and, for ``sysid``, identification). A model's arithmetic does not depend on its
weights, so by default each learned family is fitted for one step on a tiny freshly collected
dataset; ``--checkpoints ROOT`` times trained models instead (``ROOT/<agent>/model.pt``, the
layout ``embodied-train`` writes under ``models/<Task>/``).
``--planners cem mppi`` also times other planner groups with the agent's shared keys.
``--set KEY=VALUE`` overrides the composed agent config (a loaded retrieval checkpoint takes
its ``world_model.index``, ``nlist`` and ``nprobe`` too); ``--recall`` adds, for retrieval, the
recall@k of its index against the exact search on the queries its planner sent.

    python benchmarks/planner_speed.py                       # every MPC/simulator agent config
    python benchmarks/planner_speed.py --agents oracle sysid nominal --actions 50
    python benchmarks/planner_speed.py --agents retrieval --env cup_push --clock cpu \
        --checkpoints runs/main/models/CupPush
    python benchmarks/planner_speed.py --agents retrieval --env cup_push --clock cpu \
        --checkpoints runs/main/models/CupPush --set agent.world_model.index=ivf --recall
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

import embodied.configs
from embodied.agents.knn import ExactIndex
from embodied.agents.mpc import MPCAgent, build_planner, load_world_model
from embodied.agents.planners import zero_cost_step
from embodied.agents.simulator import STATE_SPEC
from embodied.agents.training import for_task, set_torch_threads, train_world_model
from embodied.collect import collect

PLANNERS = ("cem", "icem", "mppi")  # configs/planner/<name>.yaml
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}  # cpu: this thread's CPU time
clock = CLOCKS["wall"]


def agent_names() -> list[str]:
    """Agent configs that plan (kind mpc or simulator)."""
    folder = Path(embodied.configs.__file__).parent / "agent"
    names = []
    for path in sorted(folder.glob("*.yaml")):
        if OmegaConf.load(path).get("kind") in ("mpc", "simulator"):
            names.append(path.stem)
    return names


def planner_cfg(agent: DictConfig, name: str) -> DictConfig:
    """configs/planner/<name>.yaml with the agent's values of the keys it shares."""
    cfg = OmegaConf.load(Path(embodied.configs.__file__).parent / "planner" / f"{name}.yaml")
    for key, value in OmegaConf.to_container(agent.planner, resolve=True).items():
        if key in cfg and key != "_target_":
            cfg[key] = value
    return cfg


class RolloutLog:
    """Records the (batch, nstep) of every ``mujoco.rollout`` call while it is installed: the
    pool method, which both ``mujoco.rollout.rollout`` and a simulator's own pool run."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.original = mujoco.rollout.Rollout.rollout

    def __enter__(self) -> RolloutLog:
        original = self.original

        def logged(pool, model, data, initial_state, control=None, *args, nstep=None, **kw):
            self.calls.append((len(initial_state), int(nstep)))
            return original(pool, model, data, initial_state, control, *args, nstep=nstep, **kw)

        mujoco.rollout.Rollout.rollout = logged
        return self

    def __exit__(self, *exc: object) -> None:
        mujoco.rollout.Rollout.rollout = self.original


def bare_rollout_ms(model: object, calls: list[list[tuple[int, int]]]) -> float | None:
    """Median ms of the physics alone: bare mujoco.rollout replaying each action's calls on
    one thread pool (as the simulators keep one), holding the env's current controls."""
    if not hasattr(model, "rollout") or not any(calls):
        return None
    state = np.empty(model.nstate)
    mujoco.mj_getState(model.model, model.env.data, state, STATE_SPEC)
    times = []
    nthread = len(model.datas) if len(model.datas) > 1 else 0
    with mujoco.rollout.Rollout(nthread=nthread) as pool:
        for action in calls:
            start = clock()
            for batch, nstep in action:
                pool.rollout(
                    model.model,
                    model.datas,
                    np.tile(state, (batch, 1)),
                    np.tile(model.env.data.ctrl, (batch, nstep, 1)),
                    nstep=nstep,
                )
            times.append(clock() - start)
    return 1000 * float(np.median(times))


class QueryLog:
    """Records the queries of a retrieval model's transition search while it is installed."""

    def __init__(self, model: object) -> None:
        self.index = getattr(model, "_key_index", None)
        self.queries: list[torch.Tensor] = []

    def __enter__(self) -> QueryLog:
        if self.index is not None:
            search = self.index.search
            self.index.search = lambda q, k: (self.queries.append(q.clone()), search(q, k))[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.index is not None:
            del self.index.search  # the class's method again


def recall(model: object, queries: list[torch.Tensor], k: int) -> float | None:
    """Mean share of the exact k nearest keys the model's index returns, over ``queries``."""
    if not queries:
        return None
    exact = ExactIndex(model._keys)
    shares = []
    for q in queries:
        got, want = model._key_index.search(q, k).tolist(), exact.search(q, k).tolist()
        shares += [len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)]
    return float(np.mean(shares))


def build_model(agent: DictConfig, data_dir: str, checkpoints: str | None, tmp: str) -> object:
    """The trained checkpoint, or one step of ``embodied-train``'s own training (which tells a
    frame model its task) on the tiny dataset."""
    if agent.get("trainer") is None or checkpoints:
        root = Path(checkpoints) / agent.name if checkpoints else None
        model = load_world_model(agent, root)
        wm = agent.world_model
        if hasattr(model, "set_index") and wm.get("index"):  # a search setting: the config's
            model.set_index(wm.index, wm.get("nlist"), wm.get("nprobe"))
        return model
    out = Path(tmp) / "models" / agent.name
    train_world_model(agent, data_dir, out, steps=1, progress=False)
    return load_world_model(agent, out)


def time_planner(
    cfg: DictConfig,
    agent: DictConfig,
    env: gymnasium.Env,
    model: object,
    actions: int,
    log_queries: bool = False,
) -> tuple[float, float, float | None, list[torch.Tensor]]:
    """(ms per action, floor ms, bare rollout ms) of one planner config, medians, and with
    ``log_queries`` the queries of a retrieval model's transition search."""
    planner = build_planner(cfg, env, 0, model)
    policy = MPCAgent(model, planner)
    obs, _ = env.reset(seed=0, options={"shift": "id"})
    policy.reset(env)
    policy.act(obs)  # warm-up: first-call allocations
    times, floor, calls = [], [], []
    with QueryLog(model if log_queries else None) as asked:
        for _ in range(actions):
            with RolloutLog() as log:
                start = clock()
                action = policy.act(obs)
                times.append(clock() - start)
            calls.append(log.calls)
            warm = planner.mean  # the floor must not disturb the real plan's warm start
            kept = getattr(planner, "kept", None)
            z = torch.as_tensor(np.zeros(1))  # the floor's model ignores the state
            start = clock()
            planner.plan(zero_cost_step, z)
            floor.append(clock() - start)
            planner.mean = warm
            if kept is not None:
                planner.kept = kept
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset(options={"shift": "id"})
                policy.reset(env)
    bare = bare_rollout_ms(model, calls)
    return 1000 * float(np.median(times)), 1000 * float(np.median(floor)), bare, asked.queries


def time_agent(
    agent: DictConfig,
    env_cfg: DictConfig,
    model: object,
    actions: int,
    others: list[str],
    with_recall: bool = False,
) -> dict[str, tuple[float, float, float | None, float | None]]:
    """The agent's own planner (``own: <group>``), then each planner group in ``others``: the
    times of ``time_planner`` and, ``with_recall``, the index's recall@k on its queries."""
    env = gymnasium.make(
        env_cfg.id, obs_mode=agent.obs_mode, image_size=env_cfg.image_size, **env_cfg.kwargs
    )
    own = get_class(agent.planner._target_).__name__.lower()
    groups = {f"own:{own}": agent.planner, **{n: planner_cfg(agent, n) for n in others}}
    out = {}
    for name, cfg in groups.items():
        *times, queries = time_planner(cfg, agent, env, model, actions, with_recall)
        k = agent.world_model.get("fail_neighbours", 1)
        out[name] = (*times, recall(model, queries, k) if with_recall else None)
    env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="*", default=None, help="default: every planning agent")
    parser.add_argument("--env", default="cup_carry", help="env config name (configs/env/)")
    parser.add_argument("--actions", type=int, default=30, help="timed actions per planner")
    parser.add_argument("--checkpoints", default=None, help="ROOT with <agent>/model.pt")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and MuJoCo rollout threads, as embodied-eval's threads",
    )
    parser.add_argument(
        "--planners", nargs="*", default=[], choices=PLANNERS, help="also time these groups"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], help="config overrides, e.g. agent.world_model.index=ivf"
    )
    parser.add_argument(
        "--recall", action="store_true", help="retrieval: its index's recall@k vs exact"
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=list(CLOCKS),
        help="cpu: the calling thread's CPU time, steady on a busy machine (one thread only)",
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    names = args.agents or agent_names()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_module("embodied.configs", version_base=None),
    ):
        data_dir = None
        for name in names:
            cfg = compose("train", overrides=[f"agent={name}", f"env={args.env}", *args.set])
            agent = for_task(cfg.agent, cfg.env.name)  # the task's own settings, as eval's
            torch.set_num_threads(args.threads)  # each agent on its own setting
            set_torch_threads(agent.get("torch_threads"))
            if agent.get("trainer") is not None and not args.checkpoints and data_dir is None:
                data_dir = f"{tmp}/data"
                collect(cfg.env.id, data_dir, episodes=3, seed=0, progress=False)
            model = build_model(agent, data_dir, args.checkpoints, tmp)
            cls = get_class(agent.world_model._target_).__name__
            timed = time_agent(agent, cfg.env, model, args.actions, args.planners, args.recall)
            for planner, times in timed.items():
                rows.append((name, cls, planner, *times, torch.get_num_threads()))
    print(
        f"\nmedian ms per MPC action ({args.clock} clock), {args.env}, {args.actions} actions each"
    )
    print(
        f"{'agent':<11} {'model':<16} {'planner':<9} {'ms/action':>10} {'floor ms':>9} "
        f"{'rollout ms':>10} threads recall@k"
    )
    for name, cls, planner, ms, floor, bare, found, threads in rows:
        physics = "-" if bare is None else f"{bare:.1f}"
        share = "-" if found is None else f"{found:.3f}"
        print(
            f"{name:<11} {cls:<16} {planner:<9} {ms:>10.1f} {floor:>9.2f} {physics:>10} "
            f"{threads:>7} {share:>8}"
        )


if __name__ == "__main__":
    main()
