"""``embodied-collect``: write a dataset of scripted and random episodes for one task and split."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from embodied.apps import cli
from embodied.collect import collect


def write(cfg: DictConfig) -> None:
    manifest = collect(
        env_id=cfg.env.id,
        out_dir=cfg.out_dir,
        episodes=int(cfg.episodes),
        split=cfg.split,
        seed=int(cfg.seed),
        obs_modes=list(cfg.obs_modes),
        image_size=int(cfg.image_size),
        styles=list(cfg.styles),
        noises=[float(n) for n in cfg.noises],
        random_fraction=float(cfg.random_fraction),
        grip_fraction=float(cfg.grip_fraction),
        progress=bool(cfg.progress),
        env_kwargs=OmegaConf.to_container(cfg.env.kwargs, resolve=True),
    )
    outcomes = manifest["episode_info"]
    success = sum(e["success"] for e in outcomes) / len(outcomes)
    dropped = sum(e["dropped"] for e in outcomes) / len(outcomes)
    print(
        f"wrote {manifest['episodes']} episodes ({manifest['transitions']} transitions, "
        f"success {success:.2f}, dropped {dropped:.2f}) to {cfg.out_dir}"
    )


main = cli.app("embodied-collect", "collect", write)


if __name__ == "__main__":
    main()
