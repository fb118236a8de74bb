"""A world model that remembers instead of learning: the nearest stored training transition.

Every training transition (state, action) -> (next state, reward, dropped) is kept. ``step`` finds,
for each query (z, a), the stored transition whose standardised (state, action) key is nearest
(Euclidean; the action part weighted so that its 4 entries count as much as the ~50 state entries)
and answers with that transition's outcome:

- ``mode="delta"`` (default): z' = z + (stored next state - stored state), i.e. the remembered
  *change* applied where the query is. The fixed parts of the state (the target) stay put and the
  arm moves from where it is, so the planner sees smooth consequences of its actions.
- ``mode="next"``: z' = the stored next state itself (trajectories snap onto the training data).

Reward and failure are the stored ones (p_fail is 0 or 1; a failed step's reward is clipped to
the range of the others, since the failure penalty is the planner's). In distribution this "looks
right by construction" (it replays what happened); out of distribution it replays training
physics, which is the point of including it. What it cannot do is generalise: the stored reward
was earned towards the neighbour's own target, and a failure is predicted only where a stored
transition failed from a nearby (state, action).

``imagine`` shows the stored frames of the retrieved next observations (``frames_kind=
"retrieved"``) when the training data had pixels, else MuJoCo renders of the retrieved next
states; ``cup_pos`` is read from the predicted states. Queries are one ``torch.cdist`` per chunk
of stored keys: ~2 ms for 64 queries against ~3k transitions on one core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from embodied.agents.nets import load_checkpoint, save_checkpoint, state_tensor
from embodied.dataset import Dataset
from embodied.protocols import Imagination

FORMAT = "embodied-retrieval-model/1"
MODES = ("delta", "next")
CUP_POS_LABELS = ("cup_x", "cup_y", "cup_z")


@dataclass
class RetrievalConfig:
    mode: str = "delta"  # "delta" | "next", see the module docstring
    action_weight: float | None = None  # None: sqrt(state_dim / action_dim)
    chunk: int = 8192  # stored keys compared at once (bounds memory at batch x chunk floats)
    store_frames: bool = True  # keep the next frames for ``imagine`` when the data has pixels
    rerank: int = 4  # candidates re-scored exactly, so a stored query finds itself


class RetrievalModel:
    """Nearest-neighbour world model over the physical state; see the module docstring."""

    family = "retrieval"
    obs_mode = "state"

    def __init__(
        self,
        mode: str = "delta",
        action_weight: float | None = None,
        chunk: int = 8192,
        store_frames: bool = True,
        rerank: int = 4,
        device: str = "cpu",
    ):
        self.config = RetrievalConfig(mode, action_weight, chunk, store_frames, rerank)
        if self.config.mode not in MODES:
            raise ValueError(f"unknown retrieval mode {self.config.mode!r}; valid: {list(MODES)}")
        self.device = torch.device(device)
        self.state_labels: list[str] = []
        self.image_size = 0
        self._tensors: dict[str, torch.Tensor] = {}
        self._frames: np.ndarray | None = None  # (N, S, S, 3) uint8 next frames, kept on CPU
        self._indexed: int | None = None  # id of the dataset indexed last

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, dataset: Dataset, steps: int = 0, **kwargs: Any) -> dict[str, list[float]]:
        """Index every transition of ``dataset`` once (``steps`` is ignored: nothing to train)."""
        if self._indexed != id(dataset):
            self._index(dataset)
            self._indexed = id(dataset)
        return {"transitions": [float(len(self._keys))]}

    def _index(self, dataset: Dataset) -> None:
        tr = dataset.transitions("state")
        state, next_state = tr["obs"], tr["next_obs"]
        action = tr["action"]
        mean, std = _stats(state)
        amean, astd = _stats(action)
        weight = self.config.action_weight
        if weight is None:
            weight = float(np.sqrt(state.shape[1] / action.shape[1]))
        # The failure penalty is the planner's business: a failed step keeps only a reward within
        # the range of the steps that did not fail.
        reward, dropped = tr["reward"], tr["dropped"]
        if (~dropped).any():
            reward = np.clip(reward, reward[~dropped].min(), reward[~dropped].max())
        t = {
            "state": state,
            "next_state": next_state,
            "action": action,
            "reward": reward,
            "dropped": dropped.astype(np.float32),
            "mean": mean,
            "std": std,
            "amean": amean,
            "astd": astd / weight,
        }
        self._tensors = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in t.items()}
        self._build_keys()
        self.state_labels = dataset.state_labels
        self.image_size = int(dataset.manifest.get("image_size") or 0)
        self._frames = None
        if self.config.store_frames and "pixels" in dataset.obs_modes:
            self._frames = dataset.transitions("pixels")["next_obs"]

    def _build_keys(self) -> None:
        t = {k: v.to(self.device) for k, v in self._tensors.items()}
        self._tensors = t
        self._keys = torch.cat([self._norm_state(t["state"]), self._norm_action(t["action"])], 1)
        self._delta = t["next_state"] - t["state"]

    def _norm_state(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self._tensors["mean"]) / self._tensors["std"]

    def _norm_action(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self._tensors["amean"]) / self._tensors["astd"]

    # -- prediction -------------------------------------------------------------------------
    def nearest(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Row index of the nearest stored transition for each (z, a) query: (B,) long."""
        self._check_fitted()
        q = torch.cat([self._norm_state(z), self._norm_action(action)], 1)
        best_d, best_i = [], []
        for start in range(0, len(self._keys), self.config.chunk):
            keys = self._keys[start : start + self.config.chunk]
            k = min(self.config.rerank, len(keys))
            d, i = torch.cdist(q, keys).topk(k, dim=1, largest=False)
            best_d.append(d)
            best_i.append(i + start)
        cand = torch.cat(best_i, 1)
        # cdist may use a fast, slightly inexact formula; re-score the candidates exactly.
        exact = (q[:, None, :] - self._keys[cand]).pow(2).sum(-1)
        return cand.gather(1, exact.argmin(1, keepdim=True)).squeeze(1)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        action = torch.as_tensor(action, dtype=torch.float32, device=self.device)
        idx = self.nearest(z, action)
        return self._outcome(z, idx)

    def _outcome(
        self, z: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self._tensors
        nxt = z + self._delta[idx] if self.config.mode == "delta" else t["next_state"][idx]
        return nxt, t["reward"][idx], t["dropped"][idx]

    def encode(self, obs: Any) -> torch.Tensor:
        """State observation(s) (D,) or (B, D), or a ``state+pixels`` dict -> (B, D) tensor."""
        return state_tensor(obs, self.device)

    @torch.no_grad()
    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        z = self.encode(obs0)[:1]
        acts = torch.as_tensor(np.asarray(actions, np.float32), device=self.device)
        states, rows = [], []
        for a in acts:
            idx = self.nearest(z, a[None])
            z = self._outcome(z, idx)[0]
            states.append(z[0].cpu().numpy())
            rows.append(int(idx[0]))
        states_np = np.stack(states)
        if self._frames is not None:
            frames = self._frames[rows]
        else:
            nxt = self._tensors["next_state"][rows].cpu().numpy()
            # the size of the frames it is compared with: the env's, else the training data's
            size = getattr(env.unwrapped, "image_size", None) or self.image_size or 64
            frames = np.stack([env.unwrapped.render_state(s, size=size) for s in nxt])
        cup = None
        if all(label in self.state_labels for label in CUP_POS_LABELS):
            cols = [self.state_labels.index(label) for label in CUP_POS_LABELS]
            cup = states_np[:, cols]
        return Imagination(frames=frames, frames_kind="retrieved", cup_pos=cup)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str) -> None:
        self._check_fitted()
        save_checkpoint(
            {
                "config": asdict(self.config),
                "tensors": {k: v.cpu() for k, v in self._tensors.items()},
                "frames": self._frames,
                "state_labels": self.state_labels,
                "image_size": self.image_size,
            },
            path,
            FORMAT,
        )

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> RetrievalModel:
        obj = load_checkpoint(path, FORMAT)
        model = cls(**obj["config"], device=device)
        model._tensors = obj["tensors"]
        model._frames = obj["frames"]
        model.state_labels = list(obj["state_labels"])
        model.image_size = int(obj["image_size"])
        model._build_keys()
        return model

    def _check_fitted(self) -> None:
        if not self._tensors:
            raise RuntimeError("RetrievalModel has no transitions yet: call fit(dataset) first")


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per column; near-constant columns get std 1 (no explosion, no vanishing)."""
    std = x.std(0)
    return x.mean(0), np.where(std < 1e-6, 1.0, std)
