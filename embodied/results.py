"""The append-only results file of an evaluation run: one JSON line per finished cell.

Only the parent process writes. Each line is appended whole, then fsynced, so a crash
leaves at most a torn last line; opening the store cuts that line off, a failed write cuts
off what it wrote, and a rerun skips the cells already in the file (resume loses nothing).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.yaml"
VERSION_FILE = "version.json"


class ResultsStore:
    """``<run_dir>/results.jsonl`` with its config and version beside it."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lines = self._load_and_repair()

    def _load_and_repair(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise IsADirectoryError(
                errno.EISDIR, "not a file: move it away or use another run_dir", str(self.path)
            )
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: the write that a crash interrupted
            warnings.warn(
                f"{self.path}: dropping a torn last line ({len(data) - end} bytes)", stacklevel=3
            )
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        lines, seen = [], set()
        for number, raw in enumerate(data[:end].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{number} is not a JSON line: {err}") from err
            if not isinstance(line, dict) or "cell_id" not in line:
                raise ValueError(f"{self.path}:{number} is not a results line (no cell_id)")
            if line["cell_id"] not in seen:
                seen.add(line["cell_id"])
                lines.append(line)
        return lines

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


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except OSError as err:  # name the file: a bare "No space left on device" does not
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"{err.strerror}; {path.name} is unchanged", str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
