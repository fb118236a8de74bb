"""The ``state`` world model: a PETS-style probabilistic ensemble over the physical state.

E MLPs (one batched ``EnsembleMLP``) each predict a Gaussian over the *normalised state delta*
with learned log-variance bounds; each member trains on its own bootstrap of batches. Planning
uses trajectory sampling TS-inf: row ``b`` of a batch always goes through member ``b % E``, so a
particle keeps its member for the whole horizon when the planner keeps row order (ours does).
Delta entries that never change in the data (the target, say) are copied exactly, not predicted,
so they cannot drift over a long imagined rollout.
With ``nll_beta`` > 0 the Gaussian NLL is beta-NLL (Seitzer et al. 2022): each element's loss is
weighted by its predicted variance to the power beta (not differentiated). Plain NLL lets the
model explain a rare large delta (a pushed cup starting to tip) with a wide variance and a mean
near "nothing happens"; an open-loop rollout of that mean never tips the cup, so the failure
head, which reads the predicted states, never sees the tip coming.

A reward head reads s' (trained on steps that did not fail: the failure penalty is the planner's
business) and a failure head reads (s, s') (BCE on ``dropped``). Both see the state plus its
*relative geometry*: for every pair of named 3-vectors in ``relative_groups`` (``cup_x/y/z``,
``target_x/y/z``, ...) their difference and distance. Rewards and failures of arm tasks are
functions of such differences; without them a head fitted on a few hundred targets
extrapolates wildly and the planner exploits it. Neither head sees the action, and the reward is
clamped to the range seen in the data, so a planner cannot buy reward with actions or states the
data never showed: it has to move the predicted state.

With ``value_weight`` > 0 a value head V(s) (reading the same features) is fitted to the
discounted Monte-Carlo return-to-go of each collected episode, and ``rollout`` adds
``value_weight * value_gamma**H * V(z_H)`` to the last step's reward: a plan is also paid for
where it leaves the arm, beyond a horizon too short to reward going round the cup on CupPush.
Monte-Carlo rather than TD: no target network or extra training loop, and the collected episodes
are mostly scripted ones whose returns show which states lead to a push. Episodes end in success
(V = 0 after it: rewards are <= 0), a failure (``value_fail`` is the return from the state
before it and from the failed state; it replaces the env's own failing-step reward, whose -200
penalty made every state near the cup look like a tip on CupPush; the planner's failure head
prices failures within the horizon) or the time limit (the last reward taken to persist:
r / (1 - gamma)). ``step`` never adds it: its semantics are the one-step model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.nets import (
    MLP,
    EnsembleMLP,
    GaussianHead,
    Normalizer,
    gaussian_nll,
    state_tensor,
)
from embodied.agents.settings import config_from
from embodied.agents.vector_model import VectorModel
from embodied.dataset import Dataset

FORMAT = "embodied-state-model/1"
CUP_POS_LABELS = ("cup_x", "cup_y", "cup_z")
RELATIVE_GROUPS = ("ee", "cup", "target", "servo")


class RelativeGeometry(nn.Module):
    """Differences and distances between every pair of named 3-vectors in the state."""

    def __init__(self, state_labels: Sequence[str], groups: Sequence[str]):
        super().__init__()
        labels = list(state_labels)
        found = [g for g in groups if all(f"{g}_{c}" in labels for c in "xyz")]
        idx = [[labels.index(f"{g}_{c}") for c in "xyz"] for g in found]
        pairs = [(i, j) for i in range(len(idx)) for j in range(i + 1, len(idx))]
        self.register_buffer("a", torch.tensor([idx[i] for i, _ in pairs], dtype=torch.long))
        self.register_buffer("b", torch.tensor([idx[j] for _, j in pairs], dtype=torch.long))
        self.dim = 4 * len(pairs)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.dim == 0:
            return s[..., :0]
        diff = s[..., self.a] - s[..., self.b]  # (..., P, 3)
        return torch.cat([diff, diff.norm(dim=-1, keepdim=True)], -1).flatten(-2)


@dataclass
class StateConfig:
    """The state model's settings (``world_model`` in configs/agent/state.yaml)."""

    members: int = 5  # ensemble members
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    head_hidden: list[int] = field(default_factory=lambda: [128, 128])
    relative_groups: list[str] = field(default_factory=lambda: list(RELATIVE_GROUPS))
    act: str = "silu"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256  # per member
    max_logvar: float = 0.5
    min_logvar: float = -10.0
    sample: bool = False  # plan on sampled deltas (else the members' means)
    nll_beta: float = 0.0  # beta-NLL's exponent, see the module docstring
    value_weight: float = 0.0  # > 0: the terminal value head, see the module docstring
    value_gamma: float = 0.95
    value_fail: float = -20.0
    cup_pos_labels: list[str] = field(default_factory=lambda: list(CUP_POS_LABELS))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "head_hidden", "relative_groups", "cup_pos_labels"):
            setattr(self, name, list(getattr(self, name)))
        if self.members < 1:
            raise ValueError(f"members must be >= 1; got {self.members}")
        if not 0.0 <= self.nll_beta <= 1.0:
            raise ValueError(f"nll_beta must be in [0, 1]; got {self.nll_beta}")
        if self.value_weight < 0.0 or not 0.0 < self.value_gamma <= 1.0:
            raise ValueError(
                f"value_weight must be >= 0 and value_gamma in (0, 1]; "
                f"got {self.value_weight}, {self.value_gamma}"
            )


class StateModel(VectorModel):
    """Probabilistic ensemble dynamics + reward/failure head over the env's state vector."""

    Config: type[StateConfig] = StateConfig
    family = "state"
    obs_mode = "state"
    checkpoint_format = FORMAT
    context_dim = 0  # width of a per-sample context the dynamics and failure head also read

    def __init__(self, *, device: str = "cpu", **settings: Any):
        """``settings``: the fields of the family's ``Config`` (``StateConfig`` here)."""
        super().__init__()
        self.config = config_from(self.Config, settings)
        c = self.config
        self.members = c.members
        self.sample = c.sample
        self.device = torch.device(device)
        self.state_dim = self.action_dim = 0
        self.state_labels: list[str] = []
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self._rng = np.random.default_rng(c.seed)
        self._optimizer: torch.optim.Optimizer | None = None
        self._data: tuple[int, dict[str, torch.Tensor]] | None = None

    # -- construction ---------------------------------------------------------------------
    def build(self, state_dim: int, action_dim: int, state_labels: Sequence[str] = ()) -> None:
        """Create the networks once the data's dimensions are known."""
        c = self.config
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.state_labels = list(state_labels)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global RNG
            torch.manual_seed(c.seed)
            self._build_nets(state_dim, action_dim)
        self.to(self.device)

    def _build_nets(self, state_dim: int, action_dim: int) -> None:
        c = self.config
        self.state_norm = Normalizer(state_dim)
        self.delta_norm = Normalizer(state_dim)
        self.register_buffer("constant", torch.zeros(state_dim, dtype=torch.bool))
        self.register_buffer("reward_range", torch.tensor([-1e9, 1e9]))
        self.dynamics = EnsembleMLP(
            self.members,
            state_dim + action_dim + self.context_dim,
            2 * state_dim,
            c.hidden,
            c.act,
        )
        self.gauss = GaussianHead(state_dim, c.max_logvar, c.min_logvar)
        self.relative = RelativeGeometry(self.state_labels, c.relative_groups)
        feat = state_dim + self.relative.dim
        self.feature_norm = Normalizer(feat)
        self.reward_head = MLP(feat, 1, c.head_hidden, c.act)
        self.fail_head = MLP(2 * feat + self.context_dim, 1, c.head_hidden, c.act)
        if self.has_value:  # built only when used: models without it stay bit-identical
            self.value_head = MLP(feat, 1, c.head_hidden, c.act)
            self.value_norm = Normalizer(1)
            self.register_buffer("value_range", torch.tensor([-1e9, 1e9]))

    @property
    def has_value(self) -> bool:
        return self.config.value_weight > 0.0

    @torch.no_grad()
    def _fit_normalisers(self, data: dict[str, torch.Tensor]) -> None:
        """Statistics of the training data, fitted once and saved with the weights."""
        delta = data["next"] - data["state"]
        states = torch.cat([data["state"], data["next"][-1:]])
        self.state_norm.fit(data["state"].cpu())
        self._fit_delta_and_heads(delta, states, data)
        if self.has_value:
            self.value_norm.fit(data["value"].cpu())
            self.value_range.copy_(torch.stack([data["value"].min(), data["value"].max()]))
        self.to(self.device)

    def _tensors(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        if self._data is None or self._data[0] != id(dataset):
            tr = dataset.transitions("state")
            dev = self.device
            self._data = (
                id(dataset),
                {
                    "state": torch.as_tensor(tr["obs"], device=dev),
                    "next": torch.as_tensor(tr["next_obs"], device=dev),
                    "action": torch.as_tensor(tr["action"], device=dev),
                    "reward": torch.as_tensor(tr["reward"], device=dev),
                    "dropped": torch.as_tensor(tr["dropped"], device=dev).float(),
                },
            )
            if self.has_value:
                self._data[1]["value"] = torch.as_tensor(
                    self.returns_to_go(dataset), device=dev, dtype=torch.float32
                )
        return self._data[1]

    def returns_to_go(self, dataset: Dataset) -> np.ndarray:
        """(N,) discounted return from each transition's *next* state: the value head's target.

        G after the last step is 0 after a success, ``value_fail`` after a failure (also from
        the state before it, instead of the failing step's reward) and r_last / (1 - gamma)
        after the time limit (the situation taken to persist)."""
        c = self.config
        gamma, fail = float(c.value_gamma), float(c.value_fail)
        tr = dataset.transitions("state")
        reward, dropped, terminated = tr["reward"], tr["dropped"], tr["terminated"]
        out = np.zeros(len(reward), np.float64)
        for start, length in zip(dataset.act_start, dataset.lengths, strict=True):
            last = start + length - 1
            end = last
            if dropped[last]:
                out[last], g, end = fail, fail, last - 1
            elif terminated[last]:
                g = 0.0
            else:
                g = float(reward[last]) / max(1.0 - gamma, 1e-6)
            for i in range(end, start - 1, -1):
                out[i] = g  # return from s_{i+1}
                g = float(reward[i]) + gamma * g
        return out

    # -- training -------------------------------------------------------------------------
    def _loss_keys(self) -> tuple[str, ...]:
        return ("loss", "nll", "mse", "reward_mse", "fail_bce") + ("value_mse",) * self.has_value

    def _train_step(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One step on a bootstrap batch per member (``fit`` is ``VectorModel``'s)."""
        assert self._optimizer is not None
        n, bs, e = len(data["state"]), int(self.config.batch_size), self.members
        idx = torch.as_tensor(self._rng.integers(0, n, size=(e, bs)), device=self.device)
        s, s2, a = data["state"][idx], data["next"][idx], data["action"][idx]
        target = self.delta_norm(s2 - s)
        ctx = self._train_context(data, idx)
        mean, logvar = self._dynamics(self.state_norm(s), a, ctx)
        keep = ~self.constant
        nll = gaussian_nll(mean, logvar, target)
        if self.config.nll_beta:  # beta-NLL: each element weighted by its variance^beta
            nll = nll * torch.exp(self.config.nll_beta * logvar.detach())
        nll = nll[..., keep].mean()
        mse = ((mean - target) ** 2)[..., keep].mean()
        f, f2 = self._features(s), self._features(s2)
        reward = self.reward_head(f2)[..., 0]
        fail_logit = self._fail_logit(f, f2, ctx)
        ok = 1.0 - data["dropped"][idx]
        reward_mse = ((reward - data["reward"][idx]) ** 2 * ok).sum() / ok.sum().clamp(min=1.0)
        fail_bce = F.binary_cross_entropy_with_logits(fail_logit, data["dropped"][idx])
        loss = nll + 0.01 * self.gauss.bound_loss() + reward_mse + fail_bce
        value_mse = torch.zeros((), device=self.device)
        if self.has_value:  # in normalised units, on the next states
            value = self.value_head(f2)[..., 0]
            target_v = self.value_norm(data["value"][idx, None])[..., 0]
            value_mse = ((value - target_v) ** 2).mean()
            loss = loss + value_mse
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return (loss, nll, mse, reward_mse, fail_bce, value_mse)[: len(self._loss_keys())]

    def _resume_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def _resume(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    # -- context hooks (none here; agents/adaptive_model.py conditions on the episode) ----
    def _train_context(
        self, data: dict[str, torch.Tensor], idx: torch.Tensor
    ) -> torch.Tensor | None:
        """The (E, B, context_dim) context of the sampled transitions ``idx``; None: no context."""
        return None

    def _plan_context(self, rows: int) -> torch.Tensor | None:
        """The (rows, context_dim) context of ``step``'s batch; None: no context."""
        return None

    # -- prediction -----------------------------------------------------------------------
    def _dynamics(self, s_norm: torch.Tensor, a: torch.Tensor, ctx: torch.Tensor | None = None):
        """(E, B, D) normalised states and (E, B, A) actions -> mean, logvar of normalised delta."""
        parts = [s_norm, a] if ctx is None else [s_norm, a, ctx]
        return self.gauss(self.dynamics(torch.cat(parts, -1)))

    def _fail_logit(
        self, f: torch.Tensor, f2: torch.Tensor, ctx: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = [f, f2] if ctx is None else [f, f2, ctx]
        return self.fail_head(torch.cat(parts, -1))[..., 0]

    def _features(self, s: torch.Tensor) -> torch.Tensor:
        return self.feature_norm(torch.cat([s, self.relative(s)], -1))

    def _delta(self, mean: torch.Tensor) -> torch.Tensor:
        """De-normalised delta; entries constant in the data get exactly their constant."""
        return torch.where(self.constant, self.delta_norm.mean, self.delta_norm.inverse(mean))

    def encode(self, obs: Any) -> torch.Tensor:
        """The raw state vector(s) as a (B, D) tensor; accepts a state+pixels dict too."""
        return state_tensor(obs, self.device)

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TS-inf step: row b uses member b % E. Returns z' (B, D), reward (B,), p_fail (B,)."""
        self._check_built()
        z2 = self._advance(z, action)
        reward, p_fail = self._score(z[:, None], z2[:, None], self._plan_context(len(z)))
        return z2, reward[:, 0], p_fail[:, 0]

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, p_fail), each (N, H), of N sequences (N, H, A) from one state: the ensemble
        stepped H times (row b on member b % E, as in ``step``), the heads (not fed back)
        scoring all N x H transitions in one batch. With the value head on, the last step's
        reward also gets ``value_weight * gamma**H * V(z_H)``."""
        self._check_built()
        zs = [z0.reshape(1, -1).expand(len(actions), -1)]
        for t in range(actions.shape[1]):
            zs.append(self._advance(zs[-1], actions[:, t]))
        z = torch.stack(zs, 1)
        reward, p_fail = self._score(z[:, :-1], z[:, 1:], self._plan_context(len(actions)))
        if self.has_value:
            c = self.config
            scale = c.value_weight * c.value_gamma ** actions.shape[1]
            reward = torch.cat([reward[:, :-1], reward[:, -1:] + scale * self.value(z[:, -1:])], 1)
        return reward, p_fail

    @torch.no_grad()
    def value(self, z: torch.Tensor) -> torch.Tensor:
        """V (...) of raw states (..., D): the fitted return-to-go, clamped to the targets'."""
        self._check_built()
        if not self.has_value:
            raise RuntimeError("this model has no value head (value_weight is 0)")
        v = self.value_norm.inverse(self.value_head(self._features(z)))[..., 0]
        return v.clamp(self.value_range[0], self.value_range[1])

    def _advance(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next states (B, D) of the TS-inf ensemble: row b on member b % E."""
        b, e, d = z.shape[0], self.members, self.state_dim
        ctx = self._plan_context(b)
        parts = [self.state_norm(z), action.to(z.dtype).clamp(-1.0, 1.0)]
        x = torch.cat(parts if ctx is None else [*parts, ctx], -1)
        pad = (-b) % e
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        # (B', D+A) -> (E, B'/E, D+A): member m gets rows m, m+E, m+2E, ...
        out = self.dynamics(x.reshape(-1, e, x.shape[-1]).transpose(0, 1))
        if self.sample:
            mean, logvar = self.gauss(out)
            noise = torch.randn(mean.shape, generator=self.generator, device=mean.device)
            out = mean + noise * torch.exp(0.5 * logvar)
        delta = out[..., :d].transpose(0, 1).reshape(-1, d)[:b]
        # z + de-normalised delta; entries constant in the data get exactly their constant
        scale = self.delta_norm.std * ~self.constant
        return torch.addcmul(z + self.delta_norm.mean, delta, scale)

    def _score(
        self, z: torch.Tensor, z2: torch.Tensor, ctx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward and p_fail (B, T) of transitions z -> z2 (B, T, D) under contexts (B, C)."""
        f, f2 = self._features(z), self._features(z2)
        if ctx is not None:
            ctx = ctx[:, None].expand(-1, z.shape[1], -1)
        reward = self.reward_head(f2)[..., 0].clamp(self.reward_range[0], self.reward_range[1])
        return reward, torch.sigmoid(self._fail_logit(f, f2, ctx))

    @torch.no_grad()
    def predict_mean(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next state from the ensemble's average mean delta (for open-loop video rollouts)."""
        self._check_built()
        a = action.to(z.dtype).clamp(-1.0, 1.0)
        zs = z.unsqueeze(0).expand(self.members, -1, -1)
        az = a.unsqueeze(0).expand(self.members, -1, -1)
        ctx = self._plan_context(len(z))
        cz = None if ctx is None else ctx.unsqueeze(0).expand(self.members, -1, -1)
        mean, _ = self._dynamics(self.state_norm(zs), az, cz)
        return z + self._delta(mean).mean(0)

    def _imagine_step(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.predict_mean(z, action)

    # -- persistence ----------------------------------------------------------------------

    def reseed(self, seed: int) -> None:
        """Reset the sampling noise (used when ``sample`` is on) for reproducible planning."""
        self.generator.manual_seed(seed)
