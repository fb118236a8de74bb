"""The lifecycle every trainer shares: refuse another config, write metadata, train, stop cleanly.

A trainer (the world-model loop in ``agents/training.py``, SB3 in ``agents/sb3/trainer.py``)
subclasses :class:`Trainer` and fills in four steps; :meth:`Trainer.train` runs them in order:

1. ``restore()``: the step the checkpoint in ``out_dir`` reached (0 for a fresh run), after
   :meth:`Trainer.check_resume` refused a checkpoint of another task or config;
2. the metadata, written by the base: ``agent.yaml`` (the resolved config) and
   ``trained_on.json`` (what ``embodied.checkpoints.check_trained_on`` reads before use);
3. ``finished(step)`` when there is nothing left to do (``done(step)``), else ``prepare(step)`` and
   ``fit(step, stop)`` under :func:`graceful_stop`: the first Ctrl-C (or SIGTERM) sets
   ``stop.requested``, the loop saves a checkpoint and returns, a rerun continues from it;
4. ``close()``, always.

Logs of a resumed run keep the rows up to its checkpoint (:func:`resumed_rows`).
"""

from __future__ import annotations

import csv
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embodied.atomic import write_atomic
from embodied.checkpoints import write_trained_on


class StopFlag:
    """Set by the first SIGINT/SIGTERM; the loop checks it between chunks."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """First Ctrl-C (or SIGTERM) asks to stop; the second raises KeyboardInterrupt."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only live in the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print("\nstopping after this chunk, checkpoint follows (Ctrl-C again to abort)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def resumed_rows(path: Path, step_key: str, upto: int) -> tuple[list[str], list[dict[str, str]]]:
    """(fields, rows) of a CSV log that a run resumed at step ``upto`` keeps: rows at or before
    that step, without the ones a kill tore (cut short, or run into the next row)."""
    if upto <= 0 or not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        whole = (r for r in reader if None not in r and None not in r.values())
        rows = [r for r in whole if _step(r.get(step_key)) <= upto]
    return fields, rows


def _step(text: str | None) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("inf")  # no step: never kept


class Trainer(ABC):
    """One training run of ``agent_cfg`` into ``out_dir`` up to ``steps`` (resuming).

    Subclasses set ``trained_on`` (the ``trained_on.json`` record: ``env_id``, ``task``,
    ``split``, ``family``, ``world_model``) before :meth:`train` and implement the steps below.
    """

    trained_on: dict[str, Any]

    def __init__(
        self, agent_cfg: DictConfig, out_dir: str | Path, steps: int, seed: int, progress: bool
    ):
        self.agent_cfg, self.out = agent_cfg, Path(out_dir)
        self.steps, self.seed, self.progress = steps, seed, progress

    @abstractmethod
    def restore(self) -> int:
        """The step of the checkpoint in ``out_dir`` (0: none), checked by :meth:`check_resume`;
        anything that can fail on bad input fails here, before ``out_dir`` is written."""

    @abstractmethod
    def finished(self, step: int) -> dict[str, Any]:
        """Nothing left to train: make sure the model file is there; the summary's entries."""

    @abstractmethod
    def prepare(self, step: int) -> None:
        """Build what :meth:`fit` needs (envs, demonstrations, logs); no signal handler yet."""

    @abstractmethod
    def fit(self, step: int, stop: StopFlag) -> dict[str, Any]:
        """Train from ``step`` until ``steps`` or ``stop.requested``, save; the summary's entries
        (``step``, ``wall_s``, ...)."""

    def done(self, step: int) -> bool:
        """Whether the checkpoint :meth:`restore` found already reached ``steps``."""
        return step >= self.steps

    def close(self) -> None:  # noqa: B027 (a no-op by default, not abstract)
        """Release what :meth:`prepare` built, after :meth:`fit` returned or raised."""

    def check_resume(
        self, saved: dict[str, Any] | None, saved_cfg: str | None, cfg: str, where: Path, what: str
    ) -> None:
        """Refuse to continue the checkpoint at ``where`` if it is of another task (``saved``:
        its ``trained_on``), then if it is of another config (``saved_cfg`` against ``cfg``, the
        text of ``what``); None: the checkpoint has no such record."""
        before, now = (saved or {}).get("env_id"), self.trained_on["env_id"]
        if before is not None and before != now:
            raise ValueError(
                f"{self.out} holds a model trained on {before!r} data; {self.source()}: use "
                f"another out_dir for another task"
            )
        if saved_cfg is not None and saved_cfg != cfg:
            raise ValueError(
                f"{self.out} holds checkpoints of a different {what}; use another out_dir or "
                f"delete {where}.\ncheckpoint:\n{saved_cfg}requested:\n{cfg}"
            )

    def source(self) -> str:
        """What this run trains on, for the error that refuses another task's checkpoint."""
        return f"this run trains on {self.trained_on['env_id']!r}"

    def write_metadata(self) -> None:
        """``agent.yaml`` (the resolved config) and ``trained_on.json`` beside the model."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "agent.yaml", OmegaConf.to_yaml(self.agent_cfg, resolve=True))
        write_trained_on(self.out, self.trained_on)

    def train(self) -> dict[str, Any]:
        """The lifecycle (module docstring); a summary with ``out_dir``, ``steps``, ``step``,
        ``interrupted``, ``wall_s`` and the subclass's entries."""
        step = self.restore()
        self.write_metadata()
        summary: dict[str, Any] = {"out_dir": str(self.out), "steps": self.steps}
        if self.done(step):
            return {**summary, "interrupted": False, **self.finished(step)}
        try:
            self.prepare(step)
            with graceful_stop() as stop:
                summary.update(self.fit(step, stop))
            summary["interrupted"] = stop.requested
        finally:
            self.close()
        return summary
