"""The ``pixel`` world model: a small recurrent state-space model on frames (PlaNet/Dreamer).

Inputs (``agents/frames.py``): each 64x64 frame plus the robot's proprioception (joints, hand
position and velocity, gripper, last command) and the task's goal, read from named entries of
the state vector; the cup and all physics come only through the frames. A conv encoder embeds
each frame, concatenated with the standardised proprioception. The latent state is a
deterministic GRU state ``h`` plus a stochastic Gaussian ``s``: ``h_t = GRU(h_{t-1}, [s_{t-1},
a_{t-1}])``, prior ``p(s_t | h_t)``, posterior ``q(s_t | h_t, e_t)``. A conv decoder
reconstructs every frame (decoding a random quarter or half of them instead was 1.7x cheaper
but scored 25/30 ID on CupCarry against 29/30 at 3000 steps) and an MLP the proprioception
from ``[h_t, s_t]``; the loss adds the balanced KL(q || p) with free nats (DreamerV2). Reward
and failure heads read ``[h_t, s_t, g]`` twice: on the filtered states and on an open-loop
prior rollout from the window's first frame, which is what the planner sees (the open-loop
states also reconstruct the proprioception).

The goal is an input, not something to see: the target is a 2-pixel dot whose depth one fixed
camera cannot tell. ``proprio_labels=[]`` and ``goal_labels=[]`` make a pure ``pixels`` model.

The planner's latent is ``z = [h, s, g]``. ``encode`` starts from one observation (a learned
initial ``h``, posterior mean ``s``); ``observe`` filters: the posterior through the episode's
last ``seq_len + 1`` observations and the actions between them (the window length training
filters over), so at plan time the state carries what was seen, not one frame. ``step``
advances with the prior mean (deterministic) and carries ``g``. ``imagine`` decodes the
open-loop rollout (``frames_kind="decoder"``, no cup position).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    Chain,
    ConvDecoder,
    ConvEncoder,
    frames_to_tensor,
    tensor_to_frames,
)
from embodied.agents.settings import config_from
from embodied.dataset import Dataset

MIN_STD = 0.1


class Gaussian(NamedTuple):
    """A diagonal Gaussian: what torch's ``Normal`` holds, without its per-instance argument
    broadcasting and checks (~60 us each, 33 a training step: ~4% of the step)."""

    mean: torch.Tensor
    std: torch.Tensor


def gaussian_kl(p: Gaussian, q: Gaussian) -> torch.Tensor:
    """KL(p || q) per dimension, in the very operations of torch's Normal-Normal KL."""
    var_ratio = (p.std / q.std).pow(2)
    t1 = ((p.mean - q.mean) / q.std).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


class Window(NamedTuple):
    """The pixel model's belief: the last observations' embeddings and the actions between."""

    embeds: torch.Tensor  # (B, n, embed + proprio)
    actions: torch.Tensor  # (B, n - 1, A)


@dataclass
class PixelConfig(FrameConfig):
    """The pixel model's settings (``world_model`` in configs/agent/pixel.yaml)."""

    image_size: int = 64
    action_dim: int = 4
    depth: int = 16  # channels of the first conv layer (x2 per layer, up to x8)
    embed_dim: int = 128
    deter: int = 128  # GRU state h
    stoch: int = 16  # Gaussian state s
    hidden: int = 128
    seq_len: int = 8  # training windows: steps filtered, and the belief's length
    batch_size: int = 8
    lr: float = 6e-4
    free_nats: float = 1.0
    kl_scale: float = 1.0
    kl_balance: float = 0.8  # the KL's share that trains the prior (DreamerV2)
    head_scale: float = 10.0
    proprio_scale: float = 10.0
    fail_weight: float = 10.0  # failures are rare: weighed up in the BCE
    grad_clip: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.batch_size < 1:
            raise ValueError(
                f"seq_len and batch_size must be >= 1; got {self.seq_len}, {self.batch_size}"
            )
        super().__post_init__()


class PixelModel(FrameModel):
    """Recurrent state-space model over frames + proprioception, goal-conditioned heads."""

    family = "pixel"
    FORMAT = "embodied-pixel-model/3"
    FRAMES_KIND = "decoder"

    def __init__(self, *, task: str | None = None, device: str = "auto", **settings: Any):
        """``settings``: ``PixelConfig``'s fields; ``task`` resolves ``reward_labels="task"``."""
        super().__init__()
        c = config_from(PixelConfig, {**settings, "task": task})
        self._setup(c)
        deter, stoch, hidden = c.deter, c.stoch, c.hidden
        self.deter, self.stoch = deter, stoch
        feat, obs_dim = deter + stoch, c.embed_dim + self.proprio.dim
        self.encoder = ConvEncoder(c.image_size, c.embed_dim, c.depth)
        self.init = MLP(obs_dim, deter, (hidden,))
        self.inp = Chain(nn.Linear(stoch + c.action_dim, hidden), nn.SiLU())
        self.gru = nn.GRUCell(hidden, deter)
        self.prior = MLP(deter, 2 * stoch, (hidden,))
        self.post = MLP(deter + obs_dim, 2 * stoch, (hidden,))
        self.decoder = ConvDecoder(feat, c.image_size, c.depth)
        self.proprio_decoder = MLP(feat, max(self.proprio.dim, 1), (hidden,))
        self.head = GoalHeads(feat, self.goal.dim, self.relative_dim, hidden)
        self._finish(device)
        self._generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self._optimizer: torch.optim.Optimizer | None = None

    # -- latent mechanics -----------------------------------------------------------------
    @staticmethod
    def _gaussian(raw: torch.Tensor) -> Gaussian:
        mean, std = raw.chunk(2, -1)
        return Gaussian(mean, F.softplus(std) + MIN_STD)

    def _embed(self, x: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, S, S) and standardised proprioception (N, P) -> (N, embed + P)."""
        return torch.cat([self.encoder(x), proprio], -1)

    def _initial(self, embed: torch.Tensor) -> tuple[torch.Tensor, Gaussian]:
        """Deterministic state and posterior from a first observation's embedding."""
        h = torch.tanh(self.init(embed))
        return h, self._gaussian(self.post(torch.cat([h, embed], -1)))

    def _sample(self, dist: Gaussian) -> torch.Tensor:
        """Reparameterised sample with the model's own generator (exact resumption)."""
        noise = torch.randn(dist.mean.shape, generator=self._generator, device=self.device)
        return dist.mean + dist.std * noise

    def _advance(self, h: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The GRU's step, called as the kernel: ``GRUCell.forward``'s input checks cost as much
        as the cell itself at the planner's batch sizes (~50 us a call, 38 calls an action)."""
        g = self.gru
        x = self.inp(torch.cat([s, a], -1))
        return torch.gru_cell(x, h, g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh)

    def _imagine_step(
        self, h: torch.Tensor, s: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One open-loop step, as the planner sees it: the next ``h`` and the prior's mean."""
        h = self._advance(h, s, a)
        return h, self.prior(h).chunk(2, -1)[0]

    def _heads(self, feat: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Reward and failure logit (..., 2) from [h, s], the goal and the geometry of the
        predicted hand relative to the goal (the reward from the geometry alone)."""
        proprio = self.proprio_decoder(feat)[..., : self.proprio.dim]
        return self.head(feat, goal, self._relative(proprio, goal))

    # -- training -------------------------------------------------------------------------
    def fit(self, dataset: Dataset, steps: int, **kwargs: Any) -> dict[str, list[float]]:
        """Train for ``steps`` more gradient steps (the optimizer persists across calls)."""
        c = self.config
        modes = self._prepare(dataset)
        if self._optimizer is None:
            self._optimizer = self._new_optimizer()
        keys = ("loss", "recon", "kl", "reward_mse", "fail_bce", "proprio_mse", "open_reward_mse")
        losses: dict[str, list[float]] = {k: [] for k in keys}
        self.train_with(self._optimizer)
        for _ in range(steps):
            batch = sample_windows(dataset, c.batch_size, c.seq_len, self._rng, modes)
            terms = self._losses(batch)
            self._optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            nn.utils.clip_grad_norm_(self.parameters(), c.grad_clip)
            self._optimizer.step()
            for k in keys:
                losses[k].append(float(terms[k].detach()))
        self.eval()
        return losses

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """Adam with its update fused into one kernel: per-parameter ops were ~5% of a step."""
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, eps=1e-5, fused=True)

    def _losses(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        c = self.config
        dev = self.device
        x = frames_to_tensor(batch["pixels"], dev)  # (B, L+1, 3, S, S)
        act = torch.as_tensor(batch["action"], device=dev)
        reward = torch.as_tensor(batch["reward"], device=dev)
        dropped = torch.as_tensor(batch["dropped"], device=dev).float()
        mask = torch.as_tensor(batch["mask"], device=dev).float()  # (B, L): real steps
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], 1).bool()  # (B, L+1) frames
        entries = self._entries(batch.get("state"))
        proprio, goal = entries if entries else (x.new_zeros((*x.shape[:2], 0)),) * 2
        embed = x.new_zeros((*x.shape[:2], c.embed_dim + self.proprio.dim))
        x = x[valid]  # (N, 3, S, S): the real frames (padding is never looked at)
        embed[valid] = self._embed(x, proprio[valid])
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
            h_open, s_open = self._imagine_step(h_open, s_open, act[:, t])
            open_feats.append(torch.cat([h_open, s_open], -1))
        feat, open_feat = torch.stack(feats, 1), torch.stack(open_feats, 1)  # (B, L+1 | L, F)
        # squared error in one kernel each way (sub, pow and pow's backward were 3 passes
        # over the frames; the same values bit for bit)
        recon = F.mse_loss(self.decoder(feat[valid]), x, reduction="none").sum((-3, -2, -1)).mean()
        kl = (torch.stack(kls, 1) * mask).sum() / mask.sum()
        proprio_mse = masked_mse(
            self.proprio_decoder(feat)[..., : self.proprio.dim], proprio, valid.float()
        ) + masked_mse(
            self.proprio_decoder(open_feat)[..., : self.proprio.dim], proprio[:, 1:], mask
        )
        goal_t = goal[:, :1].expand(-1, act.shape[1], -1)  # the episode's goal, every step
        reward_mse, fail_bce = head_losses(
            self._heads(feat[:, 1:], goal_t), reward, dropped, mask, c.fail_weight
        )
        open_reward_mse, open_fail_bce = head_losses(
            self._heads(open_feat, goal_t), reward, dropped, mask, c.fail_weight
        )
        heads = reward_mse + fail_bce + open_reward_mse + open_fail_bce
        loss = recon + c.kl_scale * kl + c.head_scale * heads + c.proprio_scale * proprio_mse
        return {
            "loss": loss,
            "recon": recon,
            "kl": kl,
            "reward_mse": reward_mse,
            "fail_bce": fail_bce,
            "proprio_mse": proprio_mse,
            "open_reward_mse": open_reward_mse,
        }

    def _balanced_kl(self, post: Gaussian, prior: Gaussian) -> torch.Tensor:
        """KL balancing (DreamerV2): train the prior harder than the posterior; free nats."""
        c = self.config
        sg_post = Gaussian(post.mean.detach(), post.std.detach())
        sg_prior = Gaussian(prior.mean.detach(), prior.std.detach())
        lhs = gaussian_kl(sg_post, prior).sum(-1)
        rhs = gaussian_kl(post, sg_prior).sum(-1)
        free = c.free_nats
        return c.kl_balance * lhs.clamp(min=free) + (1 - c.kl_balance) * rhs.clamp(min=free)

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
            self._optimizer = self._new_optimizer()
            self._optimizer.load_state_dict(state["optimizer"])
        self._rng.bit_generator.state = state["rng"]
        self._generator.set_state(state["generator"])

    # -- prediction -----------------------------------------------------------------------
    def _obs_embed(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """An observation -> its embedding (B, embed + P) and standardised goal (B, G)."""
        frames = frames_of(obs)
        proprio, goal = self._obs_entries(obs, len(frames))
        return self._embed(frames_to_tensor(frames, self.device), proprio), goal

    @torch.no_grad()
    def encode(self, obs: Any) -> torch.Tensor:
        """A state+pixels dict (or frames, for pixels only) -> z (B, deter + stoch + goal)."""
        embed, goal = self._obs_embed(obs)
        h, post = self._initial(embed)
        return torch.cat([h, post.mean, goal], -1)

    @torch.no_grad()
    def observe(self, belief: Window | None, action: Any, obs: Any) -> tuple[Window, torch.Tensor]:
        """Filter: fold the action taken and the new observation into the belief (posterior).

        The belief keeps the episode's last ``seq_len + 1`` observation embeddings and the actions
        between them; z is the posterior filtered through that window from its first
        observation, as in training. (A GRU state filtered far past the windows it was trained
        on drifts: measured on CupCarry, the belief said "at the target" while the hand rose
        15 cm past it.) Returns (belief, z) with z (B, deter + stoch + goal).
        """
        embed, goal = self._obs_embed(obs)
        if belief is None:
            none = embed.new_zeros((len(embed), 0, self.config.action_dim))
            belief = Window(embed[:, None], none)
        else:
            a = torch.as_tensor(np.asarray(action, np.float32), device=self.device)
            a = a.reshape(len(embed), 1, -1).clamp(-1.0, 1.0)
            keep = self.config.seq_len
            belief = Window(
                torch.cat([belief.embeds, embed[:, None]], 1)[:, -keep - 1 :],
                torch.cat([belief.actions, a], 1)[:, -keep:],
            )
        h, post = self._initial(belief.embeds[:, 0])
        s = post.mean
        for t in range(belief.actions.shape[1]):
            h = self._advance(h, s, belief.actions[:, t])
            s = self.post(torch.cat([h, belief.embeds[:, t + 1]], -1)).chunk(2, -1)[0]  # mean
        return belief, torch.cat([h, s, goal], -1)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prior-mean step: z' (B, Z), reward (B,), p_fail (B,); the goal is carried."""
        h, s, goal = z.split([self.deter, self.stoch, self.goal.dim], -1)
        feat = torch.cat(self._imagine_step(h, s, action.to(z.dtype).clamp(-1.0, 1.0)), -1)
        out = self._heads(feat, goal)
        return torch.cat([feat, goal], -1), self._reward(out[:, 0]), torch.sigmoid(out[:, 1])

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, p_fail), each (N, H), of N sequences (N, H, A) from one latent: what ``step``
        gives H times, with the recurrence stepped alone and the heads (not fed back) scoring
        all N x H steps in one batch."""
        a = actions.to(z0.dtype).clamp(-1.0, 1.0)
        h, s, goal = z0.reshape(1, -1).split([self.deter, self.stoch, self.goal.dim], -1)
        h, s = h.expand(len(a), -1), s.expand(len(a), -1)
        feats = []
        for t in range(a.shape[1]):
            h, s = self._imagine_step(h, s, a[:, t])
            feats.append(torch.cat([h, s], -1))
        out = self._heads(torch.stack(feats, 1), goal.expand(*a.shape[:2], -1))
        return self._reward(out[..., 0]), torch.sigmoid(out[..., 1])

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor) -> np.ndarray:
        """Latents (B, Z) -> uint8 frames (B, S, S, 3) from the decoder."""
        return tensor_to_frames(self.decoder(z[:, : self.deter + self.stoch]))
