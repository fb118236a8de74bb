"""What does a model-free SB3 agent reach on a task for a given budget of env steps?

Trains ``agent`` (configs/agent/<agent>.yaml, default sac) on the task's ``train`` split with
the same trainer ``embodied-train`` uses (resumable: rerun to continue). Every ``--every``
steps the trainer scores ``--episodes`` deterministic episodes on the ``id`` split (its
EvalCallback); at the end the benchmark runs ``--episodes`` seeded closed-loop episodes
(seeds 0..N-1) on ``--split``. Prints success vs steps (95% Wilson intervals), drop rate and
training minutes (evaluations left out). The agent config's ``per_task`` settings apply as in
the bench: on CupCarry, SAC from demonstrations (scripted demos in the buffer, behaviour
cloning before and during SAC, progress shaping; docs/measurements.md says what it
measured). ``--recipe`` applies that recipe to ``--env`` too; ``--baseline`` also trains and
prints plain SAC (no per_task settings, no levers) beside it. Override the recipe itself
with ``agent.per_task.CupCarry.trainer.<setting>=...``.

    nice python benchmarks/sb3_budget.py --env reach --steps 15000 --episodes 50
    nice python benchmarks/sb3_budget.py --env cup_carry --every 2500 --baseline
    nice python benchmarks/sb3_budget.py --env cup_carry --seed 1 \
        agent.per_task.CupCarry.trainer.critic_steps=2000
"""

import argparse
import csv
import time
from pathlib import Path

import gymnasium
import numpy as np
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import embodied
from embodied.agents.sb3 import PROGRESS
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


PLAIN = [  # the baseline: SAC with none of the levers agent/sac.yaml adds, on any task
    "~agent.per_task",
    "agent.trainer.prefill_episodes=0",
    "agent.trainer.demo_episodes=0",
    "agent.trainer.bc_steps=0",
    "agent.trainer.bc_weight=0.0",
    "agent.trainer.critic_steps=0",
    "agent.trainer.shaping=0.0",
]


def recipe(task: str) -> list[str]:
    """CupCarry's per_task recipe (agent/sac.yaml) for ``task`` too, to try it elsewhere."""
    return [f"+agent.per_task.{task}=${{agent.per_task.CupCarry}}"]


def curve(out: Path) -> list[tuple[int, float, float]]:
    """(steps, id success rate, training seconds) at each of the trainer's evaluations."""
    with open(out / PROGRESS, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/success_rate")]
    return [
        (
            int(float(r["time/total_timesteps"])),
            float(r["eval/success_rate"]),
            float(r.get("time/train_s") or "nan"),
        )
        for r in rows
    ]


def run(args: argparse.Namespace, name: str, overrides: list[str]) -> None:
    """Train one recipe, print its curve and its final evaluation."""
    with initialize_config_module("embodied.configs", version_base=None):
        cfg = compose(
            "train",
            [
                f"agent={args.agent}",
                f"env={args.env}",
                f"agent.trainer.eval_every={args.every or args.steps}",
                f"agent.trainer.eval_episodes={args.episodes}",
                *overrides,
            ],
        )
    out = Path(args.out or "runs/sb3_budget") / cfg.env.name / f"{name}-{args.steps}-s{args.seed}"
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
        raise SystemExit(130)
    env = gymnasium.make(cfg.env.id, obs_mode=cfg.agent.obs_mode, **cfg.env.kwargs)
    policy = instantiate(cfg.agent.policy)(agent_cfg=cfg.agent, checkpoint_dir=out, env=env, seed=0)
    start = time.perf_counter()
    result = evaluate(env, policy, args.episodes, args.split)
    lo, hi = wilson(result["successes"], args.episodes)
    print(
        f"\n{name} ({args.agent}) on {cfg.env.name} ({embodied.__name__} "
        f"{embodied.__version__}), seed {args.seed}, model in {out}\n"
        f"  {'steps':>7}  {'id success (trainer eval)':<28}{'train min':>9}"
    )
    for steps, rate, secs in curve(out):
        k = round(rate * args.episodes)
        clo, chi = wilson(k, args.episodes)
        print(
            f"  {steps:>7}  {rate:>4.0%} [{clo:>4.0%}, {chi:>4.0%}] of {args.episodes:<6}"
            f"{secs / 60:>9.1f}"
        )
    print(
        f"  final, seeds 0..{args.episodes - 1} on {args.split}: success {result['success']:.0%} "
        f"[{lo:.0%}, {hi:.0%}], dropped {result['dropped']:.0%}, return {result['return']:.1f}, "
        f"length {result['steps']:.1f} steps; this call: train {train_s / 60:.1f} min, "
        f"eval {(time.perf_counter() - start) / 60:.1f} min"
    )
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reach", help="configs/env name: reach, cup_carry, ...")
    parser.add_argument("--agent", default="sac", help="configs/agent name: sac, ppo")
    parser.add_argument("--steps", type=int, default=15000, help="training budget (env steps)")
    parser.add_argument("--every", type=int, default=None, help="curve interval (default: --steps)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--split", default="id", help="evaluation split")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--out", default=None, help="checkpoint root (default runs/sb3_budget)")
    parser.add_argument("--recipe", action="store_true", help="CupCarry's recipe on --env too")
    parser.add_argument("--baseline", action="store_true", help="also plain SAC")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. agent.algo.gamma=0.95")
    args = parser.parse_args()
    with initialize_config_module("embodied.configs", version_base=None):
        task = compose("train", [f"env={args.env}"]).env.name
    extra = recipe(task) if args.recipe and task != "CupCarry" else []
    run(args, f"{args.agent}-recipe" if extra else args.agent, [*extra, *args.overrides])
    if args.baseline:
        run(args, f"{args.agent}-plain", [*args.overrides, *PLAIN])


if __name__ == "__main__":
    main()
