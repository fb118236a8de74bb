"""``embodied-bench``: the main job, collect -> train -> evaluate -> report in one run directory.

Each stage reuses what a previous run left: a dataset whose manifest is complete, a model whose
training reached its step budget, cells already in the results file. Ctrl-C stops with every
finished piece kept; rerunning the same command carries on.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.apps.eval import evaluate, load_agents
from embodied.collect import collect
from embodied.dataset import Dataset
from embodied.registration import env_id
from embodied.report import build_report


def stage(name: str, started: float) -> None:
    print(f"\n== {name}  (elapsed {time.perf_counter() - started:.0f} s)", flush=True)


def collect_stage(cfg: DictConfig, task: str, obs_mode_needed: bool) -> Path:
    out = Path(cfg.run_dir) / "data" / task / "train"
    c = cfg.collect
    if (out / "manifest.json").is_file():
        try:
            if len(Dataset.load(out).episodes) == int(c.episodes):
                print(f"{task}: reusing the dataset in {out}")
                return out
        except (OSError, ValueError) as err:
            print(f"{task}: recollecting ({err})")
    collect(
        env_id=env_id(task),
        out_dir=out,
        episodes=int(c.episodes),
        split="train",
        seed=int(c.seed),
        obs_modes=list(c.obs_modes) if obs_mode_needed else ["state"],
        image_size=int(cfg.env.image_size),
        styles=list(c.styles),
        noises=[float(n) for n in c.noises],
        random_fraction=float(c.random_fraction),
        progress=bool(cfg.progress),
    )
    return out


@hydra.main(version_base="1.3", config_path="pkg://embodied.configs", config_name="bench")
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    agents = load_agents(list(cfg.agents), cfg)  # unknown names fail before any work
    trained = {name: a for name, a in agents.items() if a.get("trainer") is not None}
    needs_pixels = any(a.get("obs_mode", "state") != "state" for a in trained.values())
    print(
        f"embodied-bench: preset {cfg.preset.name}, tasks {list(cfg.tasks)}, "
        f"agents {list(cfg.agents)}, {len(cfg.splits)} splits x {len(cfg.seeds)} seeds x "
        f"{cfg.episodes} episodes -> {Path(cfg.run_dir).resolve()}"
    )
    for task in cfg.tasks:
        stage(f"collect {task}", started)
        data_dir = collect_stage(cfg, task, needs_pixels)
        for name, agent in trained.items():
            stage(f"train {name} on {task}", started)
            summary = instantiate(agent["trainer"])(
                agent_cfg=OmegaConf.create(agent),
                dataset_dir=str(data_dir),
                out_dir=str(Path(cfg.checkpoints) / task / agent["name"]),
                steps=int(cfg.train.steps),
                seed=int(cfg.train.seed),
                progress=bool(cfg.progress),
            )
            if summary.get("interrupted"):
                raise SystemExit(130)
    stage("evaluate", started)
    evaluate(cfg)
    stage("report", started)
    paths = build_report(cfg.run_dir, min_episodes=int(cfg.report.min_episodes))
    headline = paths.markdown.read_text().split("\n## ")[1] if paths.markdown else ""
    print("\n## " + headline.strip())
    print(f"\nembodied-bench: done in {time.perf_counter() - started:.0f} s")
    print(f"report: {Path(paths.html).resolve()}\n        {Path(paths.markdown).resolve()}")


if __name__ == "__main__":
    main()
