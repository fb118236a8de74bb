"""``embodied-export``: one of our datasets -> a LeRobot dataset (format v3.0) for other code.

A separate app, not a ``format=`` of ``embodied-collect``: it converts any dataset already on
disk (a bench run's, one collected long ago) without collecting anew, and collection keeps a
single output format that every trainer reads. ``embodied-train data_dir=<out>`` reads the
export back (embodied/lerobot.py).
"""

from __future__ import annotations

from omegaconf import DictConfig

from embodied.apps import cli


def write(cfg: DictConfig) -> None:
    from embodied.lerobot import export

    crf = None if cfg.crf is None else int(cfg.crf)
    info = export(cfg.src, cfg.out, repo_id=str(cfg.repo_id), crf=crf)
    frames = "lossless" if crf is None else f"crf {crf}"
    print(
        f"wrote LeRobot {info['codebase_version']} dataset {info['repo_id']}: "
        f"{info['total_episodes']} episodes, {info['total_frames']} frames ({frames}) to {cfg.out}"
    )


main = cli.app("embodied-export", "export", write)


if __name__ == "__main__":
    main()
