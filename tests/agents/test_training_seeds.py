"""Training seeds: ``<agent>@<seed>`` agents, their models, and the report over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_report import _line, write_run

from embodied.agents.state_model import StateModel
from embodied.apps.bench import bench
from embodied.apps.eval import load_agents
from embodied.grid import split_seed
from embodied.metrics.stats import Rate, seed_spread
from embodied.report import build_report


def test_names_with_a_training_seed():
    assert split_seed("state") == ("state", None)
    assert split_seed("state@2") == ("state", 2)
    with pytest.raises(ValueError, match="<agent>@<training seed>"):
        split_seed("state@x")


def test_seed_agents_share_the_config_and_their_own_overrides():
    root = OmegaConf.create(
        {"agent_overrides": {"state": {"planner": {"horizon": 5}}, "state@1": {"steps": 7}}}
    )
    agents = load_agents(["state", "state@1"], root)
    assert agents["state"]["name"] == "state" and "train_seed" not in agents["state"]
    assert agents["state@1"]["name"] == "state@1" and agents["state@1"]["train_seed"] == 1
    assert agents["state"]["planner"]["horizon"] == agents["state@1"]["planner"]["horizon"] == 5
    assert agents["state@1"]["steps"] == 7 and "steps" not in agents["state"]
    assert agents["state"]["world_model"] == agents["state@1"]["world_model"]
    with pytest.raises(ValueError, match="valid agents"):
        load_agents(["stat@1"], OmegaConf.create({}))


def test_seed_spread_is_the_iqm_with_a_two_level_interval():
    g = seed_spread([Rate(29, 30), Rate(24, 30), Rate(23, 30)], n_boot=500)
    assert g.iqm == pytest.approx(76 / 90)  # 25% trimmed mean of three = their mean
    assert g.lo < g.iqm < g.hi
    five = seed_spread([Rate(k, 10) for k in (0, 6, 7, 8, 10)], n_boot=200)
    assert five.iqm == pytest.approx(0.7)  # the middle three of five


def test_the_report_shows_success_over_training_seeds(tmp_path: Path):
    lines = []
    for agent, (id_k, ood_k) in {"state": (20, 10), "state@1": (18, 6), "oracle": (20, 18)}.items():
        lines.append(_line(agent, "state", "id", 0, 20, id_k, 0, None))
        lines.append(_line(agent, "state", "ood-cup_mass-3", 0, 20, ood_k, 20 - ood_k, None))
    paths = build_report(write_run(tmp_path / "run", lines=lines), n_boot=200)
    md = paths.markdown.read_text()
    assert "## Over training seeds" in md
    assert "| state | state, state@1 | 1.00 / 0.90 | 0.95 [" in md
    assert "| 0.50 / 0.30 | 0.40 [" in md
    seeds = json.loads(paths.summary_json.read_text())["training_seeds"]
    assert [r["agent"] for r in seeds] == ["state"]  # oracle ran with one seed: no row


@pytest.mark.smoke
def test_bench_trains_each_seed_its_own_model(tmp_path: Path):
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose(
            "bench",
            overrides=[
                "preset=smoke",
                f"run_dir={tmp_path}",
                "agents=[state,state@1]",
                "splits=[id]",
                "+env.kwargs.max_episode_steps=20",
                "executor.workers=1",
                "video.clips=0",
                "video.probe_clips=0",
                "videos.cells=[]",
                "progress=false",
            ],
        )
    bench(cfg)
    models = tmp_path / "models" / "CupCarry"
    a, b = (StateModel.load(models / n / "model.pt") for n in ("state", "state@1"))
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b)]
    assert not torch.equal(*flat)  # another training seed, another model
    assert "## Over training seeds" in (tmp_path / "report.md").read_text()
