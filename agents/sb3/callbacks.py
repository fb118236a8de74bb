"""SB3 callbacks of a training run: crash-safe checkpoints, scheduled evaluation, the clean stop
and a progress bar. Schedules count environment steps, not callback calls, so they survive a
resume."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from embodied.agents.sb3.policy import stash_normalizer
from embodied.agents.trainer import StopFlag
from embodied.atomic import write_atomic


class AtomicCheckpoint(CheckpointCallback):
    """SB3's CheckpointCallback, made crash-safe and resumable.

    Saves every ``save_every`` *environment* steps (not callback calls, so the schedule
    survives a resume), replay buffer first and model last (the model file commits the
    checkpoint), each through a temp file + ``os.replace``, and keeps only the newest.
    """

    def __init__(self, save_every: int, save_path: Path, name_prefix: str):
        super().__init__(1, str(save_path), name_prefix, save_replay_buffer=True)
        self.save_every = save_every
        self.saved_at = 0

    def _on_training_start(self) -> None:
        self.saved_at = self.num_timesteps  # a resume starts at a saved checkpoint

    def _on_step(self) -> bool:
        if self.num_timesteps // self.save_every > self.saved_at // self.save_every:
            self.save()
        return True

    def save(self, final: bool = False) -> None:
        """Save now; ``final`` saves again at a step already saved: SB3 calls callbacks before
        it stores the step's transition, so a save from ``_on_step`` lacks the last one."""
        if self.num_timesteps == self.saved_at and not final:
            return
        old = list(Path(self.save_path).glob(f"{self.name_prefix}_*"))
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is not None:
            rb = Path(self._checkpoint_path("replay_buffer_", extension="pkl"))
            write_atomic(rb, self.model.save_replay_buffer, ".tmp.pkl")
        model = Path(self._checkpoint_path(extension="zip"))
        stash_normalizer(self.model)
        write_atomic(model, self.model.save, ".tmp.zip")
        keep = {model.name, f"{self.name_prefix}_replay_buffer_{self.num_timesteps}_steps.pkl"}
        for path in old:
            if path.name not in keep:
                path.unlink(missing_ok=True)
        self.saved_at = self.num_timesteps


class ScheduledEval(EvalCallback):
    """SB3's EvalCallback every ``every`` *environment* steps (a schedule that survives a
    resume), with deterministic actions; ``evaluate()`` runs one now (the end of training)."""

    def __init__(self, eval_env: VecEnv, every: int, episodes: int):
        super().__init__(
            eval_env,
            n_eval_episodes=episodes,
            eval_freq=1,
            deterministic=True,
            warn=False,
            verbose=0,
        )
        self.every = every
        self.done_at = 0
        self.started = 0.0
        self.eval_s = 0.0

    def _on_training_start(self) -> None:
        self.done_at = self.num_timesteps
        self.started, self.eval_s = time.perf_counter(), 0.0

    def _on_step(self) -> bool:
        if self.num_timesteps // self.every > self.done_at // self.every:
            return self.evaluate()
        return True

    def evaluate(self) -> bool:
        """One evaluation now; logs ``time/train_s``, this run's seconds of training so far
        (evaluations left out), beside its ``eval/`` rows."""
        self.done_at = self.num_timesteps
        began = time.perf_counter()
        self.logger.record("time/train_s", began - self.started - self.eval_s)
        go_on = super()._on_step()  # eval_freq=1: the parent evaluates on every call
        self.eval_s += time.perf_counter() - began
        return go_on


class StopOnRequest(BaseCallback):
    """Ends ``learn`` at the next step once Ctrl-C/SIGTERM set the flag."""

    def __init__(self, flag: StopFlag):
        super().__init__()
        self.flag = flag

    def _on_step(self) -> bool:
        return not self.flag.requested


class TqdmProgress(BaseCallback):
    """A tqdm bar over environment steps (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int, desc: str, eval_cb: EvalCallback | None):
        super().__init__()
        self.bar = tqdm(total=total, desc=desc, unit="step")
        self.eval_cb = eval_cb
        self.shown = -np.inf

    def _on_training_start(self) -> None:
        self.bar.n = self.num_timesteps
        self.bar.refresh()

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        if self.eval_cb is not None and self.eval_cb.last_mean_reward != self.shown:
            self.shown = self.eval_cb.last_mean_reward
            self.bar.set_postfix(eval_return=f"{self.shown:.3g}")
        return True

    def _on_training_end(self) -> None:
        self.bar.close()
