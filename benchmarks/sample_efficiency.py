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

``--set`` overrides the agents' configs (a smaller planner, a larger batch); a model trained
under other ``world_model`` values is not resumed but refused, so give each variant its ``--out``.
Evaluation episodes run to the task's end, so a poorly trained model's episodes (which fail
late) cost the most to evaluate.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from embodied.agents.training import train_world_model
from embodied.collect import collect
from embodied.evaluate import EvalSettings, run_cell
from embodied.grid import Cell

NOTHING_TO_TRAIN = ("retrieval",)  # families whose "training" indexes the dataset once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="*", default=["state", "pixel", "latent", "retrieval"])
    parser.add_argument("--env", default="cup_carry", help="env config name (configs/env/)")
    parser.add_argument("--collect", nargs="*", type=int, default=[150], help="episodes")
    parser.add_argument("--steps", nargs="*", type=int, default=[500, 1000, 2000, 3000])
    parser.add_argument("--episodes", type=int, default=10, help="id episodes per evaluation")
    parser.add_argument("--seed", type=int, default=0, help="eval cell seed")
    parser.add_argument("--out", default="runs/sample-efficiency", help="data and models")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--set", nargs="*", default=[], help="Hydra overrides of the agents, e.g. agent.x=1"
    )
    args = parser.parse_args()
    budgets = sorted(set(args.steps))
    rows = []
    with initialize_config_module("embodied.configs", version_base=None):
        for size in args.collect:
            root = Path(args.out) / f"episodes-{size}"
            base = compose("bench", overrides=[f"env={args.env}"])
            env = base.env
            data_dir = root / "data" / env.name
            if not (data_dir / "manifest.json").is_file():
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
                    progress=not args.quiet,
                    env_kwargs=dict(env.kwargs),
                )
            else:
                manifest = OmegaConf.to_container(OmegaConf.load(data_dir / "manifest.json"))
            transitions = int(manifest["transitions"])
            for name in args.agents:
                agent = compose("train", overrides=[f"agent={name}", f"env={args.env}", *args.set])
                agent = agent.agent
                settings = EvalSettings(
                    agents={name: OmegaConf.to_container(agent, resolve=True)},
                    run_dir=str(root),
                    episodes=args.episodes,
                    image_size=int(env.image_size),
                    env_kwargs=dict(env.kwargs),
                    checkpoints=str(root / "models"),
                )
                plan = budgets[:1] if agent.get("family") in NOTHING_TO_TRAIN else budgets
                wall = 0.0  # training time so far (each budget resumes the last)
                for steps in plan:
                    trained = train_world_model(
                        agent,
                        data_dir,
                        root / "models" / env.name / name,
                        steps=steps,
                        progress=not args.quiet,
                        env_id=env.id,
                    )
                    wall += trained["wall_s"]
                    start = time.perf_counter()
                    line = run_cell(Cell(name, env.name, "id", args.seed), settings)["embodied"]
                    loss = trained["losses"].get("loss", float("nan"))
                    row = (name, size, transitions, steps, wall, loss, line)
                    rows.append(row)
                    print(
                        f"{name} episodes={size} steps={steps}: success "
                        f"{line['success_rate']:.2f} drops {line['drop_rate']:.2f} "
                        f"(trained {wall:.0f} s, eval {time.perf_counter() - start:.0f} s)",
                        flush=True,
                    )
    print(f"\nid success vs training, {args.env}, {args.episodes} episodes per row")
    print(
        f"{'agent':<10} {'episodes':>8} {'transitions':>11} {'steps':>6} {'train s':>8} "
        f"{'loss':>9} {'success':>8} {'95% CI':>13} {'drops':>6}"
    )
    for name, size, transitions, steps, wall, loss, line in rows:
        lo, hi = line["success_ci"]
        print(
            f"{name:<10} {size:>8} {transitions:>11} {steps:>6} {wall:>8.0f} {loss:>9.3g} "
            f"{line['success_rate']:>8.2f} {f'[{lo:.2f}, {hi:.2f}]':>13} {line['drop_rate']:>6.2f}"
        )


if __name__ == "__main__":
    main()
