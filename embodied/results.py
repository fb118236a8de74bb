"""The append-only results file of an evaluation run: one JSON line per finished cell.

Only the parent process writes. Each line is appended whole, then fsynced, so a crash
leaves at most a torn last line; opening the store cuts that line off, a failed write cuts
off what it wrote, and a rerun skips the cells already in the file (resume loses nothing).
``ResultLine`` is what a line holds; ``read_results`` is the one reader (the store and the
report both use it).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import warnings
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from embodied.atomic import write_atomic
from embodied.grid import Cell
from embodied.shifts.splits import parse_split

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.yaml"
VERSION_FILE = "version.json"


@dataclass(frozen=True)
class ResultLine(Cell):
    """One finished cell as a line of ``results.jsonl`` holds it: the cell, its split's fields,
    what ``run_cell`` measured (``embodied``: episode counts, rates and per-episode rows;
    ``video``: open-loop video metrics or None) and the ``videos`` it wrote. ``run_cell``
    returns ``to_json()``, the store appends that, the report reads it back with
    ``from_json``."""

    family: str | None
    shift: str | None
    severity: int | None
    look: bool
    work: bool
    version: str
    embodied: dict[str, Any]
    video: dict[str, Any] | None = None
    videos: dict[str, str] | None = None
    wall_s: float = 0.0
    train_split: str | None = None  # the split the agent's model was trained on, if trained
    env_id: str | None = None  # the task's gymnasium id, its version included

    @classmethod
    def of(cls, cell: Cell, **measured: Any) -> ResultLine:
        """The line of ``cell``, its split fields derived from the split's name."""
        sp = parse_split(cell.split)
        split = {"shift": sp.shift, "severity": sp.severity, "look": sp.look, "work": sp.work}
        return cls(cell.agent, cell.task, cell.split, cell.seed, **split, **measured)

    def to_json(self) -> dict[str, Any]:
        """The line as written: ``cell_id`` first, then the fields in the order above."""
        line = {"cell_id": self.cell_id}
        line.update({f.name: getattr(self, f.name) for f in fields(self)})
        return line

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> ResultLine:
        """A line read back; KeyError/TypeError/ValueError when it is not a results line
        of a valid split. Split fields a line lacks are derived from the split's name."""
        cell = Cell(str(line["agent"]), str(line["task"]), str(line["split"]), int(line["seed"]))
        if line.get("cell_id", cell.cell_id) != cell.cell_id:
            raise ValueError(f"cell_id {line['cell_id']!r} does not match {cell.cell_id!r}")
        sp = parse_split(cell.split)
        embodied = line["embodied"]
        if not isinstance(embodied, dict) or "episodes" not in embodied:
            raise ValueError("no embodied metrics (episodes)")
        severity = line.get("severity")
        return cls(
            *(cell.agent, cell.task, cell.split, cell.seed),
            family=line.get("family"),
            shift=line.get("shift") or sp.shift,
            severity=sp.severity if severity is None else int(severity),
            look=bool(line.get("look", False)),
            work=bool(line.get("work", False)),
            version=str(line.get("version", "")),
            embodied=embodied,
            video=line.get("video"),
            videos=line.get("videos"),
            wall_s=float(line.get("wall_s") or 0.0),
            train_split=line.get("train_split"),
            env_id=line.get("env_id"),
        )


@dataclass
class ResultsRead:
    """What ``read_results`` found: the lines kept, and what it set aside and why."""

    lines: list[dict[str, Any]]  # first line per cell id, in file order
    malformed: list[tuple[int, str]]  # (line number, why): complete lines that are not results
    duplicates: list[str]  # cell ids with more than one line (their later lines are ignored)
    torn: int  # bytes after the last newline: a write that a crash interrupted
    data: bytes  # the file as read


def read_results(path: str | os.PathLike[str]) -> ResultsRead:
    """Every line of a results file; the *first* line of a cell is the one that counts.

    Why the first: the store appends a cell only when the file has no line for it, and a
    rerun skips every cell the file already holds, so the first line is the run's own
    result. A later line for the same cell can only be debris (a hand-merged file, an
    older writer); it is reported, never silently preferred. Malformed and torn lines are
    returned for the caller to judge: the store refuses to resume on top of them, the
    report leaves them out and says so.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise IsADirectoryError(
            errno.EISDIR, "not a file: move it away or use another run_dir", str(path)
        )
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    lines: list[dict[str, Any]] = []
    malformed, duplicates, seen = [], [], set()
    for number, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            malformed.append((number, f"not a JSON line: {err}"))
            continue
        if not isinstance(line, dict) or "cell_id" not in line:
            malformed.append((number, "not a results line (no cell_id)"))
        elif line["cell_id"] in seen:
            duplicates.append(line["cell_id"])
        else:
            seen.add(line["cell_id"])
            lines.append(line)
    return ResultsRead(lines, malformed, duplicates, len(data) - end, data)


class ResultsStore:
    """``<run_dir>/results.jsonl`` with its config and version beside it."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        read = read_results(self.path)
        if read.malformed:
            number, why = read.malformed[0]
            raise ValueError(f"{self.path}:{number} is {why}")
        if read.torn:  # cut the torn line off, so the next append starts a fresh line
            warnings.warn(
                f"{self.path}: dropping a torn last line ({read.torn} bytes)", stacklevel=2
            )
            with open(self.path, "r+b") as f:
                f.truncate(len(read.data) - read.torn)
                f.flush()
                os.fsync(f.fileno())
        self._lines = read.lines

    def lines(self) -> list[dict[str, Any]]:
        """Every finished cell, in the order it finished."""
        return list(self._lines)

    def done_ids(self) -> set[str]:
        return {line["cell_id"] for line in self._lines}

    def append(self, line: dict[str, Any]) -> None:
        """Write one finished cell as one complete line, durably.

        A failed write (disk full, I/O error) is cut off again, so the lines before it stay
        intact and a later append does not run on from half a line.
        """
        if line["cell_id"] in self.done_ids():
            raise ValueError(f"cell {line['cell_id']!r} is already in {self.path}")
        data = memoryview((json.dumps(line, allow_nan=False) + "\n").encode())
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError as err:
                os.ftruncate(fd, size)
                raise OSError(
                    err.errno,
                    f"{err.strerror}; the {len(self._lines)} finished cells in it are intact, "
                    "rerun to carry on",
                    str(self.path),
                ) from err
        finally:
            os.close(fd)
        self._lines.append(line)

    def write_config(self, config_yaml: str) -> None:
        """Record the resolved config of the latest run."""
        write_atomic(self.run_dir / CONFIG_FILE, config_yaml)

    def write_version(self) -> None:
        write_atomic(self.run_dir / VERSION_FILE, json.dumps(version_info(), indent=2) + "\n")


def version_info() -> dict[str, str]:
    """The package version and the versions of what its numbers depend on."""
    info = {"python": platform.python_version()}
    for dist in ("embodied-ood", "mujoco", "gymnasium", "numpy", "torch", "stable-baselines3"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "missing"
    return info
