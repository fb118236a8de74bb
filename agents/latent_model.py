"""The ``latent`` world model: JEPA-style prediction in embedding space, no decoder for planning.

Inputs (``agents/frames.py``): a short history of frames (the last ``history`` frames stacked,
so velocities are visible), the robot's proprioception and the task's goal; the cup and all
physics come only through the frames. A conv encoder maps the frame stack to an embedding ``e``
(``embed_dim``); the model's latent is ``x = [e, p]`` with ``p`` the standardised
proprioception, and an action-conditioned predictor advances it, ``x' = x + f(x, a)``.
Training rolls the predictor open-loop for a window of ``seq_len`` steps from the first
observation and regresses each prediction onto the true next ``[e, p]``, ``e`` under a target
encoder that is an exponential moving average of the encoder (no gradient through the target).
Against collapse, a VICReg variance hinge (std of each embedding dimension >= 1 over the batch)
and covariance penalty act on the encoder's embeddings. Reward and failure heads read ``(x,
x')`` of the predicted transitions (not the action) and the goal (reward trained on steps that
did not fail; the failure penalty is the planner's business; failure by BCE on ``dropped``).
The goal is carried unchanged in the planner's latent ``[e, p, g]``. ``proprio_labels=[]`` and
``goal_labels=[]`` read frames only.

At plan time ``observe`` keeps the last ``history`` frames of the episode (the belief), so the
encoding sees motion; ``encode`` alone repeats one frame, as at an episode's start.

For video metrics only, a *probe* decoder learns to draw the latest frame from detached
embeddings (its gradient never reaches the encoder; it has its own optimizer), so ``imagine``
decodes the predicted embeddings and says ``frames_kind="probe"``: pictures of what the
embedding holds, not a generative model the planner uses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.frames import (
    FrameConfig,
    FrameModel,
    GoalHeads,
    frames_of,
    head_losses,
    masked_mse,
    sample_windows,
)
from embodied.agents.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    frames_to_tensor,
    tensor_to_frames,
)
from embodied.agents.settings import config_from
from embodied.dataset import Dataset


@dataclass
class LatentConfig(FrameConfig):
    """The latent model's settings (``world_model`` in configs/agent/latent.yaml)."""

    image_size: int = 64
    action_dim: int = 4
    depth: int = 8  # channels of the first conv layer (x2 per layer, up to x8)
    embed_dim: int = 64
    hidden: int = 128
    history: int = 2  # frames stacked per encoding (velocities visible)
    seq_len: int = 8  # open-loop training window
    batch_size: int = 8
    lr: float = 3e-4
    ema: float = 0.99  # the target encoder's moving average
    var_weight: float = 10.0  # VICReg variance hinge
    cov_weight: float = 0.04  # VICReg covariance penalty
    proprio_scale: float = 1.0
    head_scale: float = 1.0
    fail_weight: float = 10.0  # failures are rare: weighed up in the BCE
    probe_depth: int = 8
    probe_lr: float = 1e-3
    probe_batch: int = 32  # frames the probe decoder trains on per step
    grad_clip: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.batch_size < 2 or self.history < 1:
            raise ValueError(
                f"need seq_len >= 1, batch_size >= 2, history >= 1; "
                f"got {self.seq_len}, {self.batch_size}, {self.history}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1); got {self.ema}")
        super().__post_init__()


class LatentModel(FrameModel):
    """Encoder over a frame history + proprioception, predictor in embedding space, EMA target."""

    family = "latent"
    FORMAT = "embodied-latent-model/3"
    FRAMES_KIND = "probe"

    def __init__(self, *, task: str | None = None, device: str = "auto", **settings: Any):
        """``settings``: ``LatentConfig``'s fields; ``task`` resolves ``reward_labels="task"``."""
        super().__init__()
        c = config_from(LatentConfig, {**settings, "task": task})
        self._setup(c)
        self.embed_dim, self.history = c.embed_dim, c.history
        state_dim = c.embed_dim + self.proprio.dim  # x = [e, p]
        self.encoder = ConvEncoder(c.image_size, c.embed_dim, c.depth, channels=3 * c.history)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        hidden = (c.hidden, c.hidden)
        self.predictor = MLP(state_dim + c.action_dim, state_dim, hidden, layer_norm=True)
        # no action: see _heads
        self.head = GoalHeads(2 * state_dim, self.goal.dim, self.relative_dim, c.hidden)
        self.probe = ConvDecoder(c.embed_dim, c.image_size, c.probe_depth)
        self._finish(device)
        self._optimizer: torch.optim.Optimizer | None = None
        self._probe_optimizer: torch.optim.Optimizer | None = None

    def _world_parameters(self) -> list[nn.Parameter]:
        """Everything the world-model loss trains (not the target, not the probe)."""
        modules = (self.encoder, self.predictor, self.head)
        return [p for m in modules for p in m.parameters()]

    def _make_optimizers(self) -> None:
        c = self.config
        # fused: one kernel per update instead of a few per parameter (~5% of a step)
        self._optimizer = torch.optim.Adam(self._world_parameters(), lr=c.lr, fused=True)
        self._probe_optimizer = torch.optim.Adam(self.probe.parameters(), lr=c.probe_lr, fused=True)

    # -- training -------------------------------------------------------------------------
    def fit(self, dataset: Dataset, steps: int, **kwargs: Any) -> dict[str, list[float]]:
        """Train for ``steps`` more gradient steps (optimizers persist across calls)."""
        c = self.config
        modes = self._prepare(dataset)
        if self._optimizer is None:
            self._make_optimizers()
        assert self._optimizer is not None and self._probe_optimizer is not None
        keys = (
            "loss",
            "pred",
            "proprio_mse",
            "var",
            "cov",
            "reward_mse",
            "fail_bce",
            "embed_std",
            "probe",
        )
        losses: dict[str, list[float]] = {k: [] for k in keys}
        self.train_with(self._optimizer, self._probe_optimizer)
        for _ in range(steps):
            batch = sample_windows(dataset, c.batch_size, c.seq_len, self._rng, modes, self.history)
            x = self._stack(batch["pixels"])  # (B, L+1, 3K, S, S)
            terms, embed, valid = self._losses(x, batch)
            self._optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            nn.utils.clip_grad_norm_(self._world_parameters(), c.grad_clip)
            self._optimizer.step()
            self._update_target()
            b, t = self._probe_frames(valid)
            terms["probe"] = self._probe_step(x[b, t, -3:], embed[b, t])
            for k in keys:
                losses[k].append(float(terms[k].detach()))
        self.eval()
        return losses

    def _losses(
        self, x: torch.Tensor, batch: dict[str, np.ndarray]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The loss terms, the embeddings (B, L+1, Z) and which frames are real (B, L+1)."""
        c = self.config
        dev = self.device
        act = torch.as_tensor(batch["action"], device=dev)
        reward = torch.as_tensor(batch["reward"], device=dev)
        dropped = torch.as_tensor(batch["dropped"], device=dev).float()
        mask = torch.as_tensor(batch["mask"], device=dev).float()  # (B, L): real steps
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).bool()
        entries = self._entries(batch.get("state"))
        proprio, goal = entries if entries else (x.new_zeros((*x.shape[:2], 0)),) * 2
        goal = goal[:, 0]  # the episode's goal
        embed = x.new_zeros((*x.shape[:2], self.embed_dim))
        embed[valid] = self.encoder(x[valid])  # (B, L+1, Z); padding frames stay zero
        target = torch.zeros_like(embed[:, 1:])
        with torch.no_grad():
            target[mask.bool()] = self.target(x[:, 1:][mask.bool()])  # (B, L, Z)
        rollout = self._unroll(torch.cat([embed[:, 0], proprio[:, 0]], -1), act)  # (B, L+1, Z)
        e_pred, p_pred = rollout[:, 1:].split([self.embed_dim, self.proprio.dim], -1)
        pred = masked_mse(e_pred, target, mask)
        proprio_mse = masked_mse(p_pred, proprio[:, 1:], mask)
        goal_t = goal[:, None].expand(-1, act.shape[1], -1)
        heads = self._heads(rollout[:, :-1], rollout[:, 1:], goal_t)  # all steps in one call
        reward_mse, fail_bce = head_losses(heads, reward, dropped, mask, c.fail_weight)
        flat = embed[valid]
        std = torch.sqrt(flat.var(0) + 1e-4)
        var = F.relu(1.0 - std).mean()
        centred = flat - flat.mean(0)
        cov_m = centred.T @ centred / (len(flat) - 1)
        cov = (cov_m.pow(2).sum() - cov_m.diagonal().pow(2).sum()) / flat.shape[1]
        loss = (
            pred
            + c.proprio_scale * proprio_mse
            + c.var_weight * var
            + c.cov_weight * cov
            + c.head_scale * (reward_mse + fail_bce)
        )
        terms = {
            "loss": loss,
            "pred": pred,
            "proprio_mse": proprio_mse,
            "var": var,
            "cov": cov,
            "reward_mse": reward_mse,
            "fail_bce": fail_bce,
            "embed_std": std.mean(),
        }
        return terms, embed, valid

    @torch.no_grad()
    def _update_target(self) -> None:
        ema = self.config.ema
        for tp, p in zip(self.target.parameters(), self.encoder.parameters(), strict=True):
            tp.mul_(ema).add_(p, alpha=1.0 - ema)

    def _probe_frames(self, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, time) indices of ``probe_batch`` random real frames of a (B, L+1) window."""
        b, t = valid.nonzero(as_tuple=True)
        n = min(self.config.probe_batch, len(b))
        idx = torch.as_tensor(self._rng.choice(len(b), n, replace=False), device=b.device)
        return b[idx], t[idx]

    def _probe_step(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """One probe-decoder step on detached embeddings: ``x`` (..., 3, S, S) frames and
        ``embed`` (..., Z) their embeddings."""
        assert self._probe_optimizer is not None
        flat_x = x.reshape(-1, *x.shape[-3:])
        flat_e = embed.detach().reshape(-1, embed.shape[-1])  # never into the encoder
        loss = (self.probe(flat_e) - flat_x).pow(2).mean()
        self._probe_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._probe_optimizer.step()
        return loss

    def train_state(self) -> dict[str, Any]:
        """Both optimizers and the sampling RNG (a copy: training goes on), for an exact resume."""
        opts = (self._optimizer, self._probe_optimizer)
        return {
            "optimizers": None
            if opts[0] is None
            else [copy.deepcopy(o.state_dict()) for o in opts if o],
            "rng": self._rng.bit_generator.state,
        }

    def load_train_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizers") is not None:
            self._make_optimizers()
            assert self._optimizer is not None and self._probe_optimizer is not None
            self._optimizer.load_state_dict(state["optimizers"][0])
            self._probe_optimizer.load_state_dict(state["optimizers"][1])
        self._rng.bit_generator.state = state["rng"]

    # -- prediction -----------------------------------------------------------------------
    def _stack(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (..., K, S, S, 3) frame histories -> (..., 3K, S, S) encoder input, channel
        3k + c being colour c of frame k, laid out channels-last (see ``frames_to_tensor``)."""
        frames = np.asarray(frames)
        stacked = np.moveaxis(frames, -4, -2)  # (..., S, S, K, 3)
        return frames_to_tensor(stacked.reshape(*stacked.shape[:-2], -1), self.device)

    def _predict(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return x + self.predictor(torch.cat([x, a], -1))

    def _unroll(self, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States (B, Z) and actions (B, L, A) -> (B, L+1, Z): the first given, then predicted."""
        states = [x]
        for t in range(actions.shape[1]):
            states.append(self._predict(states[-1], actions[:, t]))
        return torch.stack(states, 1)

    def _heads(self, x: torch.Tensor, x2: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Reward and failure logit (..., 2) of transitions x -> x2 towards the goal, with the
        predicted hand's geometry relative to the goal. Not the action (as in the state model):
        a planner must move the predicted state to earn reward, not find actions the head
        overrates. The reward reads the geometry alone where the task's reward entries are
        proprioception, else the features and the goal (``GoalHeads``)."""
        rel = self._relative(x2[..., self.embed_dim :], goal)
        return self.head(torch.cat([x, x2], -1), goal, rel)

    def _encode_history(self, history: np.ndarray, obs: Any) -> torch.Tensor:
        """Frame histories (B, K, S, S, 3) and the latest observation -> [e, p, g] (B, Z)."""
        proprio, goal = self._obs_entries(obs, len(history))
        x = self._stack(history).contiguous()  # the layout (so the rounding) plans were made with
        return torch.cat([self.encoder(x), proprio, goal], -1)

    @torch.no_grad()
    def encode(self, obs: Any) -> torch.Tensor:
        """One observation (its frame repeated as the history, as at an episode's start) ->
        [e, p, g] (B, embed + proprio + goal)."""
        frames = frames_of(obs)
        history = np.repeat(frames[:, None], self.history, axis=1)
        return self._encode_history(history, obs)

    @torch.no_grad()
    def observe(self, belief: np.ndarray | None, action: Any, obs: Any) -> tuple[Any, torch.Tensor]:
        """Keep the last ``history`` frames of the episode (the belief) and encode them."""
        frames = frames_of(obs)
        if belief is None:
            belief = np.repeat(frames[:, None], self.history, axis=1)
        else:
            belief = np.concatenate([belief[:, 1:], frames[:, None]], axis=1)
        return belief, self._encode_history(belief, obs)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[x', g] (B, Z), reward (B,), p_fail (B,) for latents [x, g] and actions (B, A)."""
        a = action.to(z.dtype).clamp(-1.0, 1.0)
        x, goal = z.split([self.embed_dim + self.proprio.dim, self.goal.dim], -1)
        x2 = self._predict(x, a)
        out = self._heads(x, x2, goal)
        return torch.cat([x2, goal], -1), self._reward(out[:, 0]), torch.sigmoid(out[:, 1])

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, p_fail), each (N, H), of N sequences (N, H, A) from one latent: what ``step``
        gives H times, with the heads (two thirds of a step's arithmetic, and not fed back)
        scoring all N x H transitions in one batch."""
        a = actions.to(z0.dtype).clamp(-1.0, 1.0)
        x, goal = z0.reshape(1, -1).split([self.embed_dim + self.proprio.dim, self.goal.dim], -1)
        x = self._unroll(x.expand(len(a), -1), a)
        out = self._heads(x[:, :-1], x[:, 1:], goal.expand(*a.shape[:2], -1))
        return self._reward(out[..., 0]), torch.sigmoid(out[..., 1])

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor) -> np.ndarray:
        """Latents (B, Z) -> uint8 frames (B, S, S, 3) drawn by the probe (video metrics only)."""
        return tensor_to_frames(self.probe(z[:, : self.embed_dim]))
