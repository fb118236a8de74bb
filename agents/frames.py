"""What the frame-based world models (pixel, latent, retrieval) share: their input boundary.

A real robot's world model sees camera frames plus what the robot knows of itself: its joints
and their velocities, the hand's position and velocity, the gripper opening and its last
command (proprioception), and the task's goal. The cup (pose, velocity, contacts) and every
physics parameter reach it only through the frames. ``StateEntries`` reads exactly the named
entries of the state vector a model may see, standardised; everything else in the state vector
never enters the model. Empty label lists give a pure-pixels model.

Also here: ``FrameConfig`` (the input settings every frame family has), window sampling with a
frame history, the reward/failure head losses and the ``FrameModel`` base class (input boundary,
image-size check, ``imagine``, save/load).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from embodied.agents.nets import (
    MLP,
    Normalizer,
    load_checkpoint,
    match_layouts,
    resolve_device,
    save_checkpoint,
)
from embodied.dataset import Dataset
from embodied.protocols import Imagination
from embodied.registration import TASKS, env_id

GOAL_LABELS = ("target_x", "target_y", "target_z")
FROM_TASK = "task"  # reward_labels: the entries the task's env declares (``reward_entries``)
# The robot's own body and command: no cup entries, no touch sensors (contacts are the cup's).
PROPRIO_LABELS = (
    *(f"q{i}" for i in range(1, 8)),
    "finger",
    *(f"dq{i}" for i in range(1, 8)),
    "dfinger",
    "ee_x", "ee_y", "ee_z",
    "ee_vx", "ee_vy", "ee_vz",
    "servo_x", "servo_y", "servo_z",
    "grip_cmd",
)  # fmt: skip


class StateEntries(nn.Module):
    """Named entries of the state vector, standardised; fitted once from the first dataset.

    Indices and statistics are buffers, saved with the model. Only these entries are read.
    """

    def __init__(self, labels: Sequence[str], what: str = "entries"):
        super().__init__()
        self.labels = list(labels)
        self.what = what
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
        """(..., D) state vectors -> (..., dim) standardised entries (empty without labels)."""
        if self.dim == 0:
            return state.new_zeros((*state.shape[:-1], 0))
        return self.norm(state[..., self.index])

    def from_obs(self, obs: Any, batch: int, device: torch.device) -> torch.Tensor:
        """(B, dim) from an observation dict's ``state`` (empty without labels)."""
        if self.dim == 0:
            return torch.zeros((batch, 0), device=device)
        if not isinstance(obs, dict) or "state" not in obs:
            raise ValueError(
                f"this model reads the {self.what} {self.labels} from the state: pass a "
                "state+pixels observation dict (or build it with empty labels for pixels only)"
            )
        state = torch.as_tensor(np.asarray(obs["state"], np.float32), device=device)
        return self(state.reshape(-1, state.shape[-1]))


def relative_geometry(hand: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """(..., G) hand entries and goal, in the state's units -> (..., G + 1) difference, distance.

    Arm rewards are functions of such differences (as the state model's heads see them); a head
    given only the two vectors must learn a norm from a few thousand steps and extrapolates.
    """
    diff = hand - goal
    return torch.cat([diff, diff.norm(dim=-1, keepdim=True)], -1)


def frames_of(obs: Any) -> np.ndarray:
    """(B, S, S, 3) uint8 frames from a frame, a batch of frames or a state+pixels dict."""
    frames = np.asarray(obs["pixels"] if isinstance(obs, dict) else obs)
    return frames[None] if frames.ndim == 3 else frames


def sample_windows(
    dataset: Dataset,
    batch_size: int,
    length: int,
    rng: np.random.Generator,
    modes: Sequence[str],
    history: int | None = None,
) -> dict[str, np.ndarray]:
    """Windows of up to ``length`` steps from any transition, padded past an episode's end.

    Unlike ``Dataset.sample_sequences`` (whole windows only), short episodes count too, and most
    drops happen in the first few steps of a random-action episode. Returns ``<mode>`` (B, L+1,
    ...), the step arrays (B, L) and ``mask`` (B, L), true for real steps; past the end the last
    observation and step repeat. With a ``history`` K, ``pixels`` is (B, L+1, K, S, S, 3): each
    frame with the K - 1 before it, oldest first, the episode's first frame repeated before it.
    """
    rows = rng.integers(0, dataset.num_transitions, size=batch_size)
    episode = np.searchsorted(dataset.act_start, rows, side="right") - 1
    start, length_ep = dataset.act_start[episode], dataset.lengths[episode]
    steps = rows[:, None] + np.arange(length)[None, :]
    last = (start + length_ep - 1)[:, None]
    mask = steps <= last
    offset = np.minimum(steps, last) - start[:, None]
    first = dataset.obs_start[episode][:, None]
    obs_rows = first + np.concatenate([offset[:, :1], offset + 1], axis=1)
    out = {m: dataset.flat[m][obs_rows] for m in modes}
    if history is not None and "pixels" in modes:
        back = np.arange(1 - history, 1)
        hist = np.maximum(obs_rows[..., None] + back, first[..., None])
        out["pixels"] = dataset.flat["pixels"][hist]
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


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the last axis, averaged over the steps ``mask`` marks real."""
    if pred.shape[-1] == 0:
        return pred.new_zeros(())
    return ((pred - target).pow(2).mean(-1) * mask).sum() / mask.sum().clamp(min=1.0)


def task_reward_entries(task: str) -> tuple[str, ...]:
    """The state entries a task's reward compares with its goal, as its env class declares."""
    env_id(task)  # fails with the valid task names
    return tuple(TASKS[task].reward_entries)


def resolve_reward_labels(
    reward_labels: Sequence[str] | str, task: str | None, proprio_labels: Sequence[str]
) -> list[str]:
    """What the reward head compares with the goal: an explicit list as given, or with
    ``"task"`` the task's declared entries when the proprioception holds them all, else []
    (the reward then reads the model's features and the goal: the cup is only in the frames)."""
    if isinstance(reward_labels, str):
        if reward_labels != FROM_TASK:
            raise ValueError(
                f"reward_labels {reward_labels!r}: give {FROM_TASK!r} (what the task declares), "
                f"a list of proprio_labels {list(proprio_labels)}, or [] (features + goal)"
            )
        if task is None:
            raise ValueError(
                f"reward_labels {FROM_TASK!r} needs the task the model is for: pass task= "
                f"(one of {sorted(TASKS)}; train_world_model passes the dataset's) or give "
                "reward_labels explicitly"
            )
        entries = task_reward_entries(task)
        return list(entries) if entries and set(entries) <= set(proprio_labels) else []
    return list(reward_labels)


def hand_columns(
    proprio_labels: Sequence[str], goal_labels: Sequence[str], reward_labels: Sequence[str]
) -> list[int]:
    """Columns of ``reward_labels`` in the proprioception, checked against the goal's size."""
    if reward_labels and len(reward_labels) != len(goal_labels):
        raise ValueError(
            f"reward_labels {list(reward_labels)} are compared entry by entry with goal_labels "
            f"{list(goal_labels)}: give as many (or [] for none)"
        )
    bad = [label for label in reward_labels if label not in proprio_labels]
    if bad:
        raise ValueError(f"reward_labels {bad} must be among proprio_labels {list(proprio_labels)}")
    return [list(proprio_labels).index(label) for label in reward_labels]


@dataclass
class FrameConfig:
    """The inputs a frame family reads (pixel, latent, retrieval): the settings they share.

    ``reward_labels`` is resolved on construction (``resolve_reward_labels``), so the stored
    config holds the list and a loaded model needs no task.
    """

    proprio_labels: list[str] = field(default_factory=lambda: list(PROPRIO_LABELS))
    goal_labels: list[str] = field(default_factory=lambda: list(GOAL_LABELS))
    reward_labels: list[str] | str = FROM_TASK
    task: str | None = None  # what ``reward_labels="task"`` is resolved against

    def __post_init__(self) -> None:
        self.proprio_labels = list(self.proprio_labels)
        self.goal_labels = list(self.goal_labels)
        self.reward_labels = resolve_reward_labels(
            self.reward_labels, self.task, self.proprio_labels
        )


class GoalHeads(nn.Module):
    """Reward and failure logit (..., 2) of a predicted step towards the goal.

    With the geometry of the task's reward entries relative to the goal (``rel_dim`` > 0: they
    are proprioception, as the hand is for CupCarry) the reward reads only that geometry and the
    goal, as the task's reward is a function of them; otherwise (the cup of CupPush, seen only
    in the frames) it reads the features and the goal. A head that also reads
    the latent features was fooled by plans leading out of the data's region (measured on
    CupCarry: predicted reward -0.06 where the truth was -0.47). The failure logit needs what
    only the frames show (the cup in the hand) and reads everything.
    """

    def __init__(self, feat_dim: int, goal_dim: int, rel_dim: int, hidden: int):
        super().__init__()
        self.geometric = rel_dim > 0
        reward_in = goal_dim + rel_dim if self.geometric else feat_dim + goal_dim
        self.reward = MLP(reward_in, 1, (hidden, hidden))
        self.failure = MLP(feat_dim + goal_dim + rel_dim, 1, (hidden, hidden))

    def forward(self, feat: torch.Tensor, goal: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        reward_in = torch.cat([goal, rel] if self.geometric else [feat, goal], -1)
        fail_in = torch.cat([feat, goal, rel], -1)
        return torch.cat([self.reward(reward_in), self.failure(fail_in)], -1)


class FrameModel(nn.Module):
    """Base of the learned frame models: config, input boundary, device, RNG, save/load.

    A subclass calls ``_setup`` first in its constructor, builds its networks, then ``_finish``.
    """

    FORMAT = ""
    FRAMES_KIND = ""  # what draws ``imagine``'s frames: "decoder", or "probe" of the embedding
    config: Any  # the family's FrameConfig subclass, which adds ``image_size`` and ``seed``

    def train_with(self, *optimizers: torch.optim.Optimizer) -> None:
        """Training mode, with each optimizer's state laid out as its parameters now are (the
        conv nets train channels-last: ``nets.ChannelsLastTraining``, ``nets.match_layouts``)."""
        self.train()
        for optimizer in optimizers:
            match_layouts(optimizer)

    def _setup(self, config: Any) -> None:
        """Keep the family's config, seed the initialisation and build the input boundary: first
        in the constructor, before any network (the initialisation's order is the seed's)."""
        self.config = config
        torch.manual_seed(config.seed)
        self.proprio = StateEntries(config.proprio_labels, "proprioception")
        self.goal = StateEntries(config.goal_labels, "goal")
        self.obs_mode = "state+pixels" if self.proprio.dim or self.goal.dim else "pixels"
        self._hand = hand_columns(config.proprio_labels, config.goal_labels, config.reward_labels)
        self.relative_dim = len(self._hand) + 1 if self._hand else 0
        self.register_buffer("reward_range", torch.tensor([-1e9, 1e9]))
        self._rng = np.random.default_rng(config.seed)

    def _finish(self, device: str) -> None:
        self.device = resolve_device(device)
        self.to(self.device)
        self.eval()

    def _prepare(self, dataset: Dataset) -> tuple[str, ...]:
        """Check the frame size, fit the state entries; the observation modes to sample."""
        size = dataset.manifest.get("image_size")
        if size is not None and int(size) != self.config.image_size:
            raise ValueError(
                f"dataset frames are {size}x{size}; this model was built for image_size="
                f"{self.config.image_size} (set world_model.image_size={size})"
            )
        self.proprio.fit(dataset)
        self.goal.fit(dataset)
        ok = dataset.flat["reward"][~dataset.flat["dropped"].astype(bool)]
        if len(ok) and self.reward_range[0] < -1e8:
            self.reward_range.copy_(torch.tensor([ok.min(), ok.max()]))
        return ("pixels", "state") if self.obs_mode == "state+pixels" else ("pixels",)

    def _entries(self, state: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Standardised (proprio, goal) of a batch of state arrays (None without a state)."""
        if state is None:
            return None
        s = torch.as_tensor(state, device=self.device)
        return self.proprio(s), self.goal(s)

    def _relative(self, proprio: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Standardised proprioception and goal (..., P), (..., G) -> the hand's geometry
        relative to the goal in the state's units (..., G + 1), or (..., 0) without it."""
        if not self._hand:
            return proprio[..., :0]
        p = self.proprio.norm.inverse(proprio)[..., self._hand]
        return relative_geometry(p, self.goal.norm.inverse(goal))

    def _reward(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted reward clamped to the range of the data: no reward the data never showed."""
        return raw.clamp(self.reward_range[0], self.reward_range[1])

    def _obs_entries(self, obs: Any, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.proprio.from_obs(obs, batch, self.device),
            self.goal.from_obs(obs, batch, self.device),
        )

    def encode(self, obs: Any) -> torch.Tensor:
        raise NotImplementedError

    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_frames(self, z: torch.Tensor) -> np.ndarray:
        """Latents (B, Z) -> uint8 frames (B, S, S, 3)."""
        raise NotImplementedError

    def imagine(self, obs0: Any, actions: np.ndarray, env: Any) -> Imagination:
        """Open-loop prediction from one observation under ``actions`` (H, A), every latent
        drawn by ``decode_frames`` (no cup position: the model does not name one)."""
        z = self.encode(obs0)[:1]
        latents = []
        for a in np.asarray(actions, np.float32):
            z = self.step(z, torch.as_tensor(a, device=self.device)[None])[0]
            latents.append(z)
        frames = self.decode_frames(torch.cat(latents)) if latents else None
        return Imagination(frames=frames, frames_kind=self.FRAMES_KIND, cup_pos=None)

    def save(self, path: str | os.PathLike) -> None:
        config = asdict(self.config)
        save_checkpoint({"config": config, "weights": self.state_dict()}, path, self.FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Any:
        map_location = resolve_device(device)
        ckpt = load_checkpoint(path, cls.FORMAT, map_location=map_location)
        model = cls(**ckpt["config"], device=device)
        model.load_state_dict(ckpt["weights"])
        return model
