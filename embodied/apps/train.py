"""``embodied-train``: train an agent's model on a dataset via the agent's own ``trainer``."""

from __future__ import annotations

import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(config_path="pkg://embodied.configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    agent = cfg.agent
    if agent.get("trainer") is None:
        print(f"agent {agent.name!r} (kind {agent.get('kind')!r}) has nothing to train")
        return
    summary = instantiate(agent.trainer)(
        agent_cfg=agent,
        dataset_dir=cfg.data_dir,
        out_dir=cfg.out_dir,
        steps=int(cfg.steps),
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
    )
    state = "interrupted at" if summary.get("interrupted") else "trained to"
    print(f"{agent.name}: {state} step {summary['step']}/{cfg.steps}; wrote {cfg.out_dir}")
    if summary.get("interrupted"):
        sys.exit(130)


if __name__ == "__main__":
    main()
