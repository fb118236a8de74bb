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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from embodied.agents.nets import load_checkpoint, resolve_device, save_checkpoint
from embodied.agents.trainer import StopFlag, Trainer, resumed_rows
from embodied.dataset import Dataset, read_manifest
from embodied.registration import TASKS
from embodied.results import write_atomic

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
LOSSES = "losses.csv"
FORMAT = "embodied-train-checkpoint/1"
MODES = {"state": ("state",), "pixels": ("pixels",), "state+pixels": ("state", "pixels")}


class LossLog:
    """Chunk-mean losses to ``losses.csv`` and TensorBoard; a resume drops rows past its step."""

    def __init__(self, out_dir: Path, start_step: int):
        self.path = out_dir / LOSSES
        fields, rows = resumed_rows(self.path, "step", start_step)
        self.fields: list[str] | None = fields or None
        if self.fields:
            self._rewrite(rows)
        else:  # a fresh run (or one killed before its first checkpoint) starts a fresh log
            self.path.unlink(missing_ok=True)
        self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step or None)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        assert self.fields is not None
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
    30/30; SAC's demonstrations on CupCarry) is set for that task alone. Training (world
    models and SB3) and the policy factories all merge it; a task's settings may add keys a
    composed (struct) config lacks.
    """
    table = agent_cfg.get("per_task") or {}
    unknown = sorted(set(table) - set(TASKS))
    if unknown:
        raise ValueError(f"per_task names unknown tasks {unknown}; valid: {sorted(TASKS)}")
    if task not in table:
        return agent_cfg
    with open_dict(agent_cfg):
        merged = OmegaConf.merge(agent_cfg, table[task])
    assert isinstance(merged, DictConfig)
    OmegaConf.set_struct(merged, OmegaConf.is_struct(agent_cfg))
    return merged


class WorldModelTrainer(Trainer):
    """``agent_cfg.world_model`` fitted on a dataset in chunks of ``log_every`` steps, with a
    checkpoint every ``checkpoint_every`` steps (the module docstring lists the files)."""

    def __init__(
        self,
        agent_cfg: DictConfig,
        dataset_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        steps: int,
        seed: int,
        progress: bool,
        checkpoint_every: int,
        log_every: int,
        env_id: str | None,
    ):
        if steps < 1 or checkpoint_every < 1 or log_every < 1:
            raise ValueError(
                f"need steps >= 1, checkpoint_every >= 1, log_every >= 1; "
                f"got {steps}, {checkpoint_every}, {log_every}"
            )
        manifest = read_manifest(dataset_dir, env_id)  # a foreign dataset fails before any work
        agent_cfg = for_task(agent_cfg, manifest.get("task"))
        super().__init__(agent_cfg, out_dir, steps, seed, progress)
        self.dataset_dir, self.task = dataset_dir, manifest.get("task")
        self.checkpoint_every, self.log_every = checkpoint_every, log_every
        self.wm_cfg = agent_cfg.world_model
        self.wm_yaml = OmegaConf.to_yaml(self.wm_cfg, resolve=True)
        self.trained_on = {
            "env_id": manifest["env_id"],
            "task": self.task,
            "split": manifest.get("split"),
            "family": agent_cfg.get("family"),
            "world_model": self.wm_cfg._target_,
        }
        self.cls = get_class(self.wm_cfg._target_)
        self.device = str(resolve_device(self.wm_cfg.get("device", "cpu")))  # "auto": CUDA
        self.saved_model: bytes | None = None
        self.log: LossLog | None = None

    def source(self) -> str:
        return f"{self.dataset_dir} holds {self.trained_on['env_id']!r} episodes"

    def restore(self) -> int:
        for stale in [*self.out.glob(".*.tmp"), *self.out.glob("*.model.tmp")]:  # a killed run's
            stale.unlink()
        set_torch_threads(self.agent_cfg.get("torch_threads"))
        step = 0
        if (self.out / CHECKPOINT).exists():
            ckpt = load_checkpoint(self.out / CHECKPOINT, FORMAT)
            self.check_resume(
                ckpt.get("trained_on"),
                ckpt["world_model"],
                self.wm_yaml,
                self.out / CHECKPOINT,
                "world_model config",
            )
            self.model = _model_from_bytes(self.cls, ckpt["model"], self.out, self.device)
            if ckpt["train_state"] is not None and hasattr(self.model, "load_train_state"):
                self.model.load_train_state(ckpt["train_state"])
            step, self.saved_model = int(ckpt["step"]), ckpt["model"]
            if self.progress:
                name = self.agent_cfg.get("name", self.cls.__name__)
                print(f"resuming {name} from step {step} in {self.out}")
        else:
            self.model = self.build()
        # a damaged dataset fails here, before out_dir is made or touched
        modes = MODES[self.model.obs_mode]
        self.dataset = None if self.done(step) else Dataset.load(self.dataset_dir, obs_modes=modes)
        return step

    def build(self) -> Any:
        """A fresh model, seeded; the frame models also get the task (``reward_labels``)."""
        torch.manual_seed(self.seed)
        cls, wm_cfg = self.cls, self.wm_cfg
        kwargs = {"seed": self.seed} if _accepts(cls, "seed") and "seed" not in wm_cfg else {}
        # only a model that names it (the frame models): a **kwargs one passes it on to a
        # parent that may not take it (AdaptiveModel -> StateModel)
        if "task" in inspect.signature(cls).parameters and "task" not in wm_cfg:
            kwargs["task"] = self.task  # what reward_labels="task" resolves against
        if "device" in wm_cfg:
            kwargs["device"] = self.device
        return instantiate(wm_cfg, **kwargs)

    def done(self, step: int) -> bool:
        return step >= self.steps and self.saved_model is not None

    def finished(self, step: int) -> dict[str, Any]:
        assert self.saved_model is not None
        write_atomic(self.out / MODEL_FILE, self.saved_model)
        return {"step": step, "losses": {}, "wall_s": 0.0}

    def prepare(self, step: int) -> None:
        self.log = LossLog(self.out, step)

    def fit(self, step: int, stop: StopFlag) -> dict[str, Any]:
        log, start = self.log, time.perf_counter()
        assert log is not None
        means: dict[str, float] = {}
        saved, every = step, self.checkpoint_every
        bar = tqdm(
            total=self.steps,
            initial=step,
            desc=f"train {self.cls.__name__}",
            disable=not self.progress,
        )
        while step < self.steps and not stop.requested:
            n = min(self.log_every, self.steps - step, (step // every + 1) * every - step)
            losses = self.model.fit(self.dataset, steps=n)
            step += n
            means = log.log(step, time.perf_counter() - start, losses)
            bar.update(n)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:3]})
            if step % every == 0:
                self.save(step)
                saved = step
        if saved != step or not (self.out / MODEL_FILE).exists():
            self.save(step)
        bar.close()
        return {"step": step, "losses": means, "wall_s": time.perf_counter() - start}

    def save(self, step: int) -> None:
        save_training(self.model, self.out, step, self.wm_yaml, self.trained_on)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


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
    task's data is never resumed. Returns the summary: ``out_dir``, ``steps``, ``step``,
    ``interrupted``, ``losses`` (the last chunk's means), ``wall_s``.
    """
    if not isinstance(agent_cfg, DictConfig):
        agent_cfg = OmegaConf.create(agent_cfg)
    return WorldModelTrainer(
        agent_cfg,
        dataset_dir,
        out_dir,
        steps,
        seed,
        progress,
        checkpoint_every,
        log_every,
        env_id,
    ).train()
