"""A leaderboard that can be trusted: one row per agent config, and a check of submissions.

``leaderboard(run_dir)`` -> rows for ``leaderboard.csv`` / ``leaderboard.json``: per agent, the
digest of its resolved config (what the numbers came from), the tasks, ID and OOD success
with 95% Wilson intervals over the pooled episodes, their spread over the evaluation seeds
(mean and standard deviation of the per-seed rates) and, for an agent trained with several
seeds (``state``, ``state@1``, ...), the report's IQM over training seeds with its two-level
bootstrap interval, OOD drops, PSNR and state error
ID -> OOD, the OOD tell, the suite's version and its split suite (the splits and a digest).

``check_submission(lines, preset)`` compares a results file made elsewhere with the fixed
protocol of a preset and names every difference: cells missing or extra (a changed task,
split or seed), a changed episode count, episode seeds that are not the ones a cell's seed
fixes (``embodied.evaluate.cell_seeds``), another package version (the tasks' versions and
the shift catalogue are the package's), and split fields that do not match the split's name
(a changed shift).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embodied.report.load import load_run
from embodied.report.summary import summarize

FIELDS = (
    "agent",
    "family",
    "config_digest",
    "tasks",
    "success_id",
    "success_id_ci",
    "success_id_seeds",
    "success_ood",
    "success_ood_ci",
    "success_ood_seeds",
    "success_id_training_seeds",
    "success_ood_training_seeds",
    "drop_ood",
    "drop_ood_ci",
    "psnr_id",
    "psnr_ood",
    "state_error_id_mm",
    "state_error_ood_mm",
    "ood_tell",
    "episodes",
    "seeds",
    "suite_version",
    "split_suite",
    "split_suite_digest",
)


def digest(value: Any) -> str:
    """12 hex digits of the SHA-256 of a JSON value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def agent_digests(run_dir: Path, agents: Sequence[str]) -> dict[str, str | None]:
    """Each agent's resolved config digest, from the run's config.yaml (None where it is
    missing or an agent config no longer composes)."""
    from omegaconf import OmegaConf

    from embodied.apps.eval import load_agents

    path = run_dir / "config.yaml"
    out: dict[str, str | None] = dict.fromkeys(agents)
    if not path.is_file():
        return out
    root = OmegaConf.load(path)
    try:  # the run's agents together: its agent_overrides name them all
        configs = load_agents(list(root.get("agents") or agents), root)
    except Exception:  # an agent config that no longer composes: rows without digests
        return out
    for name in agents:
        out[name] = digest(configs[name]) if name in configs else None
    return out


def _per_seed(cells: list[Any], cls: str) -> str:
    """'mean +- std (n seeds)' of the per-seed success rates of one agent's cells of a class."""
    rates = {}
    for seed in sorted({c.seed for c in cells if c.cls == cls}):
        mine = [c for c in cells if c.cls == cls and c.seed == seed]
        n = sum(c.episodes for c in mine)
        rates[seed] = sum(c.successes for c in mine) / n if n else math.nan
    if not rates:
        return ""
    values = np.array(list(rates.values()))
    return f"{values.mean():.2f} +- {values.std():.2f} ({len(values)} seeds)"


def _num(x: float, scale: float = 1.0) -> float | None:
    return round(float(x) * scale, 4) if x is not None and math.isfinite(x) else None


def _training_seeds(group: Any, cls: str) -> str:
    """'IQM 0.80 [0.70, 0.90] over state, state@1': success of one class (id, ood) over an
    agent's training seeds (a report SeedRow); '' for an agent trained with one seed."""
    spread = getattr(group, cls, None)
    if spread is None or not math.isfinite(spread.iqm):
        return ""
    members = ", ".join(group.members)
    return f"IQM {spread.iqm:.2f} [{spread.lo:.2f}, {spread.hi:.2f}] over {members}"


def leaderboard(
    run_dir: str | Path, min_episodes: int = 1, n_boot: int = 2000
) -> list[dict[str, Any]]:
    """The leaderboard rows of a run directory, one per agent (see the module doc)."""
    run = load_run(run_dir)
    summary = summarize(run, min_episodes=min_episodes, n_boot=n_boot)
    groups = {a: g for g in summary.training_seeds for a in g.members}
    digests = agent_digests(Path(run.run_dir), summary.agents)
    splits = sorted({c.split for c in run.cells}, key=lambda s: (s != "id", s))
    rows = []
    for row in summary.headline:
        cells = [c for c in summary.eligible if c.agent == row.agent]
        group = groups.get(row.agent)
        rows.append(
            {
                "agent": row.agent,
                "family": row.family,
                "config_digest": digests[row.agent],
                "tasks": " ".join(sorted({c.task for c in cells})),
                "success_id": _num(row.id.success.value),
                "success_id_ci": [_num(x) for x in row.id.success.ci],
                "success_id_seeds": _per_seed(cells, "id"),
                "success_ood": _num(row.ood.success.value),
                "success_ood_ci": [_num(x) for x in row.ood.success.ci],
                "success_ood_seeds": _per_seed(cells, "ood"),
                "success_id_training_seeds": _training_seeds(group, "id"),
                "success_ood_training_seeds": _training_seeds(group, "ood"),
                "drop_ood": _num(row.ood.drop.value),
                "drop_ood_ci": [_num(x) for x in row.ood.drop.ci],
                "psnr_id": _num(row.id.psnr),
                "psnr_ood": _num(row.ood.psnr),
                "state_error_id_mm": _num(row.id.state_error, 1000),
                "state_error_ood_mm": _num(row.ood.state_error, 1000),
                "ood_tell": _num(row.tell),
                "episodes": row.id.episodes + row.ood.episodes,
                "seeds": " ".join(str(s) for s in sorted({c.seed for c in cells})),
                "suite_version": " ".join(summary.versions),
                "split_suite": " ".join(splits),
                "split_suite_digest": digest(splits),
            }
        )
    return rows


def write_leaderboard(
    run_dir: str | Path, min_episodes: int = 1, n_boot: int = 2000
) -> tuple[Path, Path]:
    """``leaderboard.csv`` and ``leaderboard.json`` into the run directory (atomically)."""
    import csv
    import io

    from embodied.atomic import write_atomic

    rows = leaderboard(run_dir, min_episodes, n_boot)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    root = Path(run_dir)
    return (
        write_atomic(root / "leaderboard.csv", buf.getvalue()),
        write_atomic(root / "leaderboard.json", json.dumps(rows, indent=2) + "\n"),
    )


# ----------------------------------------------------------------------------- submissions
def protocol(preset: str) -> dict[str, Any]:
    """The fixed grid of a preset: tasks, splits, seeds, episodes, the package version."""
    from hydra import compose

    import embodied
    from embodied.apps.eval import _hydra
    from embodied.registration import env_id

    with _hydra():
        cfg = compose("eval", overrides=[f"preset={preset}"])
    return {
        "tasks": list(cfg.tasks),
        "splits": list(cfg.splits),
        "seeds": [int(s) for s in cfg.seeds],
        "episodes": int(cfg.episodes),
        "version": embodied.__version__,
        "env_ids": {t: env_id(t) for t in cfg.tasks},
    }


def check_submission(lines: Sequence[dict[str, Any]], expected: dict[str, Any]) -> list[str]:
    """Every way the results ``lines`` differ from the ``expected`` protocol; [] if none."""
    from embodied.evaluate import cell_seeds
    from embodied.shifts.splits import parse_split

    problems: list[str] = []
    if not lines:
        return ["the results file holds no lines"]
    want = {
        (t, s, e) for t in expected["tasks"] for s in expected["splits"] for e in expected["seeds"]
    }
    for agent in sorted({line["agent"] for line in lines}):
        have = {(x["task"], x["split"], int(x["seed"])) for x in lines if x["agent"] == agent}
        for what, cells in (("missing", want - have), ("not in the protocol", have - want)):
            if cells:
                named = ", ".join("/".join(map(str, c)) for c in sorted(cells))
                problems.append(f"{agent}: cells {what}: {named}")
    for line in lines:
        cell = f"{line['agent']}/{line['task']}/{line['split']}/{line['seed']}"
        if line.get("version") != expected["version"]:
            problems.append(
                f"{cell}: made with embodied-ood {line.get('version')!r}, the protocol is "
                f"{expected['version']!r} (task versions and shifts are the package's)"
            )
        want_id = expected.get("env_ids", {}).get(line["task"])
        if want_id is not None and line.get("env_id") != want_id:
            problems.append(
                f"{cell}: ran task {line.get('env_id') or 'of no recorded version'}, the "
                f"protocol's is {want_id}"
            )
        emb = line["embodied"]
        n, rows = int(emb["episodes"]), emb.get("per_episode") or []
        if n != expected["episodes"] or len(rows) != n:
            problems.append(
                f"{cell}: {n} episodes ({len(rows)} rows), the protocol has {expected['episodes']}"
            )
        seeds = cell_seeds(int(line["seed"]), len(rows), 0).episodes
        wrong = [i for i, (r, s) in enumerate(zip(rows, seeds, strict=True)) if r["seed"] != s]
        if wrong:
            i = wrong[0]
            problems.append(
                f"{cell}: episode {i} ran seed {rows[i]['seed']}, the cell's seed fixes "
                f"{seeds[i]} ({len(wrong)} episodes differ)"
            )
        try:
            sp = parse_split(line["split"])
        except ValueError as err:
            problems.append(f"{cell}: {err}")
            continue
        fields = {"shift": sp.shift, "severity": sp.severity, "look": sp.look, "work": sp.work}
        changed = {k: line.get(k) for k, v in fields.items() if line.get(k) != v}
        if changed:
            problems.append(f"{cell}: split fields {changed} differ from the split's {fields}")
    return problems


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a results file (a torn last line is an error here: a submission is
    whole)."""
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
