"""Reading a run directory: results.jsonl (one line per finished cell), config and version info.

The lines come from ``embodied.results.read_results``, the reader the results store uses too
(the first line of a cell counts). Loading is forgiving where a crash could leave debris (a
torn or malformed line, a cell written twice) and says so in ``RunData.warnings``, which the
report prints; it is strict about what it cannot report on (no directory, no results).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embodied.grid import Cell
from embodied.metrics.video import cap_psnr
from embodied.results import CONFIG_FILE, RESULTS_FILE, ResultLine, read_results
from embodied.shifts.splits import coverage, parse_split

VERSION_FILES = ("version.json", "versions.json", "version.txt", "VERSION")
# "interp": an ood-* split the agent's training range covers or surrounds (coverage below):
# reported apart, never pooled into OOD
CLASSES = ("id", "ood", "look", "train", "interp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".gif")
VALID_SPLITS = (
    "valid splits are 'train', 'id', 'ood-<shift>-<severity>' (severity 1..5), "
    "'ood-all-<severity>' and 'look-<shift>'"
)


class ReportError(Exception):
    """Input the report cannot be built from; the message says what to do."""


def split_class(split: str) -> str:
    """'id', 'ood' (any ood-*), 'look' (any look-*) or 'train'."""
    try:
        kind = parse_split(split).kind
    except ValueError as err:
        raise ReportError(f"{err}; {VALID_SPLITS}") from err
    return "ood" if kind == "all" else kind


@dataclass
class Video:
    """A cell's open-loop video metrics (PSNR capped at PSNR_CAP, see embodied.metrics.video)."""

    psnr: float
    ssim: float
    mse: float
    clips: int
    horizon: int
    frames_kind: str
    cup_pos_error: float | None
    state_error: float | None = None  # probe's cup-minus-hand error (m), mean over horizons


@dataclass(frozen=True)
class CellResult(Cell):
    """A finished cell as the report needs it: its class, counts and capped video metrics."""

    family: str
    cls: str
    shift: str | None
    severity: int | None
    look: bool
    work: bool
    version: str
    wall_s: float
    episodes: int
    successes: int
    drops: int
    physics_errors: int
    mean_return: float | None
    time_to_success: float | None
    video: Video | None
    slips: int | None = None  # None: the results line carries no slip_rate
    # what the split is to the agent's training range: id, look, covered, interpolation or
    # extrapolation (an untrained agent and a model trained on `train`: against ID ranges)
    coverage: str = "extrapolation"
    # sysid-style agents: {param: [estimate per episode]} and {param: [true value per episode]}
    param_estimates: dict[str, list[float]] = field(default_factory=dict)
    param_truth: dict[str, list[float]] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan

    @property
    def drop_rate(self) -> float:
        return self.drops / self.episodes if self.episodes else math.nan


@dataclass
class RunData:
    """Everything the report reads from a run directory."""

    run_dir: Path
    cells: list[CellResult]
    results_sha256: str
    results_lines: int
    config_text: str | None
    version_text: str | None
    videos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _count(emb: dict[str, Any], key: str, rate_key: str, n: int) -> int:
    """Count of episodes with `key` true: from per_episode rows when complete, else the rate."""
    rows = emb.get("per_episode") or []
    if len(rows) == n and all(key in r for r in rows):
        return sum(bool(r[key]) for r in rows)
    rate = emb.get(rate_key)
    return round(float(rate) * n) if rate is not None else 0


def _optional(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _params(raw: dict[str, Any] | None) -> dict[str, list[float]]:
    """{param: values}; a missing value (null) is nan, left out where estimates are scored."""
    return {
        str(k): [math.nan if x is None else float(x) for x in v] for k, v in (raw or {}).items()
    }


def _per_episode(emb: dict[str, Any], key: str) -> dict[str, list[float]]:
    """{param: [value per episode]} from the episodes' ``key`` records (sysid's ``estimates``
    and the ``truth`` beside them); episodes without a record are left out."""
    records = [r[key] for r in emb.get("per_episode") or [] if r.get(key)]
    names = sorted({k for r in records for k in r})
    return _params({k: [r.get(k) for r in records] for k in names})


def _probe_error(raw: dict[str, Any] | None) -> float | None:
    """Mean over horizons of the best probe's position error: exact, else MLP, else linear."""
    kind = next((k for k in ("exact", "mlp", "linear") if (raw or {}).get(k)), None)
    return _optional(sum(raw[kind]["rel"]) / len(raw[kind]["rel"])) if kind else None


def _video(raw: dict[str, Any] | None) -> Video | None:
    if not raw:
        return None
    return Video(
        psnr=float(cap_psnr(float(raw["psnr_mean"]))),
        ssim=float(raw["ssim_mean"]),
        mse=float(raw["mse_mean"]),
        clips=int(raw.get("clips") or 1),
        horizon=int(raw.get("horizon") or 0),
        frames_kind=str(raw.get("frames_kind", "")),
        cup_pos_error=_optional(raw.get("cup_pos_error_mean")),
        state_error=_probe_error(raw.get("probe")),
    )


def parse_cell(raw: dict[str, Any]) -> CellResult:
    """A results line -> CellResult; KeyError/TypeError/ValueError/ReportError when malformed."""
    cls = split_class(str(raw.get("split")))
    line = ResultLine.from_json(raw)
    where = coverage(line.train_split or "train", line.split) if cls == "ood" else cls
    cls = "interp" if where in ("covered", "interpolation") else cls
    emb, n = line.embodied, int(line.embodied["episodes"])
    return CellResult(
        *(line.agent, line.task, line.split, line.seed),
        family=str(line.family or ""),
        cls=cls,
        shift=line.shift,
        severity=line.severity,
        look=line.look,
        work=line.work,
        version=line.version,
        wall_s=line.wall_s,
        episodes=n,
        successes=_count(emb, "success", "success_rate", n),
        drops=_count(emb, "dropped", "drop_rate", n),
        physics_errors=int(emb.get("physics_errors") or 0),
        mean_return=_optional(emb.get("mean_return")),
        time_to_success=_optional(emb.get("time_to_success")),
        video=_video(line.video),
        slips=_count(emb, "slipped", "slip_rate", n) if "slip_rate" in emb else None,
        param_estimates=_per_episode(emb, "estimates"),
        param_truth=_per_episode(emb, "truth"),
        coverage=where,
    )


def _read_optional(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.is_file() else None


def load_run(run_dir: str | Path) -> RunData:
    """Read <run_dir>/results.jsonl (+ config.yaml, version info, videos) for the report."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.exists():
        raise ReportError(
            f"run_dir {run_dir} does not exist: pass the directory embodied-eval wrote"
        )
    if not run_dir.is_dir():
        raise ReportError(f"run_dir {run_dir} is not a directory")
    results = run_dir / RESULTS_FILE
    if not results.is_file():
        raise ReportError(
            f"no results in {run_dir}: {RESULTS_FILE} is missing (embodied-eval writes it; "
            "run the evaluation first or point run_dir at the run's directory)"
        )
    read = read_results(results)
    warnings = [f"{RESULTS_FILE} line {n} skipped (malformed: {why})" for n, why in read.malformed]
    if read.torn:
        warnings.append(f"{RESULTS_FILE}: a torn last line ({read.torn} bytes) skipped")
    warnings += [
        f"cell {c} appears more than once; the first line is used" for c in read.duplicates
    ]
    by_id: dict[str, CellResult] = {}
    for line in read.lines:
        try:
            cell = parse_cell(line)
        except (KeyError, TypeError, ValueError, ReportError) as err:
            warnings.append(f"{RESULTS_FILE} cell {line['cell_id']} skipped (malformed: {err})")
            continue
        by_id[cell.cell_id] = cell
    if not by_id:
        detail = f" ({len(warnings)} skipped; first: {warnings[0]})" if warnings else ""
        raise ReportError(
            f"no results in {run_dir}: {RESULTS_FILE} holds no finished cells{detail}"
        )
    version_text = next(
        (t for name in VERSION_FILES if (t := _read_optional(run_dir / name)) is not None), None
    )
    videos = sorted(
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
    )
    return RunData(
        run_dir=run_dir,
        cells=list(by_id.values()),
        results_sha256=hashlib.sha256(read.data).hexdigest(),
        results_lines=len(read.data.splitlines()),
        config_text=_read_optional(run_dir / CONFIG_FILE),
        version_text=version_text,
        videos=videos,
        warnings=warnings,
    )


def json_number(x: float | None) -> float | None:
    """JSON-safe number: nan/inf -> None."""
    return float(x) if x is not None and math.isfinite(x) else None


def split_order(split: str) -> tuple[int, str, int]:
    """Sort key: train, id, ood-<shift>-<s> by shift then severity, ood-all, look-*."""
    if split in ("train", "id"):
        return (0 if split == "train" else 1, "", 0)
    if split.startswith("ood-"):
        shift, _, sev = split[4:].rpartition("-")
        return (3 if shift == "all" else 2, shift, int(sev) if sev.isdigit() else 0)
    return (4, split, 0)
