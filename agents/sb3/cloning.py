"""Learning from the demonstrations: behaviour cloning of SAC's actor (before and while it
learns) and the critic's warm-up on the prefilled replay buffer."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import polyak_update

from embodied.agents.sb3.demos import Transition


class DemoBatches:
    """Demonstrated (observation, action) pairs, served as batches normalised as SAC sees
    them; actions kept just inside +-1, where tanh (SAC's squashing) has a finite inverse."""

    def __init__(self, rows: list[Transition], seed: int):
        self.obs = np.stack([r[0] for r in rows])
        self.act = torch.as_tensor(np.clip(np.stack([r[2] for r in rows]), -0.97, 0.97))
        self.rng = np.random.default_rng(seed)

    def sample(self, model: BaseAlgorithm, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.integers(len(self.obs), size=size)
        obs = self.obs[idx]
        vn = model.get_vec_normalize_env()
        if vn is not None:
            obs = vn.normalize_obs(obs)
        return torch.as_tensor(obs, dtype=torch.float32), self.act[idx].float()


def demo_nll(model: BaseAlgorithm, demos: DemoBatches) -> torch.Tensor:
    """The actor's mean negative log-likelihood of a batch of demonstrated actions: fits the
    action and how sure to be of it (a grip it must never loosen gets a narrow spread)."""
    actor = model.actor  # type: ignore[attr-defined]
    obs, act = demos.sample(model, int(getattr(model, "batch_size", 256)))
    mean, log_std, _ = actor.get_action_dist_params(obs)
    return -actor.action_dist.proba_distribution(mean, log_std).log_prob(act).mean()


def pretrain_actor(model: BaseAlgorithm, demos: DemoBatches, steps: int) -> None:
    """Behaviour cloning: ``steps`` steps of the actor's own optimiser on :func:`demo_nll`."""
    actor = model.actor  # type: ignore[attr-defined]
    for _ in range(steps):
        loss = demo_nll(model, demos)
        actor.optimizer.zero_grad()
        loss.backward()
        actor.optimizer.step()


def warm_critic(model: SAC, steps: int) -> None:
    """``steps`` of SAC's own critic update (soft Bellman targets, Polyak-averaged target
    nets) on the replay buffer as it stands, the actor and temperature held fixed.

    Offline-to-online practice: after a prefill and behaviour cloning, the critic first
    learns what the cloned actor is worth, so the first actor updates follow a critic that
    knows carrying from dropping instead of a random one.
    """
    buffer = model.replay_buffer
    assert buffer is not None
    ent_coef = (
        float(torch.exp(model.log_ent_coef.detach()))
        if model.log_ent_coef is not None
        else float(model.ent_coef_tensor)
    )
    model.policy.set_training_mode(True)
    for _ in range(steps):
        data = buffer.sample(model.batch_size, env=model.get_vec_normalize_env())
        with torch.no_grad():
            nxt, logp = model.actor.action_log_prob(data.next_observations)
            q_next = torch.cat(model.critic_target(data.next_observations, nxt), dim=1)
            q_next = q_next.min(dim=1, keepdim=True).values - ent_coef * logp.reshape(-1, 1)
            target = data.rewards + (1 - data.dones) * model.gamma * q_next
        loss = 0.5 * sum(
            torch.nn.functional.mse_loss(q, target)
            for q in model.critic(data.observations, data.actions)
        )
        model.critic.optimizer.zero_grad()
        loss.backward()
        model.critic.optimizer.step()
        polyak_update(model.critic.parameters(), model.critic_target.parameters(), model.tau)
    model.policy.set_training_mode(False)


class BehaviourCloning(BaseCallback):
    """Keeps pulling SAC's actor toward the demonstrations while it learns: after each env
    step once updates have begun, one step of the actor's optimiser on ``weight`` x
    :func:`demo_nll`, so an untrained critic cannot argue the actor out of carrying."""

    def __init__(self, demos: DemoBatches, weight: float):
        super().__init__()
        self.demos, self.weight = demos, weight

    def _on_step(self) -> bool:
        if self.num_timesteps > self.model.learning_starts:  # type: ignore[attr-defined]
            actor = self.model.actor  # type: ignore[attr-defined]
            loss = self.weight * demo_nll(self.model, self.demos)
            actor.optimizer.zero_grad()
            loss.backward()
            actor.optimizer.step()
        return True
