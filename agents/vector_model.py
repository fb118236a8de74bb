"""What the world models over the env's state vector (state, adaptive, transformer) share.

Their networks are built once the data's dimensions are known: on the first ``fit`` (with the
normalisers fitted to that dataset) or from a checkpoint's. ``fit`` is one loop for all: AdamW,
made once and kept across calls, around the family's own gradient step (``_train_step``), every
step's losses logged; ``train_state`` lets a resumed run continue exactly. A checkpoint holds
the settings, dimensions, state labels and weights in the family's format. ``imagine`` draws
the open-loop prediction with the env's MuJoCo.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from embodied.agents.nets import Normalizer, load_checkpoint, save_checkpoint
from embodied.dataset import Dataset
from embodied.protocols import Imagination


class VectorModel(nn.Module):
    """Base of the state-vector models: a family builds its networks (``build``), reads a
    dataset (``_tensors``, ``_fit_normalisers``), takes its gradient step (``_train_step``) and
    predicts the state ``imagine`` draws next (``_imagine_step``)."""

    checkpoint_format: str
    config: Any  # the family's settings: a dataclass or a dict
    device: torch.device
    state_dim: int  # 0 until built
    action_dim: int
    state_labels: list[str]
    _optimizer: torch.optim.Optimizer | None
    _rng: np.random.Generator  # draws the training batches
    # what _fit_delta_and_heads fits, made by ``build``
    delta_norm: Normalizer
    feature_norm: Normalizer
    relative: nn.Module
    constant: torch.Tensor
    reward_range: torch.Tensor

    @property
    def built(self) -> bool:
        return self.state_dim > 0

    def _check_built(self) -> None:
        if not self.built:
            raise RuntimeError(
                f"{type(self).__name__} has not been fitted or loaded yet; call fit or load"
            )

    def settings_dict(self) -> dict[str, Any]:
        config = self.config
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)

    def build(self, state_dim: int, action_dim: int, state_labels: Sequence[str] = ()) -> None:
        """Create the networks once the data's dimensions are known."""
        raise NotImplementedError

    def encode(self, obs: Any) -> torch.Tensor:
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------
    def fit(
        self, dataset: Dataset, steps: int, progress: bool = False, **kwargs: Any
    ) -> dict[str, list[float]]:
        """Train for ``steps`` more gradient steps (optimizer and RNG persist across calls)."""
        data = self._tensors(dataset)
        if not self.built:
            self.build(data["state"].shape[1], data["action"].shape[1], dataset.state_labels)
            self._fit_normalisers(data)
        if self._optimizer is None:
            self._optimizer = self._new_optimizer()
        self.train()
        keys = self._loss_keys()
        losses: dict[str, list[float]] = {k: [] for k in keys}
        for _ in range(steps):
            for key, term in zip(keys, self._train_step(data), strict=True):
                losses[key].append(term.item())
        self.eval()
        return losses

    def _new_optimizer(self) -> torch.optim.Optimizer:
        s = self.settings_dict()
        return torch.optim.AdamW(self.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])

    def _tensors(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """The dataset's arrays on the device, as ``_train_step`` reads them."""
        raise NotImplementedError

    def _fit_normalisers(self, data: dict[str, torch.Tensor]) -> None:
        """Statistics of the first dataset, fitted once and saved with the weights."""
        raise NotImplementedError

    def _fit_delta_and_heads(
        self, delta: torch.Tensor, states: torch.Tensor, data: dict[str, torch.Tensor]
    ) -> None:
        """What every family's dynamics and heads read of the first dataset: the normalisers of
        the deltas and of the states' features, the entries that never change, the range of
        rewards of the steps that did not fail."""
        self.delta_norm.fit(delta.cpu())
        self.feature_norm.fit(torch.cat([states, self.relative(states)], -1).cpu())
        self.constant.copy_(delta.std(0) < 1e-6)
        ok = data["reward"][data["dropped"] < 0.5]
        if len(ok):
            self.reward_range.copy_(torch.stack([ok.min(), ok.max()]))

    def _loss_keys(self) -> tuple[str, ...]:
        """The names of what ``_train_step`` returns, in its order."""
        raise NotImplementedError

    def _train_step(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One gradient step on a batch drawn from ``data``; its losses, as ``_loss_keys``."""
        raise NotImplementedError

    def train_state(self) -> dict[str, Any]:
        """Optimizer and RNG state and the family's own (``_resume_state``), so a resumed run
        continues exactly."""
        return {
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "rng": self._rng.bit_generator.state,
            **self._resume_state(),
        }

    def load_train_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            self._optimizer = self._new_optimizer()
            self._optimizer.load_state_dict(state["optimizer"])
        self._rng.bit_generator.state = state["rng"]
        self._resume(state)

    def _resume_state(self) -> dict[str, Any]:
        """The family's own training state beyond the optimizer and the batches' RNG."""
        raise NotImplementedError

    def _resume(self, state: dict[str, Any]) -> None:
        """Restore what ``_resume_state`` saved."""
        raise NotImplementedError

    # -- imagination ----------------------------------------------------------------------
    def _imagine_step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next state (1, D) ``imagine`` predicts from ``z`` (1, D) under ``action`` (1, A)."""
        raise NotImplementedError

    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        """Open-loop prediction from ``obs0`` under ``actions`` (H, A), each predicted state
        drawn by the env's MuJoCo, with the cup's position where the state labels name it."""
        z = self.encode(obs0)[:1]
        states = []
        for a in np.asarray(actions, np.float32):
            z = self._imagine_step(z, torch.as_tensor(a, device=self.device)[None])
            states.append(z[0].cpu().numpy())
        pred = np.stack(states) if states else np.zeros((0, self.state_dim), np.float32)
        unwrapped = getattr(env, "unwrapped", env)
        frames = None
        if hasattr(unwrapped, "render_state") and len(pred):
            frames = np.stack([unwrapped.render_state(s) for s in pred])
        labels = list(getattr(unwrapped, "state_labels", None) or self.state_labels)
        names = self.settings_dict()["cup_pos_labels"]
        cup = None
        if all(n in labels for n in names):
            cup = pred[:, [labels.index(n) for n in names]]
        return Imagination(frames, "render" if frames is not None else "none", cup)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        self._check_built()
        save_checkpoint(
            {
                "config": self.settings_dict(),
                "dims": (self.state_dim, self.action_dim),
                "state_labels": self.state_labels,
                "weights": self.state_dict(),
            },
            path,
            self.checkpoint_format,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Any:
        ckpt = load_checkpoint(path, cls.checkpoint_format, map_location=device)
        model = cls(**ckpt["config"], device=device)
        model.build(*ckpt["dims"], ckpt["state_labels"])
        model.load_state_dict(ckpt["weights"])
        model.eval()
        return model
