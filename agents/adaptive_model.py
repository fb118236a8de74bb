"""The ``adaptive`` world model: the state ensemble conditioned on the episode's recent transitions.

The ``state`` model predicts one average world: the physics of the ``train`` split pooled. Its
episodes vary that physics over the in-distribution ranges (cup mass, grip force, frictions,
gains...), so what a transition does depends on physics the state vector does not show. This
model reads it from the episode itself, in context: the last ``context_steps`` transitions
(state, action, state delta and the change of the relative geometry, e.g. the cup sliding
against the hand) are each embedded by a small MLP and averaged into a ``context_dim`` vector,
which the dynamics ensemble and the failure head read beside the state (reward stays a function
of the state). Nothing reads the episode's physics parameters: only observed transitions.

Training draws, for every sampled transition, the transitions just before it in its episode,
cut to a random length in 0..K, so the model knows both an episode's first step (no context:
the zero vector) and a long history. At plan time ``observe`` keeps the episode's last K
transitions as the belief and sets the context every ``step`` of that plan uses; ``encode``
(one observation, no history) resets it to none. Everything else (TS-inf membership, constant
entries copied, clamped reward, save/load) is the ``StateModel``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from embodied.agents.nets import MLP, Normalizer, state_tensor
from embodied.agents.state_model import StateConfig, StateModel
from embodied.dataset import Dataset

FORMAT = "embodied-adaptive-model/1"


@dataclass
class History:
    """The belief at plan time: the last observed state and the episode's recent transitions."""

    state: torch.Tensor  # (B, D) raw state
    feats: torch.Tensor  # (B, k, F) normalised transition features, k <= context_steps


@dataclass
class AdaptiveConfig(StateConfig):
    """The adaptive model's settings: the state model's and the context's."""

    context_steps: int = 8  # K: the recent transitions read
    context_dim: int = 8  # the context vector's width
    context_hidden: list[int] = field(default_factory=lambda: [64, 64])

    def __post_init__(self) -> None:
        self.context_hidden = list(self.context_hidden)
        if self.context_steps < 1 or self.context_dim < 1:
            raise ValueError(
                f"context_steps and context_dim must be >= 1; "
                f"got {self.context_steps}, {self.context_dim}"
            )
        super().__post_init__()


class AdaptiveModel(StateModel):
    """``StateModel`` whose dynamics and failure head also read an embedding of recent steps."""

    Config = AdaptiveConfig
    config: AdaptiveConfig
    family = "adaptive"
    checkpoint_format = FORMAT

    def __init__(self, *, device: str = "cpu", **settings: Any):
        """``settings``: ``AdaptiveConfig``'s fields (the state model's and the context's)."""
        super().__init__(device=device, **settings)
        self.context_steps = self.config.context_steps
        self.context_dim = self.config.context_dim
        self._context: torch.Tensor | None = None  # (1 or B, C): the episode's, at plan time

    # -- construction ---------------------------------------------------------------------
    def _build_nets(self, state_dim: int, action_dim: int) -> None:
        super()._build_nets(state_dim, action_dim)
        c = self.config
        feat = 2 * state_dim + action_dim + self.relative.dim
        self.context_norm = Normalizer(feat)
        self.context_net = MLP(feat, self.context_dim, c.context_hidden, c.act)

    def _raw_features(self, s: torch.Tensor, a: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """One transition as the context sees it: state, action, delta, relative-geometry change."""
        moved = self.relative(s2) - self.relative(s)
        return torch.cat([s, a.to(s.dtype).clamp(-1.0, 1.0), s2 - s, moved], -1)

    @torch.no_grad()
    def _fit_normalisers(self, data: dict[str, torch.Tensor]) -> None:
        super()._fit_normalisers(data)
        raw = self._raw_features(data["state"], data["action"], data["next"])
        self.context_norm.fit(raw.cpu())
        self.to(self.device)

    def _tensors(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """The state model's tensors plus, per transition, its K predecessors in the episode."""
        data = super()._tensors(dataset)
        if "previous" not in data:
            k = self.context_steps
            pos = np.concatenate([np.arange(n) for n in dataset.lengths])  # step in episode
            back = np.arange(k, 0, -1)  # oldest first
            rows = np.arange(len(pos))[:, None] - back[None, :]
            rows[pos[:, None] - back[None, :] < 0] = -1  # before the episode's start
            data["previous"] = torch.as_tensor(rows, device=self.device)
        return data

    # -- context --------------------------------------------------------------------------
    @staticmethod
    def _pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., K, C) per-transition embeddings, (..., K) validity -> (..., C) masked mean."""
        h = h * mask.unsqueeze(-1)
        return h.sum(-2) / mask.sum(-1, keepdim=True).clamp(min=1.0)

    def _embed(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., K, F) normalised features, (..., K) validity -> (..., C) context."""
        return self._pool(self.context_net(feats), mask)

    def _train_context(self, data: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        if "context" not in data:  # every transition's features, fixed once normalisers are
            with torch.no_grad():
                raw = self._raw_features(data["state"], data["action"], data["next"])
                data["context"] = self.context_norm(raw)
        prev = data["previous"][idx]  # (E, B, K), -1 before the episode's start
        keep = torch.as_tensor(
            self._rng.integers(0, self.context_steps + 1, size=(*idx.shape, 1)),
            device=self.device,
        )
        recent = torch.arange(self.context_steps, 0, -1, device=self.device) <= keep
        mask = ((prev >= 0) & recent).to(data["state"].dtype)
        # embed each distinct transition once: far fewer rows than E * B * K
        rows, inverse = torch.unique(prev.clamp(min=0), return_inverse=True)
        return self._pool(self.context_net(data["context"][rows])[inverse], mask)

    def _plan_context(self, rows: int) -> torch.Tensor:
        if self._context is None:
            return torch.zeros(rows, self.context_dim, device=self.device)
        return self._context.expand(rows, -1) if len(self._context) == 1 else self._context

    def set_context(self, history: History | None) -> None:
        """Condition every following ``step`` on ``history`` (None: no transitions seen)."""
        if history is None or history.feats.shape[1] == 0:
            self._context = None
            return
        mask = torch.ones(history.feats.shape[:2], device=self.device)
        with torch.no_grad():
            self._context = self._embed(history.feats, mask)

    # -- planning -------------------------------------------------------------------------
    def encode(self, obs: Any) -> torch.Tensor:
        """The raw state; an observation alone carries no history, so the context resets."""
        self.set_context(None)
        return super().encode(obs)

    @torch.no_grad()
    def observe(
        self, belief: History | None, action: Any, obs: Any
    ) -> tuple[History, torch.Tensor]:
        """Append the transition (previous state, ``action``, this state) to the episode's last
        K and condition the plan on them; ``belief`` None starts an episode (action ignored)."""
        self._check_built()
        s = state_tensor(obs, self.device)
        if belief is None:
            belief = History(
                s, torch.zeros(len(s), 0, self.context_norm.mean.numel(), device=s.device)
            )
        else:
            a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)
            raw = self._raw_features(belief.state, a.reshape(1, -1).expand(len(s), -1), s)
            new = self.context_norm(raw)[:, None]
            feats = torch.cat([belief.feats, new], 1)[:, -self.context_steps :]
            belief = History(s, feats)
        self.set_context(belief)
        return belief, s
