"""The ``pixel`` world model: a small recurrent state-space model on 64x64 frames (PlaNet/Dreamer).

A conv encoder embeds each frame; the latent state is a deterministic GRU state ``h`` plus a
stochastic Gaussian ``s``. Training filters sequences: ``h_t = GRU(h_{t-1}, [s_{t-1}, a_{t-1}])``,
prior ``p(s_t | h_t)``, posterior ``q(s_t | h_t, e_t)``, a conv decoder reconstructs every frame
from ``[h_t, s_t]``, and the loss adds the balanced KL(q || p) with free nats (DreamerV2). Reward
and failure heads read ``[h_t, s_t]`` twice: on the filtered states and on an open-loop prior
rollout from the window's first frame, which is exactly what the planner sees.

The task's goal is an input, not something to see: the target is a 2-pixel dot whose depth one
fixed camera cannot tell, so the reward (the cup's distance to it) is unlearnable from frames
alone. With ``goal_labels`` (default: the target's x, y, z) the model reads only those entries of
the state vector (``obs_mode="state+pixels"``), standardised, and passes them to the reward and
failure heads; everything physical still comes from frames. ``goal_labels=[]`` makes a pure
``pixels`` model.

The planner's latent ``z = [h, s, g]`` (Z = deter + stoch + goal) comes from one frame:
``encode`` sets ``h`` from the frame's embedding (a learned initial state), ``s`` to the
posterior mean and ``g`` to the goal; ``step`` advances with the prior mean (deterministic) and
carries ``g``. The reward head is trained on steps that did not fail (the failure penalty is the
planner's business), the failure head with BCE on ``dropped``. ``imagine`` decodes the open-loop
rollout: ``frames_kind="decoder"``, no cup position.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as F

from embodied.agents.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    Normalizer,
    frames_to_tensor,
    load_checkpoint,
    save_checkpoint,
    tensor_to_frames,
)
from embodied.dataset import Dataset
from embodied.protocols import Imagination

FORMAT = "embodied-pixel-model/1"
MIN_STD = 0.1
GOAL_LABELS = ("target_x", "target_y", "target_z")


class Goal(nn.Module):
    """The task's goal read from named entries of the state vector, standardised.

    Fitted once from the first dataset (indices and statistics are buffers, saved with the model).
    """

    def __init__(self, labels: Sequence[str]):
        super().__init__()
        self.labels = list(labels)
        self.dim = len(self.labels)
        self.norm = Normalizer(max(self.dim, 1))
        self.register_buffer("index", torch.zeros(self.dim, dtype=torch.long))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, dataset: Dataset) -> None:
        if self.dim == 0 or bool(self.fitted):
            return
        index = dataset.state_index(*self.labels)  # fails with the valid labels
        self.index.copy_(torch.as_tensor(index))
        self.norm.fit(dataset.flat["state"][:, index])
        self.fitted.fill_(True)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(..., D) state vectors -> (..., goal dim) standardised goals (empty without labels)."""
        if self.dim == 0:
            return state.new_zeros((*state.shape[:-1], 0))
        return self.norm(state[..., self.index])

    def from_obs(self, obs: Any, batch: int, device: torch.device) -> torch.Tensor:
        """Goals (B, goal dim) from an observation dict's ``state`` (empty without labels)."""
        if self.dim == 0:
            return torch.zeros((batch, 0), device=device)
        if not isinstance(obs, dict) or "state" not in obs:
            raise ValueError(
                f"this model reads the goal {self.labels} from the state: pass a state+pixels "
                "observation dict (or build it with goal_labels=[] for pixels only)"
            )
        state = torch.as_tensor(np.asarray(obs["state"], np.float32), device=device)
        return self(state.reshape(-1, state.shape[-1]))


def sample_windows(
    dataset: Dataset,
    batch_size: int,
    length: int,
    rng: np.random.Generator,
    modes: Sequence[str],
) -> dict[str, np.ndarray]:
    """Windows of up to ``length`` steps from any transition, padded past an episode's end.

    Unlike ``Dataset.sample_sequences`` (whole windows only), short episodes count too, and most
    drops happen in the first few steps of a random-action episode. Returns ``<mode>`` (B, L+1,
    ...), the step arrays (B, L) and ``mask`` (B, L), true for real steps; past the end the last
    observation and step repeat.
    """
    rows = rng.integers(0, dataset.num_transitions, size=batch_size)
    episode = np.searchsorted(dataset.act_start, rows, side="right") - 1
    start, length_ep = dataset.act_start[episode], dataset.lengths[episode]
    steps = rows[:, None] + np.arange(length)[None, :]
    last = (start + length_ep - 1)[:, None]
    mask = steps <= last
    offset = np.minimum(steps, last) - start[:, None]
    obs_rows = dataset.obs_start[episode][:, None] + np.concatenate(
        [offset[:, :1], offset + 1], axis=1
    )
    out = {m: dataset.flat[m][obs_rows] for m in modes}
    out.update(
        {k: dataset.flat[k][np.minimum(steps, last)] for k in ("action", "reward", "dropped")}
    )
    out["mask"] = mask
    return out


def head_losses(
    out: torch.Tensor,
    reward: torch.Tensor,
    dropped: torch.Tensor,
    mask: torch.Tensor,
    fail_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward MSE (steps that did not fail: the penalty is the planner's) and failure BCE.

    ``out`` (..., 2) holds the reward and the failure logit; ``mask`` marks real steps;
    ``fail_weight`` weighs the (rare) failures against the other steps.
    """
    ok = (1.0 - dropped) * mask
    reward_mse = ((out[..., 0] - reward) ** 2 * ok).sum() / ok.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(
        out[..., 1], dropped, reduction="none", pos_weight=out.new_tensor(fail_weight)
    )
    return reward_mse, (bce * mask).sum() / mask.sum().clamp(min=1.0)


def frames_of(obs: Any) -> np.ndarray:
    """(B, S, S, 3) uint8 frames from a frame, a batch of frames or a state+pixels dict."""
    frames = np.asarray(obs["pixels"] if isinstance(obs, dict) else obs)
    return frames[None] if frames.ndim == 3 else frames


class PixelModel(nn.Module):
    """Recurrent state-space model over frames with goal-conditioned reward and failure heads."""

    family = "pixel"

    def __init__(
        self,
        image_size: int = 64,
        action_dim: int = 4,
        depth: int = 16,
        embed_dim: int = 128,
        deter: int = 128,
        stoch: int = 16,
        hidden: int = 128,
        seq_len: int = 8,
        batch_size: int = 8,
        lr: float = 6e-4,
        free_nats: float = 1.0,
        kl_scale: float = 1.0,
        kl_balance: float = 0.8,
        head_scale: float = 10.0,
        fail_weight: float = 10.0,
        grad_clip: float = 100.0,
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
            deter=deter,
            stoch=stoch,
            hidden=hidden,
            seq_len=seq_len,
            batch_size=batch_size,
            lr=lr,
            free_nats=free_nats,
            kl_scale=kl_scale,
            kl_balance=kl_balance,
            head_scale=head_scale,
            fail_weight=fail_weight,
            grad_clip=grad_clip,
            goal_labels=list(goal_labels),
            seed=seed,
        )
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1; got {seq_len}, {batch_size}")
        torch.manual_seed(seed)
        self.deter, self.stoch = deter, stoch
        self.goal = Goal(goal_labels)
        self.obs_mode = "state+pixels" if self.goal.dim else "pixels"
        feat = deter + stoch
        self.encoder = ConvEncoder(image_size, embed_dim, depth)
        self.init = MLP(embed_dim, deter, (hidden,))
        self.inp = nn.Sequential(nn.Linear(stoch + action_dim, hidden), nn.SiLU())
        self.gru = nn.GRUCell(hidden, deter)
        self.prior = MLP(deter, 2 * stoch, (hidden,))
        self.post = MLP(deter + embed_dim, 2 * stoch, (hidden,))
        self.decoder = ConvDecoder(feat, image_size, depth)
        self.head = MLP(feat + self.goal.dim, 2, (hidden, hidden))  # reward, failure logit
        self.device = torch.device(device)
        self.to(self.device)
        self.eval()
        self._rng = np.random.default_rng(seed)
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self._optimizer: torch.optim.Optimizer | None = None

    # -- latent mechanics -----------------------------------------------------------------
    @staticmethod
    def _gaussian(raw: torch.Tensor) -> Normal:
        mean, std = raw.chunk(2, -1)
        return Normal(mean, F.softplus(std) + MIN_STD, validate_args=False)

    def _initial(self, embed: torch.Tensor) -> tuple[torch.Tensor, Normal]:
        """Deterministic state and posterior from a first frame's embedding."""
        h = torch.tanh(self.init(embed))
        return h, self._gaussian(self.post(torch.cat([h, embed], -1)))

    def _sample(self, dist: Normal) -> torch.Tensor:
        """Reparameterised sample with the model's own generator (exact resumption)."""
        noise = torch.randn(dist.mean.shape, generator=self._generator, device=self.device)
        return dist.mean + dist.stddev * noise

    def _advance(self, h: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.gru(self.inp(torch.cat([s, a], -1)), h)

    # -- training -------------------------------------------------------------------------
    def fit(self, dataset: Dataset, steps: int, **kwargs: Any) -> dict[str, list[float]]:
        """Train for ``steps`` more gradient steps (the optimizer persists across calls)."""
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
            self._optimizer = torch.optim.Adam(self.parameters(), lr=c["lr"], eps=1e-5)
        keys = ("loss", "recon", "kl", "reward_mse", "fail_bce", "open_reward_mse")
        losses: dict[str, list[float]] = {k: [] for k in keys}
        self.train()
        for _ in range(steps):
            batch = sample_windows(dataset, c["batch_size"], c["seq_len"], self._rng, modes)
            terms = self._losses(batch)
            self._optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            nn.utils.clip_grad_norm_(self.parameters(), c["grad_clip"])
            self._optimizer.step()
            for k in keys:
                losses[k].append(float(terms[k].detach()))
        self.eval()
        return losses

    def _losses(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        c = self.config
        dev = self.device
        x = frames_to_tensor(batch["pixels"], dev)  # (B, L+1, 3, S, S)
        act = torch.as_tensor(batch["action"], device=dev)
        reward = torch.as_tensor(batch["reward"], device=dev)
        dropped = torch.as_tensor(batch["dropped"], device=dev).float()
        mask = torch.as_tensor(batch["mask"], device=dev).float()  # (B, L): real steps
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).bool()  # (B, L+1) frames
        state = batch.get("state")
        goal = self.goal(torch.as_tensor(state[:, 0], device=dev)) if state is not None else None
        embed = x.new_zeros((*x.shape[:2], self.config["embed_dim"]))
        embed[valid] = self.encoder(x[valid])  # padding frames are never looked at
        h, post = self._initial(embed[:, 0])
        s = self._sample(post)
        feats, kls = [torch.cat([h, s], -1)], []
        h_open, s_open, open_feats = h, post.mean, []
        for t in range(act.shape[1]):
            h = self._advance(h, s, act[:, t])
            prior = self._gaussian(self.prior(h))
            post = self._gaussian(self.post(torch.cat([h, embed[:, t + 1]], -1)))
            s = self._sample(post)
            feats.append(torch.cat([h, s], -1))
            kls.append(self._balanced_kl(post, prior))
            h_open = self._advance(h_open, s_open, act[:, t])
            s_open = self._gaussian(self.prior(h_open)).mean
            open_feats.append(torch.cat([h_open, s_open], -1))
        feat = torch.stack(feats, 1)  # (B, L+1, F)
        recon = (self.decoder(feat[valid]) - x[valid]).pow(2).sum((-3, -2, -1)).mean()
        kl = (torch.stack(kls, 1) * mask).sum() / mask.sum()
        reward_mse, fail_bce = self._head_losses(feat[:, 1:], goal, reward, dropped, mask)
        open_reward_mse, open_fail_bce = self._head_losses(
            torch.stack(open_feats, 1), goal, reward, dropped, mask
        )
        heads = reward_mse + fail_bce + open_reward_mse + open_fail_bce
        loss = recon + c["kl_scale"] * kl + c["head_scale"] * heads
        return {
            "loss": loss,
            "recon": recon,
            "kl": kl,
            "reward_mse": reward_mse,
            "fail_bce": fail_bce,
            "open_reward_mse": open_reward_mse,
        }

    def _balanced_kl(self, post: Normal, prior: Normal) -> torch.Tensor:
        """KL balancing (DreamerV2): train the prior harder than the posterior; free nats."""
        c = self.config
        sg_post = Normal(post.mean.detach(), post.stddev.detach())
        sg_prior = Normal(prior.mean.detach(), prior.stddev.detach())
        lhs = kl_divergence(sg_post, prior).sum(-1)
        rhs = kl_divergence(post, sg_prior).sum(-1)
        free = c["free_nats"]
        return c["kl_balance"] * lhs.clamp(min=free) + (1 - c["kl_balance"]) * rhs.clamp(min=free)

    def _head_losses(
        self,
        feat: torch.Tensor,
        goal: torch.Tensor | None,
        reward: torch.Tensor,
        dropped: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward MSE on real steps that did not fail, failure BCE on real steps."""
        if goal is not None:
            feat = torch.cat([feat, goal[:, None].expand(-1, feat.shape[1], -1)], -1)
        return head_losses(self.head(feat), reward, dropped, mask, self.config["fail_weight"])

    def train_state(self) -> dict[str, Any]:
        """Optimizer and sampling RNG (a copy: training goes on), so a resume continues exactly."""
        return {
            "optimizer": None
            if self._optimizer is None
            else copy.deepcopy(self._optimizer.state_dict()),
            "rng": self._rng.bit_generator.state,
            "generator": self._generator.get_state(),
        }

    def load_train_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            self._optimizer = torch.optim.Adam(self.parameters(), lr=self.config["lr"], eps=1e-5)
            self._optimizer.load_state_dict(state["optimizer"])
        self._rng.bit_generator.state = state["rng"]
        self._generator.set_state(state["generator"])

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, obs: Any) -> torch.Tensor:
        """A state+pixels dict (or frames, without goal labels) -> z (B, deter + stoch + goal)."""
        frames = frames_of(obs)
        goal = self.goal.from_obs(obs, len(frames), self.device)
        h, post = self._initial(self.encoder(frames_to_tensor(frames, self.device)))
        return torch.cat([h, post.mean, goal], -1)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prior-mean step: z' (B, Z), reward (B,), p_fail (B,); the goal is carried."""
        h, s, goal = z.split([self.deter, self.stoch, self.goal.dim], -1)
        h = self._advance(h, s, action.to(z.dtype).clamp(-1.0, 1.0))
        z2 = torch.cat([h, self.prior(h).chunk(2, -1)[0], goal], -1)
        out = self.head(z2)
        return z2, out[:, 0], torch.sigmoid(out[:, 1])

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor) -> np.ndarray:
        """Latents (B, Z) -> uint8 frames (B, S, S, 3) from the decoder."""
        return tensor_to_frames(self.decoder(z[:, : self.deter + self.stoch]))

    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        """Open-loop prior rollout from one frame under ``actions`` (H, A), decoded."""
        z = self.encode(obs0)[:1]
        latents = []
        for a in np.asarray(actions, np.float32):
            z = self.step(z, torch.as_tensor(a, device=self.device)[None])[0]
            latents.append(z)
        frames = self.decode_frames(torch.cat(latents)) if latents else None
        return Imagination(frames=frames, frames_kind="decoder", cup_pos=None)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint({"config": self.config, "weights": self.state_dict()}, path, FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> PixelModel:
        ckpt = load_checkpoint(path, FORMAT, map_location=device)
        model = cls(**ckpt["config"], device=device)
        model.load_state_dict(ckpt["weights"])
        return model
