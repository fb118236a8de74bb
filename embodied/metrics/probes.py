"""State probes: does a model's latent hold the physical state that decides the task?

Frames can look right while the cup's state is wrong. A probe reads, from what the model
carries forward (its ``encode`` output rolled open loop by ``step`` under the episode's real
actions), the three quantities that decide a cup task: the cup's position relative to the hand
(m), its velocity (m/s), and whether a pad touches it (held). Probes are fitted on rollouts of
the ``train`` split and measured, per horizon, on ID and OOD rollouts: a latent that keeps the
state gives a small error at every horizon; a latent that only keeps the look does not.

For a model whose latent *is* the env's state vector (the ``state`` ensemble, ``retrieval``) the
readout is exact: ``exact_readout``; a simulator's latent is MuJoCo's own state, turned back into
the env's state vector by ``simulator_states``. Learned latents get a ridge-regression probe and
a small MLP probe, both reported. Everything is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

HAND = ("ee_x", "ee_y", "ee_z")
CUP = ("cup_x", "cup_y", "cup_z")
CUP_VEL = ("cup_vx", "cup_vy", "cup_vz")
TOUCH = ("touch_left", "touch_right")
PROBE_KINDS = ("linear", "mlp")


@dataclass
class StateTargets:
    """What a probe must read out, for N samples."""

    rel: np.ndarray  # (N, 3) cup position minus hand position, m
    vel: np.ndarray  # (N, 3) cup linear velocity, m/s
    held: np.ndarray  # (N,) bool: a pad touches the cup

    def matrix(self) -> np.ndarray:
        """(N, 7) regression targets: rel, vel, held as 0/1."""
        return np.concatenate([self.rel, self.vel, self.held[:, None].astype(np.float64)], 1)


def state_targets(states: np.ndarray, labels: Sequence[str]) -> StateTargets:
    """Targets from env state vectors (..., D) laid out as ``labels`` (the env's state_labels)."""
    labels = list(labels)
    missing = [n for n in (*HAND, *CUP, *CUP_VEL, *TOUCH) if n not in labels]
    if missing:
        raise ValueError(f"state labels lack {missing}; have {labels}")
    s = np.asarray(states, dtype=np.float64).reshape(-1, len(labels))

    def cols(names: Sequence[str]) -> np.ndarray:
        return s[:, [labels.index(n) for n in names]]

    return StateTargets(
        rel=cols(CUP) - cols(HAND), vel=cols(CUP_VEL), held=(cols(TOUCH) > 0).any(axis=1)
    )


class Steppable(Protocol):
    def encode(self, obs: Any) -> torch.Tensor: ...

    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def open_loop_latents(model: Steppable, obs0: Any, actions: np.ndarray) -> np.ndarray:
    """(N, H+1, Z): ``encode`` of N first observations, then ``step`` under (N, H, A) actions."""
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 3:
        raise ValueError(f"actions must be (N, H, A), got {actions.shape}")
    z = model.encode(obs0)
    if z.shape[0] != actions.shape[0]:
        raise ValueError(f"{z.shape[0]} first observations for {actions.shape[0]} action rows")
    out = [z.double().cpu().numpy()]
    for t in range(actions.shape[1]):
        z = model.step(z, torch.as_tensor(actions[:, t], device=z.device))[0]
        out.append(z.double().cpu().numpy())
    return np.stack(out, axis=1)


class Probe(Protocol):
    def predict(self, z: np.ndarray) -> np.ndarray: ...


@dataclass
class LinearProbe:
    """Ridge regression from standardised latents to the (N, 7) targets (closed form)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # (Z + 1, 7), last row the bias

    @classmethod
    def fit(cls, z: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> LinearProbe:
        mean, std = z.mean(0), z.std(0) + 1e-8
        x = np.concatenate([(z - mean) / std, np.ones((len(z), 1))], 1)
        reg = ridge * len(z) * np.eye(x.shape[1])
        reg[-1, -1] = 0.0  # the bias is not shrunk
        return cls(mean, std, np.linalg.solve(x.T @ x + reg, x.T @ y))

    def predict(self, z: np.ndarray) -> np.ndarray:
        x = np.concatenate([(z - self.mean) / self.std, np.ones((len(z), 1))], 1)
        return x @ self.weights


class MLPProbe:
    """A two-layer MLP (64 tanh units): regression on rel/vel, logistic on held."""

    def __init__(self, z: np.ndarray, y: np.ndarray, steps: int = 1500, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.z_mean, self.z_std = z.mean(0), z.std(0) + 1e-8
        self.y_mean, self.y_std = y[:, :6].mean(0), y[:, :6].std(0) + 1e-8
        with torch.random.fork_rng(devices=[]):  # seeded init, the global generator untouched
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(z.shape[1], 64), torch.nn.Tanh(), torch.nn.Linear(64, 7)
            ).double()
        x = torch.as_tensor((z - self.z_mean) / self.z_std)
        target = torch.as_tensor((y[:, :6] - self.y_mean) / self.y_std)
        held = torch.as_tensor(y[:, 6])
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-3)
        batch = min(256, len(x))
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=gen)
            out = self.net(x[idx])
            loss = torch.nn.functional.mse_loss(out[:, :6], target[idx])
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 6], held[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def predict(self, z: np.ndarray) -> np.ndarray:
        out = self.net(torch.as_tensor((z - self.z_mean) / self.z_std)).numpy()
        reg = out[:, :6] * self.y_std + self.y_mean
        return np.concatenate([reg, 1.0 / (1.0 + np.exp(-out[:, 6:]))], 1)


FITS_KEPT = 8  # fitted probes a process keeps, by content of what they were fitted on
_fitted: dict[str, Probe] = {}


def fit_probe(kind: str, z: np.ndarray, targets: StateTargets, seed: int = 0) -> Probe:
    """A probe of ``kind`` ('linear' or 'mlp') fitted on (N, Z) latents.

    Every cell of an agent and task fits the same probe on the same train latents (an MLP
    takes seconds), so a fit is kept for reuse, keyed by a digest of its very inputs.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; choose from {PROBE_KINDS}")
    z = np.asarray(z, dtype=np.float64).reshape(-1, np.shape(z)[-1])
    y = targets.matrix()
    if len(z) != len(y):
        raise ValueError(f"{len(z)} latents for {len(y)} targets")
    digest = hashlib.sha256(f"{kind} {seed} {z.shape}".encode())
    for array in (z, y):
        digest.update(np.ascontiguousarray(array).tobytes())
    key = digest.hexdigest()
    if key not in _fitted:
        _fitted[key] = LinearProbe.fit(z, y) if kind == "linear" else MLPProbe(z, y, seed=seed)
        while len(_fitted) > FITS_KEPT:
            del _fitted[next(iter(_fitted))]  # the oldest
    return _fitted[key]


@dataclass
class ProbeErrors:
    """Per horizon t = 0..H: mean errors of a readout against the truth."""

    rel: np.ndarray  # (H+1,) mean distance between read and true cup-minus-hand, m
    vel: np.ndarray  # (H+1,) mean distance between read and true cup velocity, m/s
    held: np.ndarray  # (H+1,) fraction of samples whose held/not-held is read wrong

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in getattr(self, k)] for k in ("rel", "vel", "held")}


def errors(read: np.ndarray, truth: StateTargets, horizon: int) -> ProbeErrors:
    """Errors of (N*(H+1), 7) read-outs against targets of N rollouts of H+1 steps."""
    read = np.asarray(read, dtype=np.float64).reshape(-1, horizon + 1, 7)
    y = truth.matrix().reshape(-1, horizon + 1, 7)
    return ProbeErrors(
        rel=np.linalg.norm(read[..., :3] - y[..., :3], axis=-1).mean(0),
        vel=np.linalg.norm(read[..., 3:6] - y[..., 3:6], axis=-1).mean(0),
        held=((read[..., 6] > 0.5) != (y[..., 6] > 0.5)).mean(0),
    )


def simulator_states(model: Any, z: np.ndarray) -> np.ndarray:
    """(..., D) env state vectors of a simulator's latents (..., nstate + nu): MuJoCo's physics
    state then the controls (embodied.agents.simulator), set on scratch data of the model it is
    attached to and read by the env's own ``state_vector``. Mocap bodies (the target) are not
    physics state: they are the attached env's, which must still be at the clip's start."""
    import mujoco

    from embodied.agents.simulator import STATE_SPEC

    env, nstate = model.env, model.nstate
    if env is None:
        raise RuntimeError("attach the simulator to the clip's env before reading its latents")
    scratch = mujoco.MjData(model.model)
    scratch.mocap_pos[:], scratch.mocap_quat[:] = env.data.mocap_pos, env.data.mocap_quat
    flat = np.asarray(z, dtype=np.float64).reshape(-1, np.shape(z)[-1])
    out = []
    for row in flat:
        mujoco.mj_setState(model.model, scratch, row[:nstate], STATE_SPEC)
        scratch.ctrl[:] = row[nstate:]
        mujoco.mj_forward(model.model, scratch)
        out.append(env.state_vector(scratch))
    return np.asarray(out, dtype=np.float64).reshape(*np.shape(z)[:-1], -1)


def exact_readout(z: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(N, 7) read-outs of latents that are env state vectors (the state model's): no probe."""
    return state_targets(z, labels).matrix()


def probe_errors(
    kind: str,
    train_z: np.ndarray,
    train_states: np.ndarray,
    test_z: np.ndarray,
    test_states: np.ndarray,
    labels: Sequence[str],
    seed: int = 0,
) -> ProbeErrors:
    """Fit on train rollouts (N, H+1, Z) vs true states (N, H+1, D); errors per horizon on test.

    ``kind`` 'exact' reads the latent as a state vector; 'linear' and 'mlp' fit a probe on all
    horizons of the train rollouts pooled (the probe must read the state wherever the model's
    own rollout has taken its latent).
    """
    horizon = np.shape(test_z)[1] - 1
    truth = state_targets(test_states, labels)
    if kind == "exact":
        return errors(exact_readout(test_z, labels), truth, horizon)
    probe = fit_probe(kind, train_z, state_targets(train_states, labels), seed=seed)
    flat = np.asarray(test_z, dtype=np.float64).reshape(-1, np.shape(test_z)[-1])
    return errors(probe.predict(flat), truth, horizon)
