"""Training any world-model family from a dataset: progress, logs, atomic checkpoints, resume.

The loop only needs the WorldModel protocol's ``fit(dataset, steps)``, called in chunks of
``log_every`` steps; ``fit`` must *continue* training on each call (keep the optimizer across
calls; a model with nothing to iterate does its work on the first call). Two optional methods
make resumption exact: ``train_state() -> dict`` (optimizer, RNG) and ``load_train_state(dict)``.

Files in ``out_dir``:
- ``checkpoint.pt``: step, the saved model's bytes, ``train_state``, the world-model config;
  replaced atomically every ``checkpoint_every`` steps, at the end and on Ctrl-C (the commit point).
- ``model.pt``: the model as ``save`` wrote it (what ``make_policy`` loads), replaced after it.
- ``losses.csv`` (chunk means by step), ``tb/`` (TensorBoard), ``agent.yaml`` (resolved config).
A rerun with the same config resumes from ``checkpoint.pt``; SIGINT/SIGTERM stop after the
current chunk with a checkpoint written (a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import csv
import inspect
import io
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from embodied.agents.nets import load_checkpoint, resolve_device, save_checkpoint
from embodied.checkpoints import write_trained_on
from embodied.dataset import Dataset, read_manifest
from embodied.registration import TASKS
from embodied.results import write_atomic

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
LOSSES = "losses.csv"
FORMAT = "embodied-train-checkpoint/1"
MODES = {"state": ("state",), "pixels": ("pixels",), "state+pixels": ("state", "pixels")}


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


class LossLog:
    """Chunk-mean losses to ``losses.csv`` and TensorBoard; a resume drops rows past its step."""

    def __init__(self, out_dir: Path, start_step: int):
        self.path = out_dir / LOSSES
        self.fields: list[str] | None = None
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames and list(reader.fieldnames)
                # a row torn by a kill (cut short, or run into the next) is dropped too
                rows = [
                    r
                    for r in reader
                    if None not in r
                    and (r["step"] or "").isdigit()
                    and int(r["step"]) <= start_step
                ]
            self._rewrite(rows)
        self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step or None)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        if self.fields is None:
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.fields)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, text.getvalue())

    def log(self, step: int, wall_s: float, losses: dict[str, list[float]]) -> dict[str, float]:
        means = {k: float(np.mean(v)) for k, v in losses.items() if len(v)}
        row = {"step": step, "wall_s": round(wall_s, 3), **means}
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for key, value in means.items():
            self.tb.add_scalar(f"train/{key}", value, step)
        return means

    def close(self) -> None:
        self.tb.close()


def set_torch_threads(threads: int | None) -> None:
    """Apply an agent's ``torch_threads``: on a small shared CPU, 1 thread avoids the spin-waits
    that made 2-thread planning ~40x slower here (small matmuls, other processes busy)."""
    if threads:
        torch.set_num_threads(int(threads))


def _accepts(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def load_model(cls: type, path: str | os.PathLike, device: str = "cpu") -> Any:
    """``cls.load(path)``, passing ``device`` when the class takes one."""
    if _accepts(cls.load, "device"):
        return cls.load(str(path), device=device)
    return cls.load(str(path))


def _model_bytes(model: Any, out_dir: Path) -> bytes:
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".model.tmp")
    os.close(fd)
    try:
        model.save(tmp)
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def _model_from_bytes(cls: type, data: bytes, out_dir: Path, device: str) -> Any:
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".model.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_model(cls, tmp, device)
    finally:
        os.unlink(tmp)


def save_training(
    model: Any, out_dir: Path, step: int, wm_yaml: str, trained_on: dict[str, Any]
) -> None:
    """Checkpoint (the commit point) first, then ``model.pt`` from the same bytes."""
    data = _model_bytes(model, out_dir)
    train_state = model.train_state() if hasattr(model, "train_state") else None
    save_checkpoint(
        {
            "step": step,
            "model": data,
            "train_state": train_state,
            "world_model": wm_yaml,
            "trained_on": trained_on,
        },
        out_dir / CHECKPOINT,
        FORMAT,
    )
    write_atomic(out_dir / MODEL_FILE, data)


def for_task(agent_cfg: DictConfig, task: str | None) -> DictConfig:
    """The agent config for ``task``: its ``per_task[task]`` merged over it.

    One agent config serves every task of a bench; a setting that helps one task and hurts
    another (``state``'s terminal value: CupPush 13/30 vs 6/30 without, CupCarry 25/30 vs
    30/30) is set for that task alone. Training and ``mpc.make_policy`` both merge it.
    """
    table = agent_cfg.get("per_task") or {}
    unknown = sorted(set(table) - set(TASKS))
    if unknown:
        raise ValueError(f"per_task names unknown tasks {unknown}; valid: {sorted(TASKS)}")
    if task not in table:
        return agent_cfg
    return OmegaConf.merge(agent_cfg, table[task])


def train_world_model(
    agent_cfg: DictConfig | dict,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    steps: int,
    seed: int = 0,
    progress: bool = True,
    checkpoint_every: int = 500,
    log_every: int = 25,
    env_id: str | None = None,
) -> dict[str, Any]:
    """Train ``agent_cfg.world_model`` on a dataset up to ``steps`` total steps (resuming).

    With ``env_id``, a dataset of another task is refused; a checkpoint trained on another
    task's data is never resumed.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    if steps < 1 or checkpoint_every < 1 or log_every < 1:
        raise ValueError(
            f"need steps >= 1, checkpoint_every >= 1, log_every >= 1; "
            f"got {steps}, {checkpoint_every}, {log_every}"
        )
    manifest = read_manifest(dataset_dir, env_id)  # a foreign dataset fails before any work
    agent_cfg = for_task(agent_cfg, manifest.get("task"))
    wm_cfg = agent_cfg.world_model
    trained_on = {
        "env_id": manifest["env_id"],
        "task": manifest.get("task"),
        "split": manifest.get("split"),
        "family": agent_cfg.get("family"),
        "world_model": wm_cfg._target_,
    }
    out = Path(out_dir)
    for stale in [*out.glob(".*.tmp"), *out.glob("*.model.tmp")]:  # left by a killed run
        stale.unlink()
    set_torch_threads(agent_cfg.get("torch_threads"))
    wm_yaml = OmegaConf.to_yaml(wm_cfg, resolve=True)
    cls = get_class(wm_cfg._target_)
    device = str(resolve_device(wm_cfg.get("device", "cpu")))  # "auto": CUDA when present
    step = 0
    if (out / CHECKPOINT).exists():
        ckpt = load_checkpoint(out / CHECKPOINT, FORMAT)
        before = ckpt.get("trained_on") or {}  # another task first: its config may differ too
        if before.get("env_id", manifest["env_id"]) != manifest["env_id"]:
            raise ValueError(
                f"{out} holds a model trained on {before['env_id']!r} data; {dataset_dir} holds "
                f"{manifest['env_id']!r} episodes: use another out_dir for another task"
            )
        if ckpt["world_model"] != wm_yaml:
            raise ValueError(
                f"{out} holds a checkpoint of a different world_model config; use another "
                f"out_dir or delete {out / CHECKPOINT}.\ncheckpoint:\n{ckpt['world_model']}"
                f"requested:\n{wm_yaml}"
            )
        model = _model_from_bytes(cls, ckpt["model"], out, device)
        if ckpt["train_state"] is not None and hasattr(model, "load_train_state"):
            model.load_train_state(ckpt["train_state"])
        step = int(ckpt["step"])
        if progress:
            print(f"resuming {agent_cfg.get('name', cls.__name__)} from step {step} in {out}")
    else:
        torch.manual_seed(seed)
        kwargs = {"seed": seed} if _accepts(cls, "seed") and "seed" not in wm_cfg else {}
        # only a model that names it (the frame models): a **kwargs one passes it on to a
        # parent that may not take it (AdaptiveModel -> StateModel)
        if "task" in inspect.signature(cls).parameters and "task" not in wm_cfg:
            kwargs["task"] = manifest.get("task")  # what reward_labels="task" resolves against
        if "device" in wm_cfg:
            kwargs["device"] = device
        model = instantiate(wm_cfg, **kwargs)
    summary: dict[str, Any] = {"out_dir": str(out), "steps": steps, "interrupted": False}
    done = step >= steps and (out / CHECKPOINT).exists()
    # a damaged dataset fails here, before out_dir is made or touched
    dataset = None if done else Dataset.load(dataset_dir, obs_modes=MODES[model.obs_mode])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "agent.yaml", OmegaConf.to_yaml(agent_cfg, resolve=True))
    write_trained_on(out, trained_on)
    if dataset is None:
        write_atomic(out / MODEL_FILE, ckpt["model"])
        return {**summary, "step": step, "losses": {}, "wall_s": 0.0}
    log = LossLog(out, step)
    start = time.perf_counter()
    means: dict[str, float] = {}
    saved = step
    try:
        with graceful_stop() as stop:
            bar = tqdm(
                total=steps, initial=step, desc=f"train {cls.__name__}", disable=not progress
            )
            while step < steps and not stop.requested:
                boundary = (step // checkpoint_every + 1) * checkpoint_every
                n = min(log_every, steps - step, boundary - step)
                losses = model.fit(dataset, steps=n)
                step += n
                means = log.log(step, time.perf_counter() - start, losses)
                bar.update(n)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:3]})
                if step % checkpoint_every == 0:
                    save_training(model, out, step, wm_yaml, trained_on)
                    saved = step
            if saved != step or not (out / MODEL_FILE).exists():
                save_training(model, out, step, wm_yaml, trained_on)
            bar.close()
            summary["interrupted"] = stop.requested
    finally:
        log.close()
    return {**summary, "step": step, "losses": means, "wall_s": time.perf_counter() - start}
