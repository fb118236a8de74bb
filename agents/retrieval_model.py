"""A world model that remembers instead of learning: the nearest stored training transition.

Inputs (``agents/frames.py``): the frame, the robot's proprioception and the task's goal; the
cup and all physics come only through the frame. A frame is summarised by a fixed, data-fitted
projection: average-pooled to ``pool`` x ``pool`` x 3, then its first ``frame_dims`` principal
components. The planner's latent is ``z = [p, f, g]`` (raw proprioception, frame features, goal).

Every training transition is kept. ``step`` finds, for each query (z, a), the stored transition
whose standardised (p, f, a) key is nearest (Euclidean; each group weighted so that it counts
about as much as the proprioception) and answers with its outcome:

- ``mode="delta"`` (default): ``[p, f]`` plus the stored change (the remembered motion applied
  where the query is, so the planner sees smooth consequences of its actions);
- ``mode="next"``: the stored next ``[p, f]`` itself (trajectories snap onto the training data).

The goal is carried. p_fail is the share of the ``fail_neighbours`` nearest transitions that
failed (one neighbour's 0 or 1 let the planner thread between stored drops). The reward is
scored against the *query's own* goal: a second lookup finds the stored step whose next
``reward_labels`` entries minus its goal are nearest to the query's predicted ones minus the
query's goal, and answers with that step's reward (a failed step's reward clipped to the range
of the others: the failure penalty is the planner's). ``reward_labels="task"`` (the default)
takes the entries the task's env declares when they are proprioception (``agents/frames.py``).
Without ``reward_labels`` the neighbour's own reward is used. In distribution this replays what
happened; out of distribution it replays training physics, which is the point of including it.

``imagine`` shows the stored frames of the retrieved next observations (``frames_kind=
"retrieved"``) and the retrieved steps' cup positions (metrics only; the planner never sees them).
Both lookups are exact by default (``agents/knn.py``: one product over the stored keys, the
nearest blocks of rows re-scored exactly); ``index="ivf"`` makes them approximate (faiss IVF:
1.7-2.9x fewer ms per action at recall@5 0.90-0.95).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from embodied.agents.frames import FrameConfig, frames_of, hand_columns
from embodied.agents.knn import INDEXES, Index, make_index
from embodied.agents.nets import load_checkpoint, resolve_device, save_checkpoint
from embodied.agents.settings import config_from
from embodied.dataset import Dataset
from embodied.protocols import Imagination

FORMAT = "embodied-retrieval-model/2"
MODES = ("delta", "next")
CUP_POS_LABELS = ("cup_x", "cup_y", "cup_z")
PCA_ROWS = 4096  # frames the projection is fitted on (a fixed subsample: fast, deterministic)


@dataclass
class RetrievalConfig(FrameConfig):
    """The retrieval model's settings (``world_model`` in configs/agent/retrieval.yaml)."""

    mode: str = "delta"  # "delta" | "next", see the module docstring
    action_weight: float | None = None  # None: the actions count as much as the proprioception
    frame_weight: float = 1.0  # the frame features' weight relative to the proprioception
    frame_dims: int = 16  # principal components of the pooled frame kept
    pool: int = 8  # frames are average-pooled to pool x pool x 3 first
    chunk: int = 8192  # stored keys compared at once (bounds memory at batch x chunk floats)
    store_frames: bool = True  # keep the next frames for ``imagine``
    rerank: int = 4  # margin: blocks and candidates kept beyond the k needed (agents/knn.py)
    fail_neighbours: int = 5  # p_fail: the share of this many nearest transitions that failed
    index: str = "exact"  # "exact" | "ivf" (approximate; needs faiss-cpu), see agents/knn.py
    nlist: int = 64  # ivf: k-means lists over the keys
    nprobe: int = 8  # ivf: lists scanned per query

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown retrieval mode {self.mode!r}; valid: {list(MODES)}")
        if self.index not in INDEXES:
            raise ValueError(f"unknown retrieval index {self.index!r}; valid: {list(INDEXES)}")
        if self.fail_neighbours < 1:
            raise ValueError(f"fail_neighbours must be >= 1; got {self.fail_neighbours}")
        super().__post_init__()


class RetrievalModel:
    """Nearest-neighbour world model over (proprioception, frame features, action)."""

    family = "retrieval"

    def __init__(
        self, *, task: str | None = None, device: str = "auto", seed: int = 0, **settings: Any
    ):
        """``settings``: ``RetrievalConfig``'s fields; ``task`` resolves ``reward_labels="task"``.
        ``seed`` is taken as every family's is, and unused: nothing here is drawn at random."""
        self.config = config_from(RetrievalConfig, {**settings, "task": task})
        c = self.config
        self._reward_cols = hand_columns(c.proprio_labels, c.goal_labels, c.reward_labels)
        self.obs_mode = "state+pixels" if c.proprio_labels or c.goal_labels else "pixels"
        self.device = resolve_device(device)
        self.dims = (len(c.proprio_labels), c.frame_dims, len(c.goal_labels))
        self._t: dict[str, torch.Tensor] = {}  # stored arrays (see _index)
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
        c = self.config
        frames = dataset.transitions("pixels")
        pooled = _pool(frames["obs"], c.pool)
        sub = pooled[:: max(1, len(pooled) // PCA_ROWS)]
        mean = sub.mean(0)
        _, _, vt = np.linalg.svd(sub - mean, full_matrices=False)
        t: dict[str, np.ndarray] = {"pca_mean": mean, "pca": vt[: c.frame_dims]}
        if len(t["pca"]) < c.frame_dims:
            raise ValueError(f"frame_dims={c.frame_dims} exceeds the {len(t['pca'])} available")
        tr = dataset.transitions("state") if "state" in dataset.obs_modes else None
        n = len(pooled)
        proprio_idx = dataset.state_index(*c.proprio_labels) if c.proprio_labels else []
        goal_idx = dataset.state_index(*c.goal_labels) if c.goal_labels else []

        def cols(key: str, idx: list[int]) -> np.ndarray:
            return tr[key][:, idx] if idx else np.zeros((n, 0), np.float32)

        feat = (pooled - mean) @ t["pca"].T
        next_feat = (_pool(frames["next_obs"], c.pool) - mean) @ t["pca"].T
        t["z"] = np.concatenate([cols("obs", proprio_idx), feat, cols("obs", goal_idx)], 1)
        t["next_z"] = np.concatenate(
            [cols("next_obs", proprio_idx), next_feat, cols("obs", goal_idx)], 1
        )
        t["action"] = frames["action"]
        reward, dropped = frames["reward"], frames["dropped"]
        if (~dropped).any():
            reward = np.clip(reward, reward[~dropped].min(), reward[~dropped].max())
        t["reward"], t["dropped"] = reward, dropped.astype(np.float32)
        if all(label in dataset.state_labels for label in CUP_POS_LABELS) and tr is not None:
            t["next_cup"] = tr["next_obs"][:, dataset.state_index(*CUP_POS_LABELS)]
        # key scales: each group standardised, then weighted to count like the proprioception
        p_dim, f_dim, _ = self.dims
        base = max(p_dim, 1)
        weight = c.action_weight or float(np.sqrt(base / frames["action"].shape[1]))
        zstd = _std(t["z"])
        zstd[p_dim : p_dim + f_dim] /= c.frame_weight * np.sqrt(base / max(f_dim, 1))
        t["zmean"], t["zstd"] = t["z"].mean(0), zstd
        t["amean"], t["astd"] = frames["action"].mean(0), _std(frames["action"]) / weight
        self._t = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in t.items()}
        self._t["proprio_index"] = torch.as_tensor(proprio_idx, dtype=torch.long)
        self._t["goal_index"] = torch.as_tensor(goal_idx, dtype=torch.long)
        self._frames = frames["next_obs"] if c.store_frames else None
        self._build_keys()

    def _build_keys(self) -> None:
        self._t = {k: v.to(self.device) for k, v in self._t.items()}
        t = self._t
        self._keys = torch.cat([self._norm(t["z"]), self._norm_action(t["action"])], 1)
        self._delta = t["next_z"] - t["z"]
        self._key_index = self._make_index(self._keys)
        if self._reward_cols:
            self._reward_index = self._make_index(self._relative(t["next_z"], t["z"]))

    def set_index(self, index: str, nlist: int | None = None, nprobe: int | None = None) -> None:
        """Search the stored keys with another index (a search setting, not a trained one: a
        checkpoint fitted with one is searched with another without refitting)."""
        c = self.config
        self.config = config_from(
            RetrievalConfig,
            {**asdict(c), "index": index, "nlist": nlist or c.nlist, "nprobe": nprobe or c.nprobe},
        )
        if self._t:
            self._build_keys()

    def _make_index(self, keys: torch.Tensor) -> Index:
        c = self.config
        if c.index == "ivf":
            return make_index(keys, "ivf", nlist=c.nlist, nprobe=c.nprobe)
        return make_index(keys, "exact", chunk=c.chunk, margin=c.rerank)

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        """Key part of latents: standardised, weighted proprioception and frame features."""
        n = self.dims[0] + self.dims[1]
        return (z[:, :n] - self._t["zmean"][:n]) / self._t["zstd"][:n]

    def _norm_action(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self._t["amean"]) / self._t["astd"]

    def _relative(self, next_z: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The next ``reward_labels`` entries minus the goal (N, G), or (N, 0) without them."""
        if not self._reward_cols:
            return next_z[:, :0]
        return next_z[:, self._reward_cols] - z[:, sum(self.dims[:2]) :]

    # -- prediction -------------------------------------------------------------------------
    def neighbours(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Rows of the ``fail_neighbours`` nearest stored transitions per (z, a) query, nearest
        first: (B, k) long."""
        self._check_fitted()
        c = self.config
        q = torch.cat([self._norm(z), self._norm_action(action)], 1)
        return self._key_index.search(q, c.fail_neighbours)

    def nearest(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Row index of the nearest stored transition for each (z, a) query: (B,) long."""
        return self.neighbours(z, action)[:, 0]

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        action = torch.as_tensor(action, dtype=torch.float32, device=self.device)
        rows = self.neighbours(z, action)
        nxt, reward, _ = self._outcome(z, rows[:, 0])
        return nxt, reward, self._t["dropped"][rows].mean(1)

    def _outcome(
        self, z: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next z, reward, the nearest one's failure) of the stored rows ``idx`` (B,)."""
        t = self._t
        if self.config.mode == "delta":
            nxt = z + self._delta[idx]
        else:  # the stored next [p, f], the query's own goal
            nxt = torch.cat([t["next_z"][idx, : sum(self.dims[:2])], z[:, sum(self.dims[:2]) :]], 1)
        if self._reward_cols:  # scored against the query's goal
            rel = self._relative(nxt, z)
            ridx = self._reward_index.search(rel, 1)[:, 0]
            return nxt, t["reward"][ridx], t["dropped"][idx]
        return nxt, t["reward"][idx], t["dropped"][idx]

    def encode(self, obs: Any) -> torch.Tensor:
        """A state+pixels dict (or frames, for pixels only) -> [p, f, g] (B, Z)."""
        self._check_fitted()
        c = self.config
        frames = frames_of(obs)
        pooled = torch.as_tensor(_pool(frames, c.pool), device=self.device)
        feat = (pooled - self._t["pca_mean"]) @ self._t["pca"].T
        parts = [feat]
        if c.proprio_labels or c.goal_labels:
            if not isinstance(obs, dict) or "state" not in obs:
                raise ValueError(
                    f"this model reads {c.proprio_labels + c.goal_labels} from the state: pass "
                    "a state+pixels observation dict (or empty labels for pixels only)"
                )
            state = torch.as_tensor(np.asarray(obs["state"], np.float32), device=self.device)
            state = state.reshape(-1, state.shape[-1])
            parts = [state[:, self._t["proprio_index"]], feat, state[:, self._t["goal_index"]]]
        return torch.cat(parts, 1)

    @torch.no_grad()
    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        z = self.encode(obs0)[:1]
        acts = torch.as_tensor(np.asarray(actions, np.float32), device=self.device)
        rows = []
        for a in acts:
            idx = self.nearest(z, a[None])
            z = self._outcome(z, idx)[0]
            rows.append(int(idx[0]))
        frames = self._frames[rows] if self._frames is not None else None
        cup = self._t["next_cup"][rows].cpu().numpy() if "next_cup" in self._t else None
        return Imagination(frames=frames, frames_kind="retrieved", cup_pos=cup)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str) -> None:
        self._check_fitted()
        save_checkpoint(
            {
                "config": asdict(self.config),
                "tensors": {k: v.cpu() for k, v in self._t.items()},
                "frames": self._frames,
            },
            path,
            FORMAT,
        )

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> RetrievalModel:
        obj = load_checkpoint(path, FORMAT)
        model = cls(**obj["config"], device=device)
        model._t = obj["tensors"]
        model._frames = obj["frames"]
        model._build_keys()
        return model

    def _check_fitted(self) -> None:
        if not self._t:
            raise RuntimeError("RetrievalModel has no transitions yet: call fit(dataset) first")


def _pool(frames: np.ndarray, pool: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, pool * pool * 3) float32 block means in [0, 1]."""
    x = torch.as_tensor(np.asarray(frames)).movedim(-1, -3).float().div(255.0)
    return F.adaptive_avg_pool2d(x, pool).flatten(1).numpy()


def _std(x: np.ndarray) -> np.ndarray:
    """Std per column; near-constant columns get 1 (no explosion, no vanishing)."""
    std = x.std(0)
    return np.where(std < 1e-6, 1.0, std)
