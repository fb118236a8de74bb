"""The true simulator as a world model: ``oracle`` (the episode's own physics) and ``nominal``.

``oracle`` plans in an exact copy of the episode's MjModel, so it knows every work shift;
``nominal`` plans in the model at nominal training physics, a perfect in-distribution model
that knows nothing of the shift. Both are the reference points of the report: a learned
model can at best match ``oracle`` and, if it only learned the training world, ``nominal``.
Neither foresees the env-level effects of a step (action latency, action noise, an external
push): those are events outside the simulated physics.

The latent ``z`` is MuJoCo's full physics state followed by the actuator controls (the
Cartesian servo targets are the controller's memory). ``step`` advances a batch of states by
one control step with ``mujoco.rollout`` (C, multi-threaded), ``rollout`` a whole horizon in
one call; reward and failure come from the task's own ``score`` on the simulated sensors, the
code the env judges with.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium
import mujoco
import numpy as np
import torch
from mujoco import rollout

from embodied.envs.arm import CONTROL_DT, MAX_DELTA, ArmEnv
from embodied.protocols import Imagination

FAMILIES = ("oracle", "nominal")
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


class SimulatorModel:
    """A world model that is MuJoCo itself; see the module docstring."""

    obs_mode = "state"
    deterministic = True  # a sequence's cost is the same at every call (planners reuse it)

    def __init__(
        self,
        family: str = "oracle",
        threads: int | None = None,
        timestep: float | None = None,
        device: str = "cpu",
    ):
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or null (the cell's); got {threads}")
        if family not in FAMILIES:
            raise ValueError(f"unknown simulator family {family!r}; valid: {list(FAMILIES)}")
        if timestep is not None and not 0 < timestep <= CONTROL_DT:
            raise ValueError(f"timestep must be in (0, {CONTROL_DT}] s or null; got {timestep}")
        self.family = family
        self.timestep = timestep  # planning integration step; None: the env's own
        self.threads = threads  # MuJoCo's rollout threads; None: the cell's, read at attach
        self.device = device
        self.env: ArmEnv | None = None
        self._pool: rollout.Rollout | None = None  # started at attach

    # ------------------------------------------------------------------ protocol
    def attach(self, env: gymnasium.Env) -> None:
        """Take the episode's model (oracle) or the nominal one; called after env.reset."""
        self.env = env.unwrapped  # type: ignore[assignment]
        source = self.env.model if self.family == "oracle" else self.env.nominal_model()
        self.env_substeps = self.env.n_substeps
        # The joint springs rest where the episode's start put the arm (the env sets them so);
        # a nominal model rests at the keyframe, 2 rad away: read the posture off the start.
        self.rest_qpos = self.env.data.qpos[self.env._arm_qpos].copy()
        model = copy.copy(source)
        self._set_model(model if self.family == "oracle" else self.at_rest(model))
        # None: as many as the cell's torch threads (embodied-eval's `threads`, 1 per worker
        # by default); a rollout's result does not depend on the thread that runs it
        threads = self.threads or torch.get_num_threads()
        self.datas = [mujoco.MjData(self.model) for _ in range(threads)]
        # one thread pool for the episode's rollouts (as mujoco.rollout.rollout: one data runs
        # on the calling thread), not a fresh one started and joined at every call
        nthread = threads if threads > 1 else 0
        if self._pool is None or self._pool.nthread != nthread:
            self._pool = rollout.Rollout(nthread=nthread)
        self.nstate = mujoco.mj_stateSize(self.model, STATE_SPEC)
        self.nu = self.model.nu
        self._lo = self.model.actuator_ctrlrange[:3, 0]
        self._hi = self.model.actuator_ctrlrange[:3, 1]

    def at_rest(self, model: mujoco.MjModel) -> mujoco.MjModel:
        """``model`` with its arm springs at the observed start posture."""
        model.qpos_spring[self._attached()._arm_qpos] = self.rest_qpos
        return model

    def _set_model(self, model: mujoco.MjModel) -> None:
        """Plan in ``model`` (owned by this simulator), at the planning timestep if one is set."""
        self.model = model
        self._substeps = self.env_substeps
        if self.timestep is not None:
            self._substeps = max(1, int(round(CONTROL_DT / self.timestep)))
            self.model.opt.timestep = CONTROL_DT / self._substeps

    def fit(self, dataset: Any, steps: int = 0, **kwargs: Any) -> dict[str, list[float]]:
        return {}  # nothing to learn

    def encode(self, obs: Any) -> torch.Tensor:
        env = self._attached()
        state = np.empty(self.nstate)
        mujoco.mj_getState(self.model, env.data, state, STATE_SPEC)  # same sizes
        return torch.as_tensor(np.concatenate([state, env.data.ctrl])[None])

    @torch.no_grad()
    def step(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One control step for a batch: (next z, reward, failing now)."""
        states, sensors = self._advance(z.cpu().numpy(), action.cpu().numpy())
        reward, _, failing = self._attached().score(sensors)
        return (
            torch.as_tensor(states),
            torch.as_tensor(reward, dtype=torch.float32),
            torch.as_tensor(failing, dtype=torch.float32),
        )

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward, failing), each (N, H), of N action sequences (N, H, 4) from one z0.

        The servo targets follow from the actions alone, so the controls of every substep are
        known beforehand and the whole horizon is one ``mujoco.rollout`` call.
        """
        z0 = z0.cpu().numpy().astype(np.float64).reshape(-1)
        acts = np.clip(actions.cpu().numpy().astype(np.float64), -1.0, 1.0)
        n, h = acts.shape[:2]
        ctrl = np.tile(z0[self.nstate :], (n, 1))
        controls = np.empty((n, h, self.nu))
        for t in range(h):
            ctrl[:, :3] = np.clip(ctrl[:, :3] + MAX_DELTA * acts[:, t, :3], self._lo, self._hi)
            ctrl[:, 6] = acts[:, t, 3]
            controls[:, t] = ctrl
        _, sensors = self._simulate(
            self.rollout_models(n),
            np.tile(z0[: self.nstate], (n, 1)),
            np.repeat(controls, self._substeps, axis=1),
        )
        reward, _, failing = self._attached().score(
            sensors[:, self._substeps - 1 :: self._substeps]
        )
        return (
            torch.as_tensor(reward, dtype=torch.float32),
            torch.as_tensor(failing, dtype=torch.float32),
        )

    def rollout_models(self, n: int) -> mujoco.MjModel | list[mujoco.MjModel]:
        """The model of each of ``n`` rollouts: the one model (a subclass may vary it by row)."""
        return self.model

    def imagine(self, obs0: Any, actions: np.ndarray, env: gymnasium.Env) -> Imagination:
        """Open loop from the env's current state (it must be at ``obs0``), rendered by MuJoCo."""
        self.attach(env)
        u = self._attached()
        state0 = obs0["state"] if isinstance(obs0, dict) else obs0
        if state0 is not None and not np.allclose(u.state_vector(), state0, atol=1e-5):
            raise ValueError("imagine starts from the env's current state: reset it to obs0 first")
        z = self.encode(obs0).numpy()
        scratch = mujoco.MjData(self.model)
        frames, cup = [], []
        for action in np.asarray(actions, dtype=np.float64):
            z, _ = self._advance(z, action[None])
            mujoco.mj_setState(self.model, scratch, z[0, : self.nstate], STATE_SPEC)
            scratch.ctrl[:] = z[0, self.nstate :]
            mujoco.mj_forward(self.model, scratch)
            vec = u.state_vector(scratch)
            frames.append(u.render_state(vec))
            cup.append(vec[[u.state_labels.index(k) for k in ("cup_x", "cup_y", "cup_z")]])
        return Imagination(np.stack(frames), "render", np.stack(cup))

    def save(self, path: str) -> None:
        raise NotImplementedError("a simulator has no parameters to save")

    # ------------------------------------------------------------------ mechanics
    def _attached(self) -> ArmEnv:
        if self.env is None:
            raise RuntimeError("attach(env) first (the MPC agent does it at reset)")
        return self.env

    def _advance(self, z: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One control step for a batch: (next z, sensordata at its end)."""
        batch = z.shape[0]
        state, ctrl = z[:, : self.nstate], z[:, self.nstate :].copy()
        action = np.clip(np.broadcast_to(action, (batch, 4)), -1.0, 1.0)
        ctrl[:, :3] = np.clip(ctrl[:, :3] + MAX_DELTA * action[:, :3], self._lo, self._hi)
        ctrl[:, 6] = action[:, 3]
        control = np.repeat(ctrl[:, None, :], self._substeps, axis=1)
        states, sensors = self._simulate(self.model, state, control, states=True)
        return np.concatenate([states[:, -1], ctrl], axis=1), sensors[:, -1]

    def _simulate(
        self,
        models: mujoco.MjModel | list[mujoco.MjModel],
        state0: np.ndarray,
        control: np.ndarray,
        states: bool = False,
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """``mujoco.rollout`` of (n, nstate) starts under (n, nstep, nu) controls on this
        simulator's thread pool: (states or None, sensordata), each (n, nstep, ...).

        The inputs are this class's own, so the wrapper's checks and tiling are skipped; with
        the pool kept, a call's fixed cost drops from ~0.2 ms to ~0.1 (2 threads). States are
        recorded only when asked for. The numbers are those of ``mujoco.rollout.rollout``.
        """
        n, nstep = control.shape[:2]
        if isinstance(models, mujoco.MjModel):
            models = [models] * n
        # the checks skipped below guard memory: these shapes are all the C code reads
        if len(models) != n or state0.shape != (n, self.nstate) or control.shape[2] != self.nu:
            shapes = f"{len(models)} models, starts {state0.shape}, controls {control.shape}"
            raise ValueError(f"inconsistent rollout inputs: {shapes}")
        state = np.empty((n, nstep, self.nstate)) if states else None
        sensordata = np.empty((n, nstep, self.model.nsensordata))
        self._pool.rollout(
            models,
            self.datas,
            np.ascontiguousarray(state0, dtype=np.float64),
            np.ascontiguousarray(control, dtype=np.float64),
            skip_checks=True,
            nstep=nstep,
            state=state,
            sensordata=sensordata,
        )
        return state, sensordata
