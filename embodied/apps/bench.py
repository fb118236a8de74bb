"""``embodied-bench``: the main job, collect -> train -> clips -> evaluate -> report in one run
directory.

Each stage reuses what a previous run left: a dataset whose manifest is complete, a model whose
training reached its step budget, clip files already written, cells already in the results
file. Ctrl-C stops with every finished piece kept; rerunning the same command carries on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.apps import cli
from embodied.apps.eval import check_grid, collect_clips, evaluate
from embodied.atomic import write_atomic
from embodied.collect import collect
from embodied.dataset import Dataset
from embodied.executors import LocalExecutor
from embodied.registration import env_id
from embodied.report import browser, build_report
from embodied.shifts.splits import train_split


def stage(name: str, started: float) -> None:
    print(f"\n== {name}  (elapsed {time.perf_counter() - started:.0f} s)", flush=True)


def collect_stage(cfg: DictConfig, task: str, obs_mode_needed: bool) -> Path:
    """The task's training dataset: reused when collected with these settings (a dataset with
    frames serves a run that needs only states: a bench of state agents in a run dir keeps the
    frame models trained there).

    A fresh dataset invalidates the task's trained models, which are removed with it.
    """
    out = Path(cfg.data_dir) / task / "train"
    c = cfg.collect
    obs_modes = list(c.obs_modes) if obs_mode_needed else ["state"]
    wanted = {
        **OmegaConf.to_container(c, resolve=True),
        "obs_modes": obs_modes,
        "image_size": int(cfg.env.image_size),
    }
    settings = json.dumps(wanted, sort_keys=True)
    stamp = out / "bench-collect.json"
    if stamp.is_file() and _serves(stamp.read_text(), wanted):
        try:
            Dataset.load(out, env_id=env_id(task))  # a task's new version collects anew
            print(f"{task}: reusing the dataset in {out}")
            return out
        except (OSError, ValueError) as err:
            print(f"{task}: recollecting ({err})")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(Path(cfg.checkpoints) / task, ignore_errors=True)
    shutil.rmtree(Path(cfg.run_dir) / "rounds" / task, ignore_errors=True)  # grown from them
    collect(
        env_id=env_id(task),
        out_dir=out,
        episodes=int(c.episodes),
        split=train_split(c.train_physics),
        seed=int(c.seed),
        obs_modes=obs_modes,
        image_size=int(cfg.env.image_size),
        styles=list(c.styles),
        noises=[float(n) for n in c.noises],
        random_fraction=float(c.random_fraction),
        progress=bool(cfg.progress),
    )
    write_atomic(stamp, settings.encode())
    return out


def _serves(stamp: str, wanted: dict) -> bool:
    """Whether a dataset stamped ``stamp`` was collected as ``wanted`` asks, with at least the
    observation modes it asks for."""
    try:
        have = json.loads(stamp)
    except json.JSONDecodeError:
        return False
    if not isinstance(have, dict) or not set(wanted["obs_modes"]) <= set(have.get("obs_modes", [])):
        return False
    have.setdefault("train_physics", "id")  # stamped before the option: collected under id
    return {**have, "obs_modes": None} == {**wanted, "obs_modes": None}


@dataclass(frozen=True)
class TrainJob:
    """One model to train: plain data, so it pickles to a worker process."""

    task: str
    agent: dict[str, Any]
    data_dir: str
    out_dir: str
    steps: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.agent['name']} on {self.task}"


def train_one(job: TrainJob, _: Any = None) -> dict:
    """One agent's training on one task, in a worker process (its own progress bar off)."""
    started = time.perf_counter()
    summary = instantiate(job.agent["trainer"])(
        agent_cfg=OmegaConf.create(job.agent),
        dataset_dir=job.data_dir,
        out_dir=job.out_dir,
        steps=job.steps,
        seed=job.seed,
        progress=False,
        env_id=env_id(job.task),
    )
    return {**summary, "seconds": time.perf_counter() - started}


def train_stage(cfg: DictConfig, jobs: list[TrainJob]) -> None:
    """Train every (task, agent) at once on the eval executor's local pool, one model per
    process: workers die with the bench, and Ctrl-C makes each trainer checkpoint and stop."""
    # the slowest models first, so the pool ends together (pixel nets cost the most per step)
    order = {"pixel": 0, "latent": 1, "state": 2}
    jobs = sorted(jobs, key=lambda job: order.get(job.agent.get("family", ""), 3))
    executor = LocalExecutor(cfg.executor.get("workers"))
    with tqdm(total=len(jobs), desc="train", disable=not cfg.progress) as bar:
        for job, summary in executor.map(train_one, jobs, None):
            if summary.get("interrupted"):
                raise SystemExit(130)
            bar.update()
            tqdm.write(f"trained {job.name}: step {summary['step']} in {summary['seconds']:.0f} s")


def browser_check(html_path: Path) -> None:
    """The report measured in headless Chromium, its screenshot kept beside it, where Chromium
    is installed; what it finds (or a failure to run) is printed, never fatal: the report is
    written already."""
    if browser.find_chromium() is None:
        print("browser check: skipped, no Chromium on PATH")
        return
    try:
        g = browser.check(html_path)
    except (browser.BrowserError, OSError, subprocess.SubprocessError) as err:
        print(f"browser check: failed to run: {err}")
        return
    found = "; ".join(g.problems) or "no overlaps, no wrapped headline cells"
    print(f"browser check at {g.width} px: {found}; screenshot {g.screenshot}")


def bench(cfg: DictConfig) -> None:
    started = time.perf_counter()
    agents = check_grid(cfg).agents  # unknown agents, tasks, splits fail before any work
    trained = {name: a for name, a in agents.items() if a.get("trainer") is not None}
    needs_pixels = any(a.get("obs_mode", "state") != "state" for a in trained.values())
    print(
        f"embodied-bench: preset {cfg.preset.name}, tasks {list(cfg.tasks)}, "
        f"agents {list(cfg.agents)}, {len(cfg.splits)} splits x {len(cfg.seeds)} seeds x "
        f"{cfg.episodes} episodes -> {Path(cfg.run_dir).resolve()}"
    )
    jobs = []
    for task in cfg.tasks:
        stage(f"collect {task}", started)
        data_dir = collect_stage(cfg, task, needs_pixels)
        jobs += [
            TrainJob(
                task=task,
                agent=agent,
                data_dir=str(data_dir),
                out_dir=str(Path(cfg.checkpoints) / task / agent["name"]),
                steps=int(agent.get("steps") or cfg.train.steps),
                seed=int(agent.get("train_seed", cfg.train.seed)),
            )
            for agent in trained.values()
        ]
    if jobs:
        stage(f"train {len(jobs)} models", started)
        train_stage(cfg, jobs)
    if int(cfg.rounds) > 0 or cfg.experience.per_task:
        from embodied.agents.rounds import bench_stage  # the agents' package: on demand

        stage("rounds of own experience", started)
        bench_stage(cfg, jobs)
    stage("clips", started)
    collect_clips(cfg)
    stage("evaluate", started)
    evaluate(cfg, clips=False)
    stage("report", started)
    paths = build_report(cfg.run_dir, min_episodes=int(cfg.report.min_episodes))
    headline = paths.markdown.read_text().split("\n## ")[1] if paths.markdown else ""
    print("\n## " + headline.strip())
    if cfg.report.browser:
        browser_check(Path(paths.html))
    print(f"\nembodied-bench: done in {time.perf_counter() - started:.0f} s")
    print(f"report: {Path(paths.html).resolve()}\n        {Path(paths.markdown).resolve()}")


main = cli.app("embodied-bench", "bench", bench)


if __name__ == "__main__":
    main()
