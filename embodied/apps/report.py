"""embodied-report: turn a run directory's results into report.md/.html and summary.csv/.json."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from embodied.apps import cli
from embodied.report import ReportError, build_report


@hydra.main(version_base="1.3", config_path="pkg://embodied.configs", config_name="report")
def hydra_main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run_dir"):
        cli.fail("embodied-report", "run_dir is required: embodied-report run_dir=<run dir>")
    with cli.user_errors("embodied-report"):
        try:
            paths = build_report(
                cfg.run_dir,
                min_episodes=int(cfg.min_episodes),
                n_boot=int(cfg.n_boot),
                seed=int(cfg.seed),
            )
            if cfg.leaderboard:
                from embodied.report.leaderboard import write_leaderboard

                board = write_leaderboard(cfg.run_dir, int(cfg.min_episodes), int(cfg.n_boot))
        except ReportError as err:
            cli.fail("embodied-report", str(err))
    print(f"embodied-report: wrote the report of {paths.markdown.parent}:")
    for path in [*paths.all(), *(board if cfg.leaderboard else ())]:
        print(f"  {path}")


def main() -> None:
    if "--leaderboard" in sys.argv:  # the flag spelling of leaderboard=true
        sys.argv = [a for a in sys.argv if a != "--leaderboard"] + ["leaderboard=true"]
    cli.run("embodied-report", "report", hydra_main)


if __name__ == "__main__":
    main()
