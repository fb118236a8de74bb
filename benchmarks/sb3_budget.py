"""What does a model-free SB3 agent reach on a task for a given budget of env steps?

Trains ``agent`` (configs/agent/<agent>.yaml, default sac) on the task's ``train`` split with
the same trainer ``embodied-train`` uses (resumable: rerun to continue), then runs
``--episodes`` seeded closed-loop episodes of the deterministic policy on ``--split`` and
prints the success rate (95% Wilson interval), drop rate, return and the training wall time.

    nice python benchmarks/sb3_budget.py --env reach --steps 15000 --episodes 50
    nice python benchmarks/sb3_budget.py --env cup_carry --steps 30000 agent.algo.gamma=0.99
"""

import argparse
import time
from pathlib import Path

import gymnasium
import numpy as np
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import embodied
from embodied.metrics.stats import wilson
from embodied.rollout import Step, rollout


def evaluate(env: gymnasium.Env, policy, episodes: int, split: str) -> dict[str, float]:
    """Closed-loop episodes with seeds 0..episodes-1 on ``split``."""
    success, dropped, returns, lengths = [], [], [], []
    rewards: list[float] = []

    def record(step: Step) -> None:
        rewards.append(step.reward)

    for seed in range(episodes):
        rewards.clear()
        last = rollout(env, policy, seed, record, options={"shift": split})
        success.append(bool(last.info["is_success"]))
        dropped.append(bool(last.info["dropped"]))
        returns.append(sum(rewards))
        lengths.append(last.index)
    return {
        "success": float(np.mean(success)),
        "successes": int(np.sum(success)),
        "dropped": float(np.mean(dropped)),
        "return": float(np.mean(returns)),
        "steps": float(np.mean(lengths)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reach", help="configs/env name: reach, cup_carry, ...")
    parser.add_argument("--agent", default="sac", help="configs/agent name: sac, ppo")
    parser.add_argument("--steps", type=int, default=15000, help="training budget (env steps)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--split", default="id", help="evaluation split")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--out", default=None, help="checkpoint dir (default under runs/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. agent.algo.gamma=0.95")
    args = parser.parse_args()

    with initialize_config_module("embodied.configs", version_base=None):
        cfg = compose("train", [f"agent={args.agent}", f"env={args.env}", *args.overrides])
    out = Path(args.out or f"runs/sb3_budget/{cfg.env.name}/{args.agent}-{args.steps}-s{args.seed}")
    start = time.perf_counter()
    summary = instantiate(cfg.agent.trainer)(
        agent_cfg=cfg.agent,
        dataset_dir=cfg.data_dir,
        out_dir=out,
        steps=args.steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    train_s = time.perf_counter() - start
    if summary["interrupted"]:
        print(f"interrupted at step {summary['step']}; rerun the same command to continue")
        return
    env = gymnasium.make(cfg.env.id, obs_mode=cfg.agent.obs_mode, **cfg.env.kwargs)
    policy = instantiate(cfg.agent.policy)(agent_cfg=cfg.agent, checkpoint_dir=out, env=env, seed=0)
    start = time.perf_counter()
    result = evaluate(env, policy, args.episodes, args.split)
    lo, hi = wilson(result["successes"], args.episodes)
    print(
        f"{args.agent} on {cfg.env.name} ({embodied.__name__} {embodied.__version__}), "
        f"{summary['step']} env steps, seed {args.seed}: train {train_s:.0f} s (this run), "
        f"eval {time.perf_counter() - start:.0f} s\n"
        f"  {args.split}: success {result['success']:.0%} [{lo:.0%}, {hi:.0%}] of "
        f"{args.episodes}, dropped {result['dropped']:.0%}, return {result['return']:.1f}, "
        f"length {result['steps']:.1f} steps; model in {out}"
    )


if __name__ == "__main__":
    main()
