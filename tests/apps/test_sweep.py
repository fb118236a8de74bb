"""embodied-sweep: the axes' grid of bench runs, its analysis, resumption and Ray."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from embodied.apps import sweep as sweep_app
from embodied.report import sweep as analysis

# one worker runs the module: the Ray test wants its Ray cluster alone (the "ray" group) and
# compares with the uninterrupted sweep, a module fixture made once on that worker
pytestmark = pytest.mark.xdist_group("ray")


def test_the_module_runs_on_one_worker(request):
    """Under `make test` (pytest-xdist, --dist loadgroup) the group is in the node id; a pytest
    whose node ids xdist cannot tag (9.2 with xdist 3.8) spreads the module over workers."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert request.node.nodeid.endswith("@ray"), request.node.nodeid


def _line(point: dict, agent: str, id_k: int, ood_k: int, n: int = 10) -> dict:
    return {
        "point": point,
        "agent": agent,
        "family": agent,
        "id": {"k": id_k, "n": n},
        "ood": {"k": ood_k, "n": n},
        "gap_closed": None,
    }


def test_slope_per_10x_and_the_verdict_are_exact_on_a_straight_line():
    # gap = 80 - 20 * log10(data): 10 -> 60 points, 100 -> 40, 1000 -> 20; two seeds agree
    lines = [
        _line({"data": d, "seed": s}, "state", 10, int(10 - gap / 10))
        for d, gap in ((10, 60), (100, 40), (1000, 20))
        for s in (0, 1)
    ]
    slope = analysis.gap_slope(lines, "state", "data", n_boot=200)
    assert slope.value == pytest.approx(-20.0)
    assert slope.lo == pytest.approx(-20.0) and slope.hi == pytest.approx(-20.0)  # no spread
    said = analysis.verdicts(lines, {"data": [10, 100, 1000], "seed": [0, 1]}, n_boot=200)
    assert said == [
        "100x data moves the OOD gap of `state` by -40.0 [-40.0, -40.0] points "
        "(-20.0 [-20.0, -20.0] per 10x)."
    ]


def test_settings_pool_the_other_axes_and_categorical_axes_compare_ends():
    lines = [
        _line({"train_physics": tp, "seed": s}, "adaptive", 10, k)
        for tp, ks in (("id", (5, 6)), ("wide-2", (8, 9)))
        for s, k in zip((0, 1), ks, strict=True)
    ]
    means = analysis.setting_means(lines, "adaptive", "train_physics", "ood", n_boot=200)
    assert means["id"].value == pytest.approx(55.0) and means["wide-2"].value == 85.0
    assert means["id"].lo <= 55.0 <= means["id"].hi
    said = analysis.verdicts(lines, {"train_physics": ["id", "wide-2"]}, n_boot=200)
    assert said[0].startswith(
        "train_physics id -> wide-2 moves the OOD gap of `adaptive` from 45.0 to 15.0"
    )
    assert math.isnan(analysis.gap_slope(lines, "adaptive", "train_physics").value)


def test_axes_are_checked_and_mapped_onto_the_config():
    with pytest.raises(ValueError, match="valid axes: \\['data', 'size'"):
        sweep_app.check_axes({"depth": [1]})
    with pytest.raises(ValueError, match="no values"):
        sweep_app.check_axes({"data": []})
    agents = {
        "state": {"world_model": {"hidden": [8]}},
        "transformer": {"world_model": {"size": "s", "context_steps": 64}},
    }
    got = sweep_app.point_overrides(
        {"data": 50, "size": "m", "train_physics": "wide-2", "history": 16, "seed": 2}, agents
    )
    assert got == {
        "collect.episodes": 50,
        "agent_overrides.transformer.world_model.size": "m",
        "collect.train_physics": "wide-2",
        "agent_overrides.transformer.world_model.context_steps": 16,
        "train.seed": 2,
    }
    assert sweep_app.label({"seed": 1, "data": 12}) == "data=12,seed=1"


def _cfg(run_dir: Path, *extra: str, executor: str = "executor.workers=1"):
    with initialize_config_module("embodied.configs", version_base="1.3"):
        return compose(
            "sweep",
            overrides=[
                f"run_dir={run_dir}",
                "progress=false",
                executor,
                "preset.axes={data:[6,12],seed:[0]}",
                "+env.kwargs.max_episode_steps=20",
                *extra,
            ],
        )


def _lines(run_dir: Path) -> list[dict]:
    return analysis.read_lines(run_dir / "sweep.jsonl")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("sweep")
    sweep_app.sweep(_cfg(run_dir))
    return run_dir


@pytest.mark.smoke
def test_a_sweep_writes_its_points_figures_and_verdict(uninterrupted: Path):
    lines = _lines(uninterrupted)
    assert [ln["point"] for ln in lines] == [{"data": 6, "seed": 0}, {"data": 12, "seed": 0}]
    assert all(ln["agent"] == "state" and ln["id"]["n"] == 2 for ln in lines)
    assert (uninterrupted / "data" / "data=6" / "CupCarry" / "train" / "manifest.json").is_file()
    assert (uninterrupted / "points" / "data=12,seed=0" / "models" / "CupCarry" / "state").is_dir()
    md = (uninterrupted / "sweep.md").read_text()
    assert "2x data moves the OOD gap of `state` by" in md
    assert (uninterrupted / "sweep_data.png").stat().st_size > 1000
    assert "data:image/png;base64," in (uninterrupted / "sweep.html").read_text()


@pytest.mark.smoke
def test_an_interrupted_sweep_resumed_equals_an_uninterrupted_one(
    tmp_path: Path, monkeypatch, uninterrupted: Path
):
    real = sweep_app.run_point
    calls = []

    def stop_at_the_second(cfg, point, agents):
        calls.append(point)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second point
        return real(cfg, point, agents)

    monkeypatch.setattr(sweep_app, "run_point", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        sweep_app.sweep(_cfg(tmp_path))
    assert len(_lines(tmp_path)) == 1  # the first point is kept
    monkeypatch.setattr(sweep_app, "run_point", real)
    sweep_app.sweep(_cfg(tmp_path))
    assert _lines(tmp_path) == _lines(uninterrupted)


@pytest.mark.smoke
def test_a_sweep_point_on_ray_equals_it_locally(tmp_path: Path, uninterrupted: Path):
    pytest.importorskip("ray")
    cfg = _cfg(
        tmp_path, "executor.num_cpus=2", "preset.axes={data:[6],seed:[0]}", executor="executor=ray"
    )
    sweep_app.sweep(cfg)
    assert _lines(tmp_path) == _lines(uninterrupted)[:1]
    assert json.loads((tmp_path / "points" / "data=6,seed=0" / "summary.json").read_text())
