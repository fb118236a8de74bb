"""Training physics as an axis: train-wide-k and train-interp-<shift> splits, what each covers,
and the report keeping covered and surrounded cells out of OOD."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from test_report import _line, write_run

from embodied.collect import collect
from embodied.report import build_report, load_run
from embodied.shifts import PARAMS, SHIFTS, resolve_physics
from embodied.shifts.splits import (
    ALL_SHIFTS,
    SEVERITIES,
    coverage,
    mixed_shift,
    parse_split,
    train_physics_names,
    train_ranges,
    train_split,
    valid_splits,
)

SEEDS = range(300)


@cache
def _physics(split: str) -> list[dict[str, float]]:
    """Every seed's physics of ``split``, drawn once per test run (the tests read it often)."""
    return [resolve_physics(split, s) for s in SEEDS]


def _draws(split: str, name: str) -> list[float]:
    return [physics[name] for physics in _physics(split)]


def test_plain_train_is_unchanged_and_wide_moves_only_work_shifts():
    for name, p in PARAMS.items():
        plain = _draws("train", name)
        assert all(p.id_range[0] <= v <= p.id_range[1] for v in plain), name
        wide = _draws("train-wide-2", name)
        widened = any(name in {q.name for q in SHIFTS[s].params} for s in ALL_SHIFTS)
        if not (widened and p.severities is not None):
            assert wide == plain, name  # look shifts, cup size and push timing keep their draws


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_wide_k_reaches_severity_k_and_never_severity_k_plus_1(k: int):
    for shift in ALL_SHIFTS:
        for p in SHIFTS[shift].params:
            if p.severities is None:
                continue
            values = _draws(f"train-wide-{k}", p.name)
            sev_k, sev_next = p.severities[k - 1], p.severities[k]
            up = sev_next > p.nominal
            beyond = [v for v in values if (v >= sev_next if up else v <= sev_next)]
            assert not beyond, (p.name, k, beyond[:3])  # wide-2 never holds a severity-3 cup
            far = max(values) if up else min(values)
            near_k = abs(far - sev_k) <= 0.1 * abs(sev_k - p.nominal) + 1e-9
            assert near_k or p.integer and far == sev_k, (p.name, k, far, sev_k)


def test_mix_k_widens_one_work_shift_per_episode_and_draws_the_rest_as_train():
    plain, mixed = _physics("train"), _physics("train-mix-2")
    picked = [mixed_shift(s) for s in SEEDS]
    assert set(picked) == set(ALL_SHIFTS)  # every work shift is widened in some episodes
    for seed, shift in zip(SEEDS, picked, strict=True):
        widened = {p.name for p in SHIFTS[shift].params}
        assert {n: v for n, v in mixed[seed].items() if n not in widened} == {
            n: v for n, v in plain[seed].items() if n not in widened
        }
    p = PARAMS["cup_mass"]  # the widened draws reach severity 2 and never severity 3
    heavy = [mixed[s]["cup_mass"] for s in SEEDS if picked[s] == "cup_mass"]
    assert max(heavy) > p.severities[0] and max(heavy) < p.severities[2]
    assert coverage("train-mix-2", "ood-cup_mass-2") == "covered"
    assert coverage("train-mix-2", "ood-cup_mass-3") == "extrapolation"


def test_interp_surrounds_the_band_and_leaves_it_empty():
    p = PARAMS["cup_mass"]
    values = _draws("train-interp-cup_mass", "cup_mass")
    lo_band, hi_band = p.id_range[1], p.severities[3]  # 0.23 .. 0.46: severities 1-3 inside
    assert not [v for v in values if lo_band < v < hi_band]
    assert any(v <= lo_band for v in values) and any(v >= hi_band for v in values)
    assert _draws("train-interp-cup_mass", "grip_force") == _draws("train", "grip_force")


def test_coverage_labels():
    assert coverage("train", "ood-cup_mass-1") == "extrapolation"
    assert coverage("train-wide-2", "ood-cup_mass-2") == "covered"
    assert coverage("train-wide-2", "ood-cup_mass-3") == "extrapolation"
    assert coverage("train-wide-2", "ood-all-2") == "covered"
    assert coverage("train-wide-2", "ood-all-3") == "extrapolation"
    assert coverage("train-interp-cup_mass", "ood-cup_mass-2") == "interpolation"
    assert coverage("train-interp-cup_mass", "ood-cup_mass-5") == "covered"
    assert coverage("train-interp-cup_mass", "ood-grip_force-1") == "extrapolation"
    assert coverage("train-wide-2", "id") == "id" and coverage("train", "look-light") == "look"
    with pytest.raises(ValueError, match="not a training split"):
        coverage("id", "ood-cup_mass-1")


@pytest.mark.parametrize("physics", train_physics_names())
def test_no_extrapolation_split_lies_inside_its_training_data(physics: str):
    """Whatever a range calls extrapolation holds a value no training episode reached."""
    train = train_split(physics)
    drawn = {p: _draws(train, p) for p in PARAMS}
    for shift in ALL_SHIFTS:
        for sev in SEVERITIES:
            split = f"ood-{shift}-{sev}"
            where = coverage(train, split)
            for p in SHIFTS[shift].params:
                if p.severities is None:
                    continue
                v, seen = p.severities[sev - 1], drawn[p.name]
                if where == "extrapolation":
                    assert v > max(seen) or v < min(seen), (physics, split)
                elif where == "interpolation":
                    assert min(seen) < v < max(seen), (physics, split)


def test_train_split_names_parse_and_bad_ones_name_the_choices():
    assert train_split("id") == "train" and train_split("wide-2") == "train-wide-2"
    assert parse_split("train-interp-push").train_physics == "interp-push"
    assert "train-wide-4" in valid_splits() and "train-wide-5" not in valid_splits()
    with pytest.raises(ValueError, match="valid: id, wide-<1..4>, mix-<1..4>, interp-<shift>"):
        parse_split("train-wide-5")
    with pytest.raises(ValueError, match="interp-cup_mass"):
        train_ranges("interp-colour")


def test_collect_takes_train_physics(tmp_path: Path):
    with initialize_config_module("embodied.configs", version_base="1.3"):
        cfg = compose("collect", overrides=["train_physics=wide-2"])
    assert cfg.split == "train-wide-2" and cfg.out_dir.endswith("/train-wide-2")
    manifest = collect(
        "embodied/CupCarry-v0",
        tmp_path,
        episodes=3,
        split=cfg.split,
        obs_modes=("state",),
        progress=False,
    )
    assert manifest["split"] == "train-wide-2"
    cup = [e["physics"]["cup_mass"] for e in manifest["episode_info"]]
    assert cup == [
        resolve_physics("train-wide-2", e["seed"])["cup_mass"] for e in manifest["episode_info"]
    ]


def test_report_keeps_covered_and_surrounded_cells_out_of_ood(tmp_path: Path):
    lines = []
    for split, k in (("id", 20), ("ood-cup_mass-2", 18), ("ood-cup_mass-3", 6)):
        line = _line("state", "state", split, 0, 20, k, 20 - k, None)
        line["train_split"] = "train-wide-2"
        lines.append(line)
    lines.append(_line("scripted", "scripted", "ood-cup_mass-2", 0, 20, 10, 10, None))
    run_dir = write_run(tmp_path / "run", lines=lines)
    cells = {(c.agent, c.split): c for c in load_run(run_dir).cells}
    assert cells["state", "ood-cup_mass-2"].cls == "interp"
    assert cells["state", "ood-cup_mass-2"].coverage == "covered"
    assert cells["state", "ood-cup_mass-3"].cls == "ood"
    assert cells["scripted", "ood-cup_mass-2"].coverage == "extrapolation"  # untrained: ID
    paths = build_report(run_dir, n_boot=50)
    summary = json.loads(paths.summary_json.read_text())
    state = next(r for r in summary["headline"] if r["agent"] == "state")
    assert state["ood"]["success"]["k"] == 6 and state["ood"]["success"]["n"] == 20
    md = paths.markdown.read_text()
    assert "| state | ood-cup_mass-2 | covered |" in md
    assert "| state | ood-cup_mass-3 | extrapolation |" in md
