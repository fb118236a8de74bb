"""embodied-eval: every cell (agent x task x split x seed) -> <run_dir>/results.jsonl.

    embodied-eval agents=[scripted,state] env=cup_carry shift=standard preset=quick
    embodied-eval executor=ray executor.address=auto        # the same cells on a Ray cluster
    embodied-eval agents=[oracle] +agent_overrides.oracle.planner.horizon=12

Names are checked before any work starts. The clips stage then collects the clips the cells'
world models are scored on (embodied.clips), and the cells run. Finished cells are appended one
line at a time by this process only, so Ctrl-C or a crash loses only the cells still running,
and rerunning the same command skips the cells already in the file and reuses the clips.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.apps import cli
from embodied.atomic import remove_temps
from embodied.checkpoints import check_trained_on
from embodied.clips import clip_sets, collect_stage
from embodied.evaluate import EvalSettings, run_cell
from embodied.grid import Cell, check_names, expand, split_seed
from embodied.registration import TASKS
from embodied.results import CONFIG_FILE, ResultsStore
from embodied.shifts.splits import check_seed, parse_split

# what a cell's numbers depend on besides its name (agent configs are read afresh each run)
RESULT_KEYS = ("env", "episodes", "video", "agent_overrides", "checkpoints")


@contextmanager
def _hydra() -> Iterator[None]:
    """Hydra's config repository: the app's own when running under it, else a fresh one."""
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_module("embodied.configs", version_base="1.3"):
            yield


def load_agents(names: Sequence[str], root: DictConfig) -> dict[str, dict[str, Any]]:
    """configs/agent/<name>.yaml for each name, with ``agent_overrides.<name>`` merged in.

    ``<agent>@<seed>`` is that agent trained with training seed <seed> (its config named so,
    with ``train_seed``); ``agent_overrides.<agent>`` reaches every seed of it and
    ``agent_overrides.<agent>@<seed>`` that one. Resolving against ``root`` lets an agent config
    use ``${preset.*}`` like the apps do.
    """
    overrides = root.get("agent_overrides") or {}
    bases = {name: split_seed(name) for name in names}
    check_names(
        "agent_overrides (agents of this run)",
        list(overrides),
        set(names) | {b for b, _ in bases.values()},
    )
    with _hydra():
        valid = GlobalHydra.instance().config_loader().get_group_options("agent")
        check_names("agents", sorted({b for b, _ in bases.values()}), valid)
        composed = {b: compose(overrides=[f"+agent={b}"]).agent for b, _ in bases.values()}
    base_tree = OmegaConf.to_container(root, resolve=False)
    out = {}
    for name, (base, seed) in bases.items():
        mine = [overrides.get(base) or {}] + (
            [overrides.get(name) or {}] if seed is not None else []
        )
        merged = OmegaConf.merge(  # unstructured: an override may add a constructor argument
            OmegaConf.to_container(composed[base], resolve=False), *mine
        )
        if seed is not None:
            merged = OmegaConf.merge(merged, {"name": name, "train_seed": seed})
        tree = OmegaConf.create(
            {**base_tree, "agent": OmegaConf.to_container(merged, resolve=False)}
        )
        out[name] = OmegaConf.to_container(tree.agent, resolve=True)
    return out


def settings_from(cfg: DictConfig, agents: dict[str, dict[str, Any]]) -> EvalSettings:
    run_dir = Path(cfg.run_dir).resolve()  # absolute: workers may start elsewhere
    return EvalSettings(
        agents=agents,
        run_dir=str(run_dir),
        episodes=int(cfg.episodes),
        video_clips=int(cfg.video.clips),
        video_horizon=int(cfg.video.horizon),
        probe_clips=int(cfg.video.probe_clips),
        image_size=int(cfg.env.image_size),
        env_kwargs=OmegaConf.to_container(cfg.env.kwargs, resolve=True),
        checkpoints=str(Path(cfg.checkpoints).resolve()) if cfg.checkpoints else None,
        video_cells=tuple(cfg.videos.cells or ()),
        videos_dir=str(Path(cfg.videos.dir).resolve()) if cfg.videos.dir else None,
        video_scale=int(cfg.videos.scale),
        video_fps=int(cfg.videos.fps),
        threads=int(cfg.threads),
    )


def check_checkpoints(settings: EvalSettings, tasks: Sequence[str]) -> None:
    """A trained agent without its checkpoint, or with one trained on another task or of
    another family, fails now, not hours into the grid."""
    root = Path(settings.checkpoints or "")
    dirs = {
        (task, name): root / task / agent.get("name", name)
        for name, agent in settings.agents.items()
        if agent.get("trainer") is not None
        for task in tasks
    }
    missing = [str(path) for path in dirs.values() if not path.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no checkpoint for trained agents at {missing}; train them first (embodied-train) "
            "or point checkpoints= at the models folder"
        )
    for (task, name), path in dirs.items():
        check_trained_on(path, task, settings.agents[name])


def warn_if_changed(store: ResultsStore, cfg: DictConfig) -> None:
    """Finished cells are kept on a rerun: say so when their numbers came from other settings."""
    path = store.run_dir / CONFIG_FILE
    if not (path.exists() and store.done_ids()):
        return
    before = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = [key for key in RESULT_KEYS if before.get(key) != now.get(key)]
    if changed:
        warnings.warn(
            f"{changed} differ from {path}; the {len(store.done_ids())} finished cells in "
            f"{store.path.name} are kept as they are (use a new run_dir to redo them)",
            stacklevel=2,
        )


def check_grid(cfg: DictConfig) -> EvalSettings:
    """Every name and count of the grid checked before any work: the settings of its cells."""
    names, tasks, splits = list(cfg.agents), list(cfg.tasks), list(cfg.splits)
    if not (names and tasks and splits and list(cfg.seeds)):
        raise ValueError("the grid is empty: agents, tasks, splits and seeds each need an entry")
    check_names("tasks", tasks, TASKS)
    for split in splits:
        parse_split(split)
    for seed in cfg.seeds:
        check_seed(seed)
    return settings_from(cfg, load_agents(names, cfg))


def plan(cfg: DictConfig) -> tuple[EvalSettings, list[Cell]]:
    """The grid checked before any work (names, counts, checkpoints): its cells' settings and
    its cells."""
    settings = check_grid(cfg)
    check_checkpoints(settings, list(cfg.tasks))
    seeds = [int(s) for s in cfg.seeds]
    cells = expand(list(cfg.agents), list(cfg.tasks), list(cfg.splits), seeds)
    return settings, cells


def unfinished(cells: list[Cell], store: ResultsStore) -> list[Cell]:
    done = store.done_ids()
    return [cell for cell in cells if cell.cell_id not in done]


def collect_clips(cfg: DictConfig) -> None:
    """The clips stage alone: every clip file the grid's unfinished cells read, collected on the
    grid's executor (embodied.clips)."""
    settings, cells = plan(cfg)
    clips_stage(cfg, settings, unfinished(cells, ResultsStore(settings.run_dir)))


def clips_stage(cfg: DictConfig, settings: EvalSettings, todo: list[Cell]) -> None:
    """The clip files ``todo`` read, collected where missing, with a line saying what was."""
    needed = clip_sets(todo, settings)
    collected = collect_stage(todo, settings, instantiate(cfg.executor), bool(cfg.progress))
    print(
        f"clips: {len(collected)} files collected, {len(needed) - len(collected)} reused "
        f"in {Path(settings.run_dir) / 'heldout'}"
    )


def evaluate(cfg: DictConfig, clips: bool = True) -> list[dict[str, Any]]:
    """Run every cell of the grid not yet in the results file; returns all lines, grid order.

    The clips stage runs first; ``clips=False`` skips it, for a caller that ran
    ``collect_clips`` as a stage of its own (a cell whose clips are missing fails, naming it).
    """
    settings, cells = plan(cfg)
    executor = instantiate(cfg.executor)
    store = ResultsStore(settings.run_dir)
    warn_if_changed(store, cfg)
    store.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    store.write_version()
    remove_temps(settings.run_dir, recursive=True)  # a killed run's half-written files
    todo = unfinished(cells, store)
    if clips:
        clips_stage(cfg, settings, todo)
    with tqdm(
        total=len(cells), initial=len(cells) - len(todo), desc="eval", disable=not cfg.progress
    ) as bar:
        for cell, line in executor.map(run_cell, todo, settings):
            store.append(line)
            bar.set_postfix_str(cell.cell_id, refresh=False)
            bar.update()
    print(f"embodied-eval: {len(cells)} cells ({len(todo)} run now) in {store.path}")
    by_id = {line["cell_id"]: line for line in store.lines()}
    return [by_id[cell.cell_id] for cell in cells]


main = cli.app("embodied-eval", "eval", evaluate)


if __name__ == "__main__":
    main()
