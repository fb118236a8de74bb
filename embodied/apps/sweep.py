"""embodied-sweep: does scale close the gap? One bench run per point of the axes' grid.

    embodied-sweep preset=sweep-smoke
    embodied-sweep preset=sweep-small                 # CupCarry, hours on 2 cores
    embodied-sweep preset=sweep-small executor=ray executor.address=auto

Axes (``axes`` of the preset, each a list): ``data`` (episodes collected), ``size`` (the
``size`` of every agent whose world model has one), ``train_physics`` (id, wide-k,
interp-<shift>), ``history`` (``context_steps`` of every world model that reads one) and
``seed`` (the training seed). Each point is ``embodied-bench`` in <run_dir>/points/<point>,
with its data shared by the points that collect alike (<run_dir>/data/<data point>), so it
resumes as bench does; a finished point is a line per agent in <run_dir>/sweep.jsonl, and
<run_dir>/sweep.md / sweep.html plot ID success, OOD success and the OOD gap against each axis
and end with the verdict.
"""

from __future__ import annotations

import copy
import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.apps import cli
from embodied.apps.bench import bench
from embodied.apps.eval import load_agents
from embodied.report import sweep as analysis

AXES = ("data", "size", "train_physics", "history", "seed")
DATA_AXES = ("data", "train_physics")  # what the collected dataset depends on
MODEL_KEYS = {"size": "size", "history": "context_steps"}  # axis -> world_model key


def check_axes(axes: dict[str, list[Any]]) -> None:
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ValueError(f"unknown sweep axes {unknown}; valid axes: {list(AXES)}")
    empty = [a for a, v in axes.items() if not v]
    if empty:
        raise ValueError(f"sweep axes {empty} have no values; give each a list")


def label(point: dict[str, Any], keys: tuple[str, ...] = AXES) -> str:
    return ",".join(f"{k}={point[k]}" for k in keys if k in point) or "default"


def point_overrides(point: dict[str, Any], agents: dict[str, dict]) -> dict[str, Any]:
    """Dotted config keys -> values that put a bench run at ``point``."""
    out: dict[str, Any] = {}
    for axis, value in point.items():
        if axis == "data":
            out["collect.episodes"] = value
        elif axis == "train_physics":
            out["collect.train_physics"] = value
        elif axis == "seed":
            out["train.seed"] = value
        else:
            key = MODEL_KEYS[axis]
            for name, agent in agents.items():
                if key in (agent.get("world_model") or {}):
                    out[f"agent_overrides.{name}.world_model.{key}"] = value
    return out


def run_point(cfg: DictConfig, point: dict[str, Any], agents: dict[str, dict]) -> list[dict]:
    """One bench run at ``point``; its headline as sweep lines (one per agent)."""
    out = Path(cfg.run_dir)
    pcfg = copy.deepcopy(cfg)
    OmegaConf.update(pcfg, "run_dir", str(out / "points" / label(point)), merge=False)
    OmegaConf.update(pcfg, "data_dir", str(out / "data" / label(point, DATA_AXES)), merge=False)
    for key, value in point_overrides(point, agents).items():
        OmegaConf.update(pcfg, key, value, merge=False, force_add=True)
    bench(pcfg)
    summary = json.loads((Path(pcfg.run_dir) / "summary.json").read_text())
    return [
        {
            "point": point,
            "agent": r["agent"],
            "family": r["family"],
            "id": {k: r["id"]["success"][k] for k in ("k", "n")},
            "ood": {k: r["ood"]["success"][k] for k in ("k", "n")},
            "gap_closed": r.get("gap_closed"),
        }
        for r in summary["headline"]
    ]


def sweep(cfg: DictConfig) -> Path:
    """Every point not yet in sweep.jsonl, then the analysis; returns sweep.md."""
    axes = OmegaConf.to_container(cfg.axes, resolve=True)
    check_axes(axes)
    agents = load_agents(list(cfg.agents), cfg)
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    out = Path(cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "sweep.jsonl"
    done = {label(ln["point"]) for ln in analysis.read_lines(store)} if store.exists() else set()
    todo = [p for p in points if label(p) not in done]
    print(f"embodied-sweep: {len(points)} points ({len(todo)} to run) over {axes} -> {out}")
    with tqdm(
        total=len(points), initial=len(points) - len(todo), desc="sweep", disable=not cfg.progress
    ) as bar:
        for point in todo:
            bar.set_postfix_str(label(point), refresh=True)
            lines = run_point(cfg, point, agents)
            with store.open("a") as f:  # a point is done once all its lines are in
                f.write("".join(json.dumps(ln) + "\n" for ln in lines))
            bar.update()
    command = "embodied-sweep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md, page = analysis.write(out, axes, command)
    print("\n".join(md.read_text().split("## Verdict")[1].strip().splitlines()))
    print(f"sweep: {page.resolve()}\n       {md.resolve()}")
    return md


main = cli.app("embodied-sweep", "sweep", sweep)


if __name__ == "__main__":
    main()
