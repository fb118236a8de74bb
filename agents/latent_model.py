"""The ``latent`` world model: JEPA-style prediction in embedding space, no decoder for planning.

A conv encoder maps a frame to an embedding ``z`` (Z = ``embed_dim``); an action-conditioned
predictor advances it, ``z' = z + g(z, a)``. Training rolls the predictor open-loop for a window
of ``seq_len`` steps from the first frame's embedding and regresses each prediction onto the
embedding of the true frame under a target encoder that is an exponential moving average of the
encoder (no gradient through the target). Against collapse, a VICReg variance hinge (std of each
embedding dimension >= 1 over the batch) and covariance penalty act on the encoder's embeddings.
Reward and failure heads read ``(z, a, z')`` of the predicted transitions and the task's goal
(reward trained on steps that did not fail; the failure penalty is the planner's business;
failure by BCE on ``dropped``). As in the pixel model, the goal (the target's position, which a
2-pixel dot cannot give in depth) is read from the state vector (``obs_mode="state+pixels"``)
and carried unchanged in the planner's latent ``[z, g]``; ``goal_labels=[]`` reads frames only.

For video metrics only, a *probe* decoder learns to draw frames from detached embeddings (its
gradient never reaches the encoder; it has its own optimizer), so ``imagine`` decodes the
predicted embeddings and says ``frames_kind="probe"``: pictures of what the embedding holds,
not a generative model the planner uses.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    frames_to_tensor,
    load_checkpoint,
    save_checkpoint,
    tensor_to_frames,
)
from embodied.agents.pixel_model import (
    GOAL_LABELS,
    Goal,
    frames_of,
    head_losses,
    sample_windows,
)
from embodied.dataset import Dataset
from embodied.protocols import Imagination

FORMAT = "embodied-latent-model/1"


class LatentModel(nn.Module):
    """Encoder + action-conditioned predictor in embedding space, EMA target, probe decoder."""

    family = "latent"

    def __init__(
        self,
        image_size: int = 64,
        action_dim: int = 4,
        depth: int = 8,
        embed_dim: int = 64,
        hidden: int = 256,
        seq_len: int = 8,
        batch_size: int = 8,
        lr: float = 3e-4,
        ema: float = 0.99,
        var_weight: float = 1.0,
        cov_weight: float = 0.04,
        head_scale: float = 1.0,
        fail_weight: float = 10.0,
        probe_depth: int = 8,
        probe_lr: float = 1e-3,
        probe_batch: int = 32,
        grad_clip: float = 10.0,
        goal_labels: Sequence[str] = GOAL_LABELS,
        device: str = "cpu",
        seed: int = 0,
    ):
        super().__init__()
        self.config = dict(
            image_size=image_size,
            action_dim=action_dim,
            depth=depth,
            embed_dim=embed_dim,
            hidden=hidden,
            seq_len=seq_len,
            batch_size=batch_size,
            lr=lr,
            ema=ema,
            var_weight=var_weight,
            cov_weight=cov_weight,
            head_scale=head_scale,
            fail_weight=fail_weight,
            probe_depth=probe_depth,
            probe_lr=probe_lr,
            probe_batch=probe_batch,
            grad_clip=grad_clip,
            goal_labels=list(goal_labels),
            seed=seed,
        )
        if seq_len < 1 or batch_size < 2:
            raise ValueError(f"need seq_len >= 1 and batch_size >= 2; got {seq_len}, {batch_size}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1); got {ema}")
        torch.manual_seed(seed)
        self.embed_dim = embed_dim
        self.goal = Goal(goal_labels)
        self.obs_mode = "state+pixels" if self.goal.dim else "pixels"
        self.encoder = ConvEncoder(image_size, embed_dim, depth)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = MLP(embed_dim + action_dim, embed_dim, (hidden, hidden), layer_norm=True)
        head_in = 2 * embed_dim + action_dim + self.goal.dim
        self.head = MLP(head_in, 2, (hidden, hidden))  # reward, failure logit
        self.probe = ConvDecoder(embed_dim, image_size, probe_depth)
        self.device = torch.device(device)
        self.to(self.device)
        self.eval()
        self._rng = np.random.default_rng(seed)
        self._optimizer: torch.optim.Optimizer | None = None
        self._probe_optimizer: torch.optim.Optimizer | None = None

    def _world_parameters(self) -> list[nn.Parameter]:
        """Everything the world-model loss trains (not the target, not the probe)."""
        modules = (self.encoder, self.predictor, self.head)
        return [p for m in modules for p in m.parameters()]

    def _make_optimizers(self) -> None:
        c = self.config
        self._optimizer = torch.optim.Adam(self._world_parameters(), lr=c["lr"])
        self._probe_optimizer = torch.optim.Adam(self.probe.parameters(), lr=c["probe_lr"])

    # -- training -------------------------------------------------------------------------
    def fit(self, dataset: Dataset, steps: int, **kwargs: Any) -> dict[str, list[float]]:
        """Train for ``steps`` more gradient steps (optimizers persist across calls)."""
        c = self.config
        size = dataset.manifest.get("image_size")
        if size is not None and int(size) != c["image_size"]:
            raise ValueError(
                f"dataset frames are {size}x{size}; this model was built for image_size="
                f"{c['image_size']} (set world_model.image_size={size})"
            )
        self.goal.fit(dataset)
        modes = ("pixels", "state") if self.goal.dim else ("pixels",)
        if self._optimizer is None:
            self._make_optimizers()
        assert self._optimizer is not None and self._probe_optimizer is not None
        keys = ("loss", "pred", "var", "cov", "reward_mse", "fail_bce", "embed_std", "probe")
        losses: dict[str, list[float]] = {k: [] for k in keys}
        self.train()
        for _ in range(steps):
            batch = sample_windows(dataset, c["batch_size"], c["seq_len"], self._rng, modes)
            x = frames_to_tensor(batch["pixels"], self.device)  # (B, L+1, 3, S, S)
            terms, embed, valid = self._losses(x, batch)
            self._optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            nn.utils.clip_grad_norm_(self._world_parameters(), c["grad_clip"])
            self._optimizer.step()
            self._update_target()
            terms["probe"] = self._probe_step(x[valid], embed[valid])
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
        state = batch.get("state")
        goal = (
            self.goal(torch.as_tensor(state[:, 0], device=dev))
            if state is not None
            else x.new_zeros((len(x), 0))
        )
        embed = x.new_zeros((*x.shape[:2], self.embed_dim))
        embed[valid] = self.encoder(x[valid])  # (B, L+1, Z); padding frames stay zero
        target = torch.zeros_like(embed[:, 1:])
        with torch.no_grad():
            target[mask.bool()] = self.target(x[:, 1:][mask.bool()])  # (B, L, Z)
        z, preds, heads = embed[:, 0], [], []
        for t in range(act.shape[1]):
            z_next = self._predict(z, act[:, t])
            heads.append(self.head(torch.cat([z, act[:, t], z_next, goal], -1)))
            preds.append(z_next)
            z = z_next
        sq = (torch.stack(preds, 1) - target).pow(2).mean(-1)
        pred = (sq * mask).sum() / mask.sum()
        reward_mse, fail_bce = head_losses(
            torch.stack(heads, 1), reward, dropped, mask, c["fail_weight"]
        )
        flat = embed[valid]
        std = torch.sqrt(flat.var(0) + 1e-4)
        var = F.relu(1.0 - std).mean()
        centred = flat - flat.mean(0)
        cov_m = centred.T @ centred / (len(flat) - 1)
        cov = (cov_m.pow(2).sum() - cov_m.diagonal().pow(2).sum()) / flat.shape[1]
        loss = (
            pred
            + c["var_weight"] * var
            + c["cov_weight"] * cov
            + c["head_scale"] * (reward_mse + fail_bce)
        )
        terms = {
            "loss": loss,
            "pred": pred,
            "var": var,
            "cov": cov,
            "reward_mse": reward_mse,
            "fail_bce": fail_bce,
            "embed_std": std.mean(),
        }
        return terms, embed, valid

    @torch.no_grad()
    def _update_target(self) -> None:
        ema = self.config["ema"]
        for tp, p in zip(self.target.parameters(), self.encoder.parameters(), strict=True):
            tp.mul_(ema).add_(p, alpha=1.0 - ema)

    def _probe_step(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """One probe-decoder step on detached embeddings of a random subset of frames.

        ``x`` (..., 3, S, S) frames and ``embed`` (..., Z) their embeddings.
        """
        assert self._probe_optimizer is not None
        flat_x = x.reshape(-1, *x.shape[-3:])
        flat_e = embed.detach().reshape(-1, embed.shape[-1])  # never into the encoder
        n = min(self.config["probe_batch"], len(flat_x))
        idx = torch.as_tensor(self._rng.choice(len(flat_x), n, replace=False), device=x.device)
        loss = (self.probe(flat_e[idx]) - flat_x[idx]).pow(2).mean()
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
    def _predict(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + self.predictor(torch.cat([z, a], -1))

    @torch.no_grad()
    def encode(self, obs: Any) -> torch.Tensor:
        """A state+pixels dict (or frames, without goal labels) -> [z, g] (B, embed + goal)."""
        frames = frames_of(obs)
        goal = self.goal.from_obs(obs, len(frames), self.device)
        return torch.cat([self.encoder(frames_to_tensor(frames, self.device)), goal], -1)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[z', g] (B, Z), reward (B,), p_fail (B,) for latents [z, g] and actions (B, A)."""
        a = action.to(z.dtype).clamp(-1.0, 1.0)
        e, goal = z.split([self.embed_dim, self.goal.dim], -1)
        e2 = self._predict(e, a)
        out = self.head(torch.cat([e, a, e2, goal], -1))
        return torch.cat([e2, goal], -1), out[:, 0], torch.sigmoid(out[:, 1])

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor) -> np.ndarray:
        """Latents (B, Z) -> uint8 frames (B, S, S, 3) drawn by the probe (video metrics only)."""
        return tensor_to_frames(self.probe(z[:, : self.embed_dim]))

    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        """Open-loop predicted embeddings under ``actions`` (H, A), drawn by the probe."""
        z = self.encode(obs0)[:1]
        latents = []
        for a in np.asarray(actions, np.float32):
            z = self.step(z, torch.as_tensor(a, device=self.device)[None])[0]
            latents.append(z)
        frames = self.decode_frames(torch.cat(latents)) if latents else None
        return Imagination(frames=frames, frames_kind="probe", cup_pos=None)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint({"config": self.config, "weights": self.state_dict()}, path, FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> LatentModel:
        ckpt = load_checkpoint(path, FORMAT, map_location=device)
        model = cls(**ckpt["config"], device=device)
        model.load_state_dict(ckpt["weights"])
        return model
