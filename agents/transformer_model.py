"""The ``transformer`` world model: a causal decoder over the episode so far, the LM recipe.

Each step of an episode is one token: the state's features (the normalised state and its
relative geometry, as the ``state`` model's heads read them) and the action taken. A GPT-style
decoder (agents/gpt.py) reads the tokens causally and predicts, at every position, the
normalised state delta of that step; so the prediction for step t is conditioned on every
transition the episode has shown before it, and physics the state vector does not show (a
cup's mass, the grip's force) can be inferred in context. Delta entries that never change in
the data are copied exactly, as in the ``state`` model. Reward and failure heads are the
``state`` model's: the reward reads s' (clamped to the range seen in the data), the failure
head reads (s, s'), both on the same features, so the planner can only buy reward by moving
the predicted state.

Training is teacher forcing on episode windows (from their start, ``train_tokens`` tokens:
whole episodes of every task by default): every position's loss at once, padding masked.
Attention reads the last ``context_steps`` steps at most, in every layer (sliding-window
attention, None: the whole episode), in training and at plan time alike: the history axis of
``embodied-sweep``. The default 64 holds a whole CupCarry episode (60 steps).

At plan time ``observe`` appends each real transition to the episode's key/value cache, one
token per real step, so the history is never re-read. ``rollout`` branches the N candidates
from that cache (``GPT.branch``: the prefix is shared in place, never copied per candidate)
and extends each by its own imagined tokens, H single-token forwards in all. ``step`` is
autoregressive too: called with the z' it returned last it continues that imagined sequence,
with any other z it starts a new one from the episode's prefix (``encode`` forgets the
episode: one observation carries no history).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.gpt import GPT, Branches, Cache
from embodied.agents.nets import (
    MLP,
    Normalizer,
    state_tensor,
)
from embodied.agents.state_model import CUP_POS_LABELS, RELATIVE_GROUPS, RelativeGeometry
from embodied.agents.vector_model import VectorModel
from embodied.dataset import Dataset

FORMAT = "embodied-transformer-model/1"
# size -> (width, layers, heads): about 0.1M, 0.23M, 3.2M and 19M parameters. ``s`` is a
# two-layer decoder narrow enough to plan near 25 ms per action on one thread: its candidate
# rollouts cost 4.0x state's at width 128, 2.7x at 96, and its whole MPC step 2.2x state's
# (benchmarks/planner_speed.py: 33.6 ms vs 15.0, quiet, before candidates branched from the
# shared history; that saves 24% of a rollout at 60 steps of history, nothing at 14; what is
# left is per-call overhead: docs/measurements.md, "Planning cost").
SIZES = {"xs": (64, 2, 2), "s": (96, 2, 4), "m": (256, 4, 8), "l": (512, 6, 8)}


@dataclass
class History:
    """The belief at plan time: the last observed state and the episode's tokens, cached."""

    state: torch.Tensor  # (B, D)
    cache: Cache


class TransformerModel(VectorModel):
    """Causal decoder dynamics over the episode's (state, action) tokens + state-model heads."""

    family = "transformer"
    obs_mode = "state"
    checkpoint_format = FORMAT

    def __init__(
        self,
        size: str = "s",
        head_hidden: Sequence[int] = (128, 128),
        relative_groups: Sequence[str] = RELATIVE_GROUPS,
        act: str = "silu",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup: int = 100,
        grad_clip: float = 1.0,
        batch_size: int = 16,
        train_tokens: int = 200,
        context_steps: int | None = 64,
        cup_pos_labels: Sequence[str] = CUP_POS_LABELS,
        device: str = "cpu",
        seed: int = 0,
    ):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; valid: {list(SIZES)}")
        if batch_size < 1 or train_tokens < 1 or warmup < 0:
            raise ValueError(
                f"need batch_size >= 1, train_tokens >= 1, warmup >= 0; got {batch_size}, "
                f"{train_tokens}, {warmup}"
            )
        if context_steps is not None and context_steps < 1:
            raise ValueError(f"context_steps must be >= 1 or None; got {context_steps}")
        self.config = dict(
            size=size,
            head_hidden=list(head_hidden),
            relative_groups=list(relative_groups),
            act=act,
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            grad_clip=grad_clip,
            batch_size=batch_size,
            train_tokens=train_tokens,
            context_steps=context_steps,
            cup_pos_labels=list(cup_pos_labels),
            seed=seed,
        )
        self.device = torch.device(device)
        self.state_dim = self.action_dim = 0
        self.state_labels: list[str] = []
        self._rng = np.random.default_rng(seed)
        self._optimizer: torch.optim.Optimizer | None = None
        self._updates = 0
        self._data: tuple[int, dict[str, torch.Tensor]] | None = None
        self._prefix: Cache | None = None  # the episode's tokens at plan time (None: none yet)
        self._candidates: Branches | None = None  # rollout's buffers, reused across calls
        self._imagined: tuple[torch.Tensor, Branches] | None = None  # step's last z', its tokens

    # -- construction ---------------------------------------------------------------------
    def build(self, state_dim: int, action_dim: int, state_labels: Sequence[str] = ()) -> None:
        """Create the networks once the data's dimensions are known (seeded, global RNG kept)."""
        c = self.config
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.state_labels = list(state_labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            self.delta_norm = Normalizer(state_dim)
            self.register_buffer("constant", torch.zeros(state_dim, dtype=torch.bool))
            self.register_buffer("reward_range", torch.tensor([-1e9, 1e9]))
            self.relative = RelativeGeometry(self.state_labels, c["relative_groups"])
            feat = state_dim + self.relative.dim
            self.feature_norm = Normalizer(feat)
            dim, layers, heads = SIZES[c["size"]]
            window = c["context_steps"]
            self.gpt = GPT(feat + action_dim, state_dim, dim, layers, heads, window)
            self.reward_head = MLP(feat, 1, c["head_hidden"], c["act"])
            self.fail_head = MLP(2 * feat, 1, c["head_hidden"], c["act"])
        self.to(self.device)

    @torch.no_grad()
    def _fit_normalisers(self, data: dict[str, torch.Tensor]) -> None:
        """Statistics of the training transitions, fitted once and saved with the weights."""
        s, s2 = data["state"][data["obs_row"]], data["state"][data["obs_row"] + 1]
        delta = s2 - s
        states = data["state"]
        self._fit_delta_and_heads(delta, states, data)
        self.to(self.device)

    def _tensors(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """The dataset's flat arrays and episode layout on the device, made once per dataset."""
        if self._data is None or self._data[0] != id(dataset):
            dev = self.device
            obs_row = dataset.obs_start[np.repeat(np.arange(len(dataset)), dataset.lengths)]
            obs_row = obs_row + np.concatenate([np.arange(n) for n in dataset.lengths])
            arrays = {
                "state": dataset.flat["state"],
                "action": dataset.flat["action"],
                "reward": dataset.flat["reward"],
                "dropped": dataset.flat["dropped"].astype(np.float32),
                "obs_row": obs_row,  # step row -> the row of the state it starts from
                "act_start": dataset.act_start,
                "lengths": dataset.lengths,
            }
            self._data = (
                id(dataset),
                {k: torch.as_tensor(v, device=dev) for k, v in arrays.items()},
            )
        return self._data[1]

    def _windows(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` episodes drawn with replacement, each a window of up to
        ``train_tokens`` steps (from its start when the episode fits): step rows (B, W) and
        validity (B, W)."""
        lengths = data["lengths"].cpu().numpy()
        episodes = self._rng.integers(0, len(lengths), size=self.config["batch_size"])
        window = min(int(self.config["train_tokens"]), int(lengths[episodes].max()))
        n = lengths[episodes]
        start = self._rng.integers(0, np.maximum(n - window, 0) + 1)
        offset = start[:, None] + np.arange(window)[None, :]
        valid = offset < n[:, None]
        rows = data["act_start"].cpu().numpy()[episodes, None] + np.minimum(offset, n[:, None] - 1)
        dev = self.device
        return torch.as_tensor(rows, device=dev), torch.as_tensor(valid, device=dev)

    # -- training -------------------------------------------------------------------------
    def _loss_keys(self) -> tuple[str, ...]:
        return ("loss", "mse", "reward_mse", "fail_bce")

    def _train_step(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One step on a batch of episode windows, the learning rate warmed up linearly over
        the first ``warmup`` updates (``fit`` is ``VectorModel``'s)."""
        assert self._optimizer is not None
        c = self.config
        rows, valid = self._windows(data)
        s = data["state"][data["obs_row"][rows]]
        s2 = data["state"][data["obs_row"][rows] + 1]
        a, dropped = data["action"][rows], data["dropped"][rows]
        f, f2 = self._features(s), self._features(s2)
        pred = self.gpt(self._token(f, a))
        target = self.delta_norm(s2 - s)
        w = valid.float()
        mse = (((pred - target) ** 2)[..., ~self.constant].mean(-1) * w).sum() / w.sum()
        ok = w * (1.0 - dropped)
        reward_err = (self.reward_head(f2)[..., 0] - data["reward"][rows]) ** 2
        reward_mse = (reward_err * ok).sum() / ok.sum().clamp(min=1.0)
        fail_logit = self.fail_head(torch.cat([f, f2], -1))[..., 0]
        bce = F.binary_cross_entropy_with_logits(fail_logit, dropped, reduction="none")
        fail_bce = (bce * w).sum() / w.sum()
        loss = mse + reward_mse + fail_bce
        for group in self._optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = c["lr"] * min(1.0, (self._updates + 1) / max(c["warmup"], 1))
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), c["grad_clip"])
        self._optimizer.step()
        self._updates += 1
        return loss, mse, reward_mse, fail_bce

    def _resume_state(self) -> dict[str, Any]:
        return {"updates": self._updates}  # where the warm-up stands

    def _resume(self, state: dict[str, Any]) -> None:
        self._updates = int(state["updates"])

    # -- prediction -----------------------------------------------------------------------
    def _features(self, s: torch.Tensor) -> torch.Tensor:
        return self.feature_norm(torch.cat([s, self.relative(s)], -1))

    def _token(self, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """One step as the decoder reads it: the state's features ``f`` and the action."""
        return torch.cat([f, a.to(f.dtype).clamp(-1.0, 1.0)], -1)

    def _delta_scale(self) -> torch.Tensor:
        """The de-normalising scale of a delta: 0 for entries constant in the data."""
        return self.delta_norm.std * ~self.constant

    def _advance(self, z: torch.Tensor, out: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """z + the de-normalised delta; entries constant in the data get exactly their constant."""
        return torch.addcmul(z + self.delta_norm.mean, out, scale)

    def _score(self, f: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward and p_fail (...) of transitions z -> z2, from their features (..., F)."""
        reward = self.reward_head(f2)[..., 0].clamp(self.reward_range[0], self.reward_range[1])
        return reward, torch.sigmoid(self.fail_head(torch.cat([f, f2], -1))[..., 0])

    def _branches(self, rows: int, extra: int) -> Branches:
        """Empty buffers for ``rows`` candidates of ``extra`` tokens: rollout's kept and
        rewound (the prefix is read in place, so they hold nothing of it)."""
        own = self._candidates
        if own is None or own.batch != rows or own.capacity < extra:
            own = self._candidates = self.gpt.new_branches(rows, extra)
        own.length = 0
        return own

    def _set_prefix(self, prefix: Cache | None) -> None:
        self._prefix, self._imagined = prefix, None

    def encode(self, obs: Any) -> torch.Tensor:
        """The raw state; an observation alone carries no history, so the episode is forgotten."""
        self._check_built()
        self._set_prefix(None)
        return state_tensor(obs, self.device)

    @torch.no_grad()
    def observe(
        self, belief: History | None, action: Any, obs: Any
    ) -> tuple[History, torch.Tensor]:
        """Append the real transition (previous state, ``action``) to the episode's cache (one
        token through the decoder) and plan from ``obs`` after it; None starts an episode."""
        self._check_built()
        s = state_tensor(obs, self.device)
        if belief is None:
            belief = History(s, self.gpt.new_cache(len(s), 64))
        else:
            a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)
            a = a.reshape(1, -1).expand(len(s), -1)
            self.gpt(self._token(self._features(belief.state), a)[:, None], belief.cache)
            belief = History(s, belief.cache)
        self._set_prefix(belief.cache)
        return belief, s

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z', reward, p_fail) of one more token; continues the imagined sequence when ``z`` is
        the z' this returned last, else starts one from the episode's prefix."""
        self._check_built()
        if self._imagined is not None and self._imagined[0] is z:
            own = self._imagined[1]
        else:
            own = self.gpt.new_branches(len(z), 8)
        f = self._features(z)
        out = self.gpt.branch(self._token(f, action), self._prefix, own)
        z2 = self._advance(z, out, self._delta_scale())
        reward, p_fail = self._score(f, self._features(z2))
        self._imagined = (z2, own)
        return z2, reward, p_fail

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, p_fail), each (N, H), of N sequences (N, H, A) from one state after the
        episode's prefix: H single-token forwards branching from its cache, heads in one
        batch on the features the tokens were made of."""
        self._check_built()
        n, h = actions.shape[:2]
        own, scale = self._branches(n, h), self._delta_scale()
        z = z0.reshape(1, -1).expand(n, -1)
        fs = [self._features(z0.reshape(1, -1)).expand(n, -1)]
        for t in range(h):
            out = self.gpt.branch(self._token(fs[-1], actions[:, t]), self._prefix, own)
            z = self._advance(z, out, scale)
            fs.append(self._features(z))
        f = torch.stack(fs, 1)
        return self._score(f[:, :-1], f[:, 1:])

    @torch.no_grad()
    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next states (B, T, D) of whole sequences (B, T, D), (B, T, A), no
        cache: every position from the true states before it (the training view)."""
        self._check_built()
        out = self.gpt(self._token(self._features(states), actions))
        return self._advance(states, out, self._delta_scale())

    def _imagine_step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.step(z, action)[0]

    # -- persistence ----------------------------------------------------------------------
