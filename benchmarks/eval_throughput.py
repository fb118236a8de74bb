"""Episodes per minute of the evaluation grid with 1 and 2 local workers, and the speed-up.

    .venv/bin/python benchmarks/eval_throughput.py                      # oracle agent, CupCarry
    .venv/bin/python benchmarks/eval_throughput.py --agent scripted --episodes 20
    .venv/bin/python benchmarks/eval_throughput.py +agent_overrides.oracle.world_model.threads=2

The grid is the standard shift suite for one agent, run through the executor exactly as
embodied-eval runs it. The rate counts everything from the first call (process start-up and
imports included): what a user waits for. ``workers=1`` runs in this process; ``workers=2``
spawns a pool. Trailing arguments are embodied-eval overrides; without any, a simulator agent
(oracle, nominal) gets one rollout thread, so that a worker is one core. Target: >= 1.7x on 2
free cores. Other jobs on the cores lower the ratio, so the load average is printed, and so is
the speed-up of a pure-Python busy loop on 2 processes: the most any executor could get on this
machine at this moment."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time

from hydra import compose, initialize_config_module

from embodied.apps.eval import load_agents, settings_from
from embodied.evaluate import EvalSettings, run_cell
from embodied.executors import LocalExecutor
from embodied.grid import Cell, expand

SIMULATORS = (
    "oracle",
    "nominal",
    "sysid",
)  # agents whose mujoco.rollout uses every core by default


def grid(args: argparse.Namespace, run_dir: str) -> tuple[list[Cell], EvalSettings]:
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"agents=[{args.agent}]",
                f"env={args.env}",
                "shift=standard",  # the preset's own splits otherwise
                f"episodes={args.episodes}",
                f"run_dir={run_dir}",
                "video.clips=0",
                "videos.cells=[]",
                *args.overrides,
            ],
        )
        settings = settings_from(cfg, load_agents([args.agent], cfg))
    cells = expand([args.agent], list(cfg.tasks), list(cfg.splits), range(args.seeds))
    return cells, settings


def measure(workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(episodes per minute, wall seconds) with ``workers`` workers."""
    with tempfile.TemporaryDirectory() as run_dir:
        cells, settings = grid(args, run_dir)
        start = time.perf_counter()
        episodes = sum(
            line["embodied"]["episodes"]
            for _, line in LocalExecutor(workers).map(run_cell, cells, settings)
        )
        wall = time.perf_counter() - start
    return 60.0 * episodes / wall, wall


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def cpu_ceiling(n: int = 10_000_000) -> float:
    """Speed-up of two busy loops on two spawned processes over both in this one."""
    start = time.perf_counter()
    for _ in range(2):
        spin(n)
    serial = time.perf_counter() - start
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(spin, [1])  # start-up excluded
        start = time.perf_counter()
        pool.map(spin, [n, n], chunksize=1)
        parallel = time.perf_counter() - start
    return serial / parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="oracle", help="a configs/agent name")
    parser.add_argument("--env", default="cup_carry", help="a configs/env name")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per split (standard suite)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per cell")
    parser.add_argument("overrides", nargs="*", help="embodied-eval overrides")
    args = parser.parse_args()
    if not args.overrides and args.agent in SIMULATORS:
        args.overrides = [f"+agent_overrides.{args.agent}.world_model.threads=1"]
    print(
        f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, "
        f"busy-loop ceiling on 2 processes: {cpu_ceiling():.2f}x"
    )
    rates = {}
    for workers in (1, 2):
        rates[workers], wall = measure(workers, args)
        print(f"workers={workers}: {rates[workers]:7.1f} episodes/min ({wall:.1f} s)", flush=True)
    print(
        f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x (target >= 1.7x); "
        f"load average after: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
