"""``embodied-train``: train an agent's model on a dataset via the agent's own ``trainer``."""

from __future__ import annotations

import sys

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.apps import cli


def train(cfg: DictConfig) -> None:
    # a plain copy: Hydra's config is struct, and a task's per_task settings add keys
    agent = OmegaConf.create(OmegaConf.to_container(cfg.agent, resolve=True))
    if agent.get("trainer") is None:
        print(f"agent {agent.name!r} has nothing to train (its trainer is null)")
        return
    summary = instantiate(agent.trainer)(
        agent_cfg=agent,
        dataset_dir=cfg.data_dir,
        env_id=cfg.env.id,  # a dataset of another task is refused
        out_dir=cfg.out_dir,
        steps=int(cfg.steps),
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
    )
    state = "interrupted at" if summary.get("interrupted") else "trained to"
    print(f"{agent.name}: {state} step {summary['step']}/{cfg.steps}; wrote {cfg.out_dir}")
    if summary.get("interrupted"):
        sys.exit(130)
    if int(cfg.rounds) > 0:
        from embodied.agents.rounds import RoundSettings, print_rounds, run_rounds

        log = run_rounds(
            agent,
            cfg.data_dir,
            cfg.out_dir,
            cfg.rounds_dir,
            int(cfg.rounds),
            RoundSettings.of(cfg.experience),
            train_steps=int(cfg.steps),
            seed=int(cfg.seed),
            progress=bool(cfg.progress),
            env_kwargs=dict(cfg.env.get("kwargs") or {}),
        )
        print_rounds(log, f"{agent.name} on {cfg.env.name}")


main = cli.app("embodied-train", "train", train)


if __name__ == "__main__":
    main()
