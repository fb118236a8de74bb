"""Crash-safe file writes: a temporary file beside the target, fsynced, then renamed over it.

A reader (or a rerun after a crash, a kill or a full disk) sees the old file or the new one,
never half of one. Every file this project writes whole goes through here: results, configs,
reports, datasets, videos and checkpoints.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Writer = Callable[[Path], Any]  # writes a file at the given path (np.savez, torch.save, ...)


def write_temp(target: str | os.PathLike[str], write: Writer, suffix: str = ".tmp") -> Path:
    """``write(tmp)`` a temporary file beside ``target`` and fsync it; the caller renames it.

    ``suffix`` ends the temporary name: a library that appends its extension when it is
    missing (SB3's ``.zip``, ``.pkl``) needs it there. On any failure the temporary file is
    removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the target is an ordinary file
    except OSError as err:  # name the file: a bare "No space left on device" does not
        tmp.unlink(missing_ok=True)
        raise OSError(
            err.errno, f"{err.strerror}; {target.name} is unchanged", str(target)
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def remove_temps(root: str | os.PathLike[str], recursive: bool = False) -> int:
    """Delete the temporary files that writes killed mid-way left in ``root`` (below it, with
    ``recursive``); returns how many. A rerun calls it before writing there again: a killed
    process cannot clean up after itself, and a finished file never needs its temp."""
    root = Path(root)
    found = root.rglob(".*.tmp*") if recursive else root.glob(".*.tmp*")
    stale = [p for p in found if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_atomic(
    target: str | os.PathLike[str], data: str | bytes | Writer, suffix: str = ".tmp"
) -> Path:
    """Replace ``target`` with ``data`` (text, bytes, or a writer called with a temp path)."""
    if isinstance(data, str | bytes):
        raw = data.encode() if isinstance(data, str) else data
        tmp = write_temp(target, lambda path: path.write_bytes(raw), suffix)
    else:
        tmp = write_temp(target, data, suffix)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Path(target)
