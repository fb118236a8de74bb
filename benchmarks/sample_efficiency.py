"""In-distribution success of each learned family against training steps and data size.

For every dataset size (episodes collected like ``embodied-bench`` does) and every learned agent,
the model is trained up to each budget in turn (``train_world_model`` resumes, so the budgets
cost their largest one) and evaluated on the ``id`` split after each: the curve a preset's
``train_steps`` and ``collect_episodes`` are read from. Retrieval has nothing to train: it is
evaluated once per dataset size.

    python benchmarks/sample_efficiency.py                                   # CupCarry, quick size
    python benchmarks/sample_efficiency.py --agents pixel --steps 500 1000 2000 --episodes 10
    python benchmarks/sample_efficiency.py --collect 50 150 300 --out /tmp/sample-efficiency
    python benchmarks/sample_efficiency.py --agents pixel --set agent.planner.population=64
    python benchmarks/sample_efficiency.py --rounds 4 --agents state --env cup_push --seeds 0 1 2

With ``--rounds N`` the model trained to the largest budget then runs N rounds of its own
experience (agents/rounds.py, settings from configs/experience/, ``--set experience.x=...``),
and ID success (``--episodes`` per seed of ``--seeds``, the bench's cells) is printed per
round and per env step of own experience, per family and task (``--env`` takes several).

``--set`` overrides the agents' configs (a smaller planner, a larger batch); a model trained
under other ``world_model`` values is not resumed but refused, so give each variant its ``--out``.
Evaluation episodes run to the task's end, so a poorly trained model's episodes (which fail
late) cost the most to evaluate.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from embodied.agents.rounds import RoundSettings, run_rounds
from embodied.agents.training import train_world_model
from embodied.collect import collect
from embodied.evaluate import EvalSettings, run_cell
from embodied.grid import Cell

NOTHING_TO_TRAIN = ("retrieval",)  # families whose "training" indexes the dataset once


def dataset(base: DictConfig, data_dir: Path, size: int, quiet: bool) -> int:
    """The bench's training dataset of ``size`` episodes (collected once); its transitions."""
    env = base.env
    if (data_dir / "manifest.json").is_file():
        manifest = OmegaConf.to_container(OmegaConf.load(data_dir / "manifest.json"))
    else:
        c = base.collect
        manifest = collect(
            env.id,
            data_dir,
            episodes=size,
            seed=c.seed,
            obs_modes=list(c.obs_modes),
            image_size=env.image_size,
            styles=list(c.styles),
            noises=list(c.noises),
            random_fraction=c.random_fraction,
            progress=not quiet,
            env_kwargs=dict(env.kwargs),
        )
    return int(manifest["transitions"])


def id_success(
    name: str, agent: DictConfig, env: DictConfig, checkpoints: Path, args: argparse.Namespace
) -> tuple[int, int]:
    """(successes, episodes) of the model in ``checkpoints/<Task>/<name>`` on the id cells."""
    settings = EvalSettings(
        agents={name: OmegaConf.to_container(agent, resolve=True)},
        run_dir=str(Path(args.out)),
        episodes=args.episodes,
        image_size=int(env.image_size),
        env_kwargs=dict(env.kwargs),
        checkpoints=str(checkpoints),
    )
    lines = [run_cell(Cell(name, env.name, "id", s), settings)["embodied"] for s in args.seeds]
    wins = sum(round(line["success_rate"] * line["episodes"]) for line in lines)
    return int(wins), sum(int(line["episodes"]) for line in lines)


def steps_curve(name: str, agent: DictConfig, base: DictConfig, root: Path, args) -> list[tuple]:
    """ID success after each training budget (each resumes the last)."""
    env, rows, wall = base.env, [], 0.0  # training time so far
    budgets = sorted(set(args.steps))
    plan = budgets[:1] if agent.get("family") in NOTHING_TO_TRAIN else budgets
    for steps in plan:
        trained = train_world_model(
            agent,
            root / "data" / env.name,
            root / "models" / env.name / name,
            steps=steps,
            progress=not args.quiet,
            env_id=env.id,
        )
        wall += trained["wall_s"]
        start = time.perf_counter()
        wins, n = id_success(name, agent, env, root / "models", args)
        rows.append(
            (name, env.name, steps, wall, trained["losses"].get("loss", float("nan")), wins, n)
        )
        print(
            f"{name} {env.name} steps={steps}: success {wins}/{n} "
            f"(trained {wall:.0f} s, eval {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return rows


def rounds_curve(name: str, cfg: DictConfig, root: Path, args) -> list[tuple]:
    """ID success after each round of own experience (round 0: the offline model)."""
    env, agent, rows = cfg.env, cfg.agent, []
    out = root / args.label / env.name / name
    models = root / "models" / env.name / name
    data = root / "data" / env.name
    train_world_model(agent, data, models, max(args.steps), progress=not args.quiet, env_id=env.id)
    for k in range(args.rounds + 1):
        start = time.perf_counter()
        log = run_rounds(
            agent,
            data,
            models,
            out,
            k,
            RoundSettings.of(cfg.experience),
            train_steps=max(args.steps),
            progress=not args.quiet,
            env_kwargs=dict(env.kwargs),
        )
        view = root / f"{args.label}-models" / f"round-{k}" / env.name  # <Task>/<agent>
        view.mkdir(parents=True, exist_ok=True)
        if not (view / name).exists():
            os.symlink((out / "models" / f"round-{k}").resolve(), view / name)
        wins, n = id_success(name, agent, env, view.parent, args)
        r = log[k]
        rows.append((name, env.name, k, r["episodes"], r["own_env_steps"], r["check"], wins, n))
        print(
            f"{name} {env.name} round {k}: id success {wins}/{n}, own env steps "
            f"{r['own_env_steps']} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return rows


def print_steps(rows: list[tuple], episodes: int) -> None:
    print(f"\nid success vs training steps, {episodes} episodes per seed")
    print(f"{'agent':<10} {'task':<14} {'steps':>6} {'train s':>8} {'loss':>9} {'success':>9}")
    for name, task, steps, wall, loss, wins, n in rows:
        print(f"{name:<10} {task:<14} {steps:>6} {wall:>8.0f} {loss:>9.3g} {f'{wins}/{n}':>9}")


def print_rounds(rows: list[tuple]) -> None:
    print("\nid success per round of own experience (check: held-out train-split episodes)")
    print(
        f"{'agent':<10} {'task':<14} {'round':>5} {'episodes':>8} {'own steps':>9} "
        f"{'id success':>10} {'check':>6}  check outcomes"
    )
    for name, task, k, episodes, own, check, wins, n in rows:
        rate = "-" if check["success"] is None else f"{check['success']:.2f}"
        kinds = ", ".join(f"{a} {b}" for a, b in sorted(check["outcomes"].items()))
        print(
            f"{name:<10} {task:<14} {k:>5} {episodes:>8} {own:>9} {f'{wins}/{n}':>10} "
            f"{rate:>6}  {kinds}"
        )


def main() -> None:
    args = parse_args()
    steps_rows: list[tuple] = []
    round_rows: list[tuple] = []
    with initialize_config_module("embodied.configs", version_base=None):
        for size in args.collect:
            root = Path(args.out) / f"episodes-{size}"
            for env_name in args.env:
                # frames only for an agent that sees them (a state-only run skips rendering)
                agents = [compose("train", overrides=[f"agent={a}"]).agent for a in args.agents]
                frames = any(a.obs_mode != "state" for a in agents)
                over = [f"env={env_name}"] + ([] if frames else ["collect.obs_modes=[state]"])
                base = compose("bench", overrides=over)
                transitions = dataset(base, root / "data" / base.env.name, size, args.quiet)
                print(f"{base.env.name}: {size} episodes, {transitions} transitions")
                for name in args.agents:
                    over = [f"agent={name}", f"env={env_name}", *args.set]
                    cfg = compose("train", overrides=over)
                    OmegaConf.set_struct(cfg, False)  # per_task merges keys into the agent
                    if args.rounds:  # round 0 measures the offline model
                        round_rows += rounds_curve(name, cfg, root, args)
                    else:
                        steps_rows += steps_curve(name, cfg.agent, base, root, args)
    if steps_rows:
        print_steps(steps_rows, args.episodes)
    if round_rows:
        print_rounds(round_rows)


def parse_args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="*", default=["state", "pixel", "latent", "retrieval"])
    parser.add_argument("--env", nargs="*", default=["cup_carry"], help="configs/env/ names")
    parser.add_argument("--collect", nargs="*", type=int, default=[150], help="episodes")
    parser.add_argument("--steps", nargs="*", type=int, default=[500, 1000, 2000, 3000])
    parser.add_argument("--episodes", type=int, default=10, help="id episodes per cell")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="eval cell seeds")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of own experience")
    parser.add_argument("--out", default="runs/sample-efficiency", help="data and models")
    parser.add_argument(
        "--label", default="rounds", help="the rounds' folder under --out: one per variant"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--set", nargs="*", default=[], help="Hydra overrides, e.g. agent.x=1 experience.noise=0"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
