"""``embodied.evaluate``: the evaluation grid from Python (a notebook), no command line.

    import embodied
    df = embodied.evaluate("state", tasks=["CupCarry"], splits=["id", "ood-cup_mass-3"])
    df = embodied.evaluate(MyPredictor(), splits=["id", "ood-cup_mass-3"], seeds=[0])

The settings are composed from configs/eval.yaml exactly as ``embodied-eval`` composes them
(the same preset, overrides in the same syntax), and every cell goes through the grid's own
``run_cell``, in this process, one after another: a cell's numbers equal the app's for the
same cell (tests/eval/test_api.py). An object passed in (a video predictor, a policy, a world
model) lives in this process only, so it never needs to pickle or import by name.

``embodied.evaluate`` is also the name of the module that runs a cell (embodied/evaluate.py),
and importing a submodule sets the package's attribute to it. Loading that module with the
package would cost every ``import embodied`` torch's import (~6 s); instead the package's
class (``_Package``) loads it on first use of the name and makes it callable as this
function, so ``embodied.evaluate(...)``, ``from embodied import evaluate`` (the module) and
``from embodied.evaluate import run_cell`` all work, in any order.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import types
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.grid import check_names, expand
from embodied.registration import TASKS
from embodied.shifts.splits import check_seed, parse_split

_LIVE: dict[str, Any] = {}  # key -> an object passed to evaluate, for live_policy
_keys = itertools.count()


def evaluate(
    agent: Any,
    tasks: Sequence[str] = ("CupCarry",),
    splits: Sequence[str] = ("id",),
    seeds: Sequence[int] = (0,),
    episodes: int | None = None,
    *,
    name: str | None = None,
    preset: str = "quick",
    run_dir: str = "runs/api",
    overrides: Sequence[str] = (),
    progress: bool = True,
    frame: bool | None = None,
) -> Any:
    """Evaluate one agent on tasks x splits x seeds; the results lines, one per cell.

    ``agent``: the name of a configs/agent/ config ("state", "video", ...); an agent config
    (a dict with a ``policy`` factory); or an object: a video predictor (``predict``: the
    ``video`` agent plans with it), a policy (``reset``/``act``), or a world model
    (``encode``/``step``: planned with CEM). ``episodes`` defaults to the preset's;
    ``overrides`` are embodied-eval's, e.g. ``["video.clips=4"]`` or
    ``["+agent_overrides.video.context=2"]``; models are read from ``<run_dir>/models``.
    Returns a pandas DataFrame (summary columns and the full ``line``) where pandas is
    installed and ``frame`` is not False, else the list of lines.
    """
    from hydra import compose

    from embodied.apps.eval import _hydra, check_checkpoints, check_grid, settings_from
    from embodied.clips import collect_stage
    from embodied.evaluate import run_cell

    label, config = _agent_config(agent, name)
    grid = [
        f"preset={preset}",
        f"run_dir={run_dir}",
        f"agents=[{label}]",
        f"tasks=[{','.join(tasks)}]",
        f"splits=[{','.join(splits)}]",
        f"seeds=[{','.join(str(int(s)) for s in seeds)}]",
        *([f"episodes={int(episodes)}"] if episodes is not None else []),
        *overrides,
    ]
    with _hydra():
        cfg = compose("eval", overrides=grid)
    if config is None:
        settings = check_grid(cfg)  # every name checked before any work, as embodied-eval does
    else:
        check_names("tasks", list(tasks), TASKS)
        for split in splits:
            parse_split(split)
        for seed in seeds:
            check_seed(seed)
        settings = settings_from(cfg, {label: config})
    check_checkpoints(settings, list(tasks))
    cells = expand([label], list(tasks), list(splits), [int(s) for s in seeds])
    collect_stage(cells, settings, progress=progress)  # the clips the cells read (embodied.clips)
    lines = [
        run_cell(cell, settings)
        for cell in tqdm(cells, desc=f"evaluate {label}", disable=not progress)
    ]
    return as_frame(lines) if frame is not False and _has_pandas() else lines


def _agent_config(agent: Any, name: str | None) -> tuple[str, dict[str, Any] | None]:
    """(name, config) of what was passed; config None for a configs/agent/ name."""
    if isinstance(agent, str):
        return agent, None
    if isinstance(agent, dict | DictConfig):
        cfg = OmegaConf.to_container(OmegaConf.create(agent), resolve=True)
        if "policy" not in cfg:
            raise ValueError("an agent config needs a policy factory (see configs/agent/*.yaml)")
        return name or str(cfg.get("name", "agent")), cfg
    kind = next(
        (k for k, need in KINDS.items() if all(callable(getattr(agent, m, None)) for m in need)),
        None,
    )
    if kind is None:
        raise TypeError(
            f"{type(agent).__name__} is none of: a video predictor (predict), a policy "
            "(reset, act), a world model (encode, step), a configs/agent name or config"
        )
    key = str(next(_keys))
    _LIVE[key] = agent
    label = name or type(agent).__name__
    base = _composed("video" if kind == "predictor" else "state")
    base.update(name=label, family=getattr(agent, "family", kind))
    if kind == "world_model":
        base["obs_mode"] = getattr(agent, "obs_mode", "state")
    if kind == "policy":
        base = {"name": label, "family": "policy", "obs_mode": getattr(agent, "obs_mode", "state")}
    base.pop("world_model", None)
    base.pop("predictor", None)
    base.update(trainer=None, policy={"_target_": f"{__name__}.live_policy", "_partial_": True})
    base["policy"].update(key=key, kind=kind)
    return label, base


KINDS = {"predictor": ("predict",), "policy": ("reset", "act"), "world_model": ("encode", "step")}


def _composed(config: str) -> dict[str, Any]:
    """configs/agent/<config>.yaml, resolved as embodied-eval resolves it."""
    from embodied.apps.eval import _hydra, load_agents

    with _hydra():
        from hydra import compose

        root = compose("eval")
    return load_agents([config], root)[config]


def live_policy(
    agent_cfg: Any, checkpoint_dir: str | None, env: Any, seed: int, key: str, kind: str
) -> Any:
    """The policy factory of an object passed to ``evaluate`` (found by ``key``)."""
    obj = _LIVE[key]
    if kind == "policy":
        return obj
    if kind == "predictor":
        from embodied.agents.video import make_policy

        return make_policy(agent_cfg, checkpoint_dir, env, seed, predictor=obj)
    from embodied.agents.mpc import MPCAgent, build_planner

    return MPCAgent(obj, build_planner(agent_cfg.planner, env, seed, obj))


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def as_frame(lines: Sequence[dict[str, Any]]) -> Any:
    """Results lines as a pandas DataFrame: one row per cell, the headline numbers as columns
    (success, drops, slips, return, PSNR, SSIM, cup and state error) and the ``line`` itself."""
    import pandas as pd

    rows = []
    for line in lines:
        emb, video = line["embodied"], line.get("video") or {}
        probe = video.get("probe") or {}
        kind = next((k for k in ("exact", "mlp", "linear") if probe.get(k)), None)
        rel = probe[kind]["rel"] if kind else None
        rows.append(
            {
                **{k: line[k] for k in ("agent", "task", "split", "seed")},
                "episodes": emb["episodes"],
                "success_rate": emb["success_rate"],
                "drop_rate": emb["drop_rate"],
                "slip_rate": emb["slip_rate"],
                "mean_return": emb["mean_return"],
                "psnr": video.get("psnr_mean"),
                "ssim": video.get("ssim_mean"),
                "cup_pos_error": video.get("cup_pos_error_mean"),
                "state_error": sum(rel) / len(rel) if rel else None,
                "wall_s": line["wall_s"],
                "line": line,
            }
        )
    return pd.DataFrame(rows)


class _CallableModule(types.ModuleType):
    """The module embodied.evaluate, callable as the notebook API ``evaluate``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return evaluate(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``embodied`` package: its submodule ``evaluate`` is loaded on first use of the name
    and made callable as it lands."""

    def __getattr__(self, name: str) -> Any:
        if name == "evaluate":
            return importlib.import_module(f"{self.__name__}.evaluate")
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__.rpartition(".")[0]].__class__ = _Package
