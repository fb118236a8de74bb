"""embodied-report: turn a run directory's results into report.md/.html and summary.csv/.json."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from embodied.report import ReportError, build_report


@hydra.main(version_base="1.3", config_path="pkg://embodied.configs", config_name="report")
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run_dir"):
        print(
            "embodied-report: error: run_dir is required: embodied-report run_dir=<run dir>",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        paths = build_report(
            cfg.run_dir,
            min_episodes=int(cfg.min_episodes),
            n_boot=int(cfg.n_boot),
            seed=int(cfg.seed),
        )
    except ReportError as err:
        print(f"embodied-report: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"embodied-report: wrote the report of {paths.markdown.parent}:")
    for path in paths.all():
        print(f"  {path}")


if __name__ == "__main__":
    main()
