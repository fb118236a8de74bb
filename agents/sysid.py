"""``sysid``: MuJoCo at nominal physics that identifies the episode's work parameters online.

The simulator starts at nominal training physics and, as the episode runs, fits the shift
catalogue's work parameters (cup mass, grip force, actuator gain, joint damping, cup
friction, ...) to the episode's own observed transitions: the last ``window`` steps are
replayed in one batched ``mujoco.rollout`` under ``population`` candidate parameter sets (one
preallocated MjModel each, written in place by the catalogue's own writers: no copy or
compile per candidate) and the candidates are scored by how far their predicted next states
(joint positions and velocities, pad touch forces) land from the observed ones, each channel
group (arm joints, fingers, cup, touch) in units of its own noise: the arm's joints sag under
the cup's weight while it does not slip, which measures its mass apart from its friction, and
they replay almost exactly, while the cup and the pads' forces are chaotic where contacts
stick or slip. CEM iterations in log-parameter space, warm-started from the last estimate,
refine the estimate at every step while the episode goes on; with ``newton`` the second
iteration also tries the Gauss-Newton point of the window's posterior (from the sensitivity
the finite-difference probes measured), which reaches a cup twice its nominal mass in a few
steps, before the posterior has narrowed around wherever the CEM steps had got to.

The fit is a recursive posterior: the window's prior is not the nominal one but the posterior
of every transition that has left the window (the estimate fitted when the newest of them was,
with the prior's precision plus their Gauss-Newton information from finite-difference probes),
so each transition's evidence enters once and nothing pulls the estimate back to nominal.
The planner plans in ``particles`` parameter sets at once, from the estimate to a cautious
point ``caution`` posterior stds towards the cup hardest to hold, and pays each plan's mean
cost over them: what it would do to a heavier cup counts, while progress at the estimate still
pays (planning at the cautious point alone freezes the arm while that point is uncertain).

It never reads the episode's true physics: the observation (MuJoCo's full state, as
``oracle`` and ``nominal`` encode it, and the touch readings of the state vector) and the
controls it applied are all it fits to. The controls are read back from the state: the
servo targets and the grip command are part of ``z``.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium
import mujoco
import numpy as np
import torch
from omegaconf import DictConfig

from embodied.agents.mpc import MPCAgent
from embodied.agents.mpc import make_policy as make_mpc_policy
from embodied.agents.simulator import SimulatorModel
from embodied.envs.arm import STATE_LABELS
from embodied.envs.scene import SCENE
from embodied.shifts import NOMINAL
from embodied.shifts.catalogue import SHIFTS
from embodied.shifts.model import WORK_WRITERS, write_work

WORK_PARAMS = tuple(
    p.name for s in SHIFTS.values() if s.kind == "work" for p in s.params if not p.integer
)
# prior spread (std of the log value) of each identified parameter
DEFAULT_PRIOR = {
    "cup_mass": 0.5,
    "grip_force": 0.5,
    "actuator_gain": 0.8,
    "joint_damping": 1.5,
    "cup_friction": 0.4,
}
# which way each parameter makes holding the cup harder (log units): heavier, weaker, slipperier
HOLDING = {"cup_mass": 1.0, "grip_force": -1.0, "cup_friction": -1.0}
PROBE = 0.05  # log step of the finite differences that measure the fit's sensitivity
TOUCH = [STATE_LABELS.index("touch_left"), STATE_LABELS.index("touch_right")]
TOUCH_SCALE = 10.0  # the state vector reports min(touch, 50 N) / 10
# error scales of the fit: 1 mm or mrad, 1 cm/s or 10 mrad/s, 0.1 N
QPOS_SCALE, QVEL_SCALE, FORCE_SCALE = 1e-3, 1e-2, 0.1
# channel groups of the fit's residuals, each with its own noise: the arm's joints (their sag
# under the cup's weight measures its mass while it does not slip), the fingers, the cup's
# free joint and the pads' touch forces (both chaotic where contacts stick or slip)
CHANNELS = ("arm", "fingers", "cup", "touch")


class SysIDModel(SimulatorModel):
    """A simulator that fits its own work parameters to the episode; see the module docstring."""

    def __init__(
        self,
        prior: Mapping[str, float] | None = None,
        window: int = 4,
        population: int = 16,
        elites: int = 4,
        iterations: int = 1,
        min_std: float = 0.03,
        drift: float = 0.05,
        caution: float = 0.0,
        noise: float | Mapping[str, float] = 1.0,
        particles: int = 1,
        newton: bool = False,
        threads: int | None = None,
        timestep: float | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        super().__init__(family="nominal", threads=threads, timestep=timestep, device=device)
        self.family = "sysid"
        prior = dict(DEFAULT_PRIOR if prior is None else prior)
        unknown = sorted(set(prior) - set(WORK_PARAMS))
        if unknown or not prior:
            raise ValueError(
                f"prior must name work parameters to identify; unknown {unknown}, "
                f"valid: {list(WORK_PARAMS)}"
            )
        if window < 1 or iterations < 1 or not 1 <= elites <= population:
            raise ValueError(
                f"need window >= 1, iterations >= 1 and 1 <= elites <= population; got "
                f"{window}, {iterations}, {elites}, {population}"
            )
        self.names = tuple(prior)
        # the writers of the identified parameters, in catalogue order (as build_model runs them)
        self.shifts = tuple(s for s in WORK_WRITERS if any(p.name in prior for p in s.params))
        self.prior_std = np.array([float(prior[n]) for n in self.names])
        self.window, self.population, self.elites = int(window), int(population), int(elites)
        self.iterations = int(iterations)
        self.min_std, self.drift = float(min_std), float(drift)
        if caution < 0:
            raise ValueError(f"caution must be >= 0 (posterior stds); got {caution}")
        self.caution = float(caution)
        # the fit's error scales x noise (per channel group, or one for all): one std
        self.noise = dict.fromkeys(CHANNELS, noise) if np.isscalar(noise) else dict(noise)
        if set(self.noise) != set(CHANNELS) or min(self.noise.values()) <= 0:
            raise ValueError(
                f"noise must be > 0, one value or one per channel group {list(CHANNELS)}; "
                f"got {noise}"
            )
        if particles < 1:
            raise ValueError(f"particles must be >= 1; got {particles}")
        self.particles = int(particles)
        if newton and (iterations < 2 or population < 2):
            raise ValueError(
                "newton needs iterations >= 2 and population >= 2 (a later iteration tries "
                f"the Newton point beside the estimate); got {iterations}, {population}"
            )
        self.newton = bool(newton)  # propose the Gauss-Newton point in every refit
        self.holding = np.array([HOLDING.get(n, 0.0) for n in self.names])
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ protocol
    def attach(self, env: gymnasium.Env) -> None:
        """Start the episode at nominal physics and the prior spread; forget the last one."""
        super().attach(env)  # family "nominal": the env's nominal model, never its own
        # the reference the writers scale from, at the env's own timestep (the fit replays
        # the env's substeps, whatever the planning timestep)
        self.nominal = self.at_rest(self._attached().nominal_model())
        self.scratch = mujoco.MjData(self.nominal)  # what mj_setConst writes into
        d = len(self.names)
        self.candidates = [copy.copy(self.nominal) for _ in range(self.population + d)]
        self.particle_models = [copy.copy(self.model) for _ in range(self.particles)]
        self.prior_mean = np.log([NOMINAL[n] for n in self.names])
        self.mean = self.prior_mean.copy()
        # The recursive prior of the window's fit: the posterior of every transition that has
        # left the window (mean: the estimate fitted when the newest of them was; precision:
        # the prior's plus their Gauss-Newton information, each transition's entered once,
        # at the linearisation of its last fit).
        self.anchor_mean = self.prior_mean.copy()
        self.anchor_precision = np.diag(self.prior_std**-2.0)
        self.window_information = np.zeros((d, d))  # of the transitions in the window
        self.absorbed = 0  # transitions whose information is in anchor_precision
        # the estimate after each of the last `window` fits (the anchors to come)
        self.means: deque[np.ndarray] = deque(maxlen=self.window)
        self.std = self.prior_std.copy()
        self.scales = self._scales()
        self.history: list[tuple[float, np.ndarray, np.ndarray]] = []  # (time, z, touch)
        self.refits = 0

    def encode(self, obs: Any) -> torch.Tensor:
        """MuJoCo's state as the simulators encode it; a new observation refines the fit."""
        z = super().encode(obs)
        state = obs["state"] if isinstance(obs, dict) else obs
        now = float(z[0, 0])  # the state's first entry is the simulation time
        if not self.history or now > self.history[-1][0]:
            touch = TOUCH_SCALE * np.ravel(np.asarray(state, np.float64))[TOUCH]  # (S,) or (1, S)
            self.history.append((now, z[0].numpy().copy(), touch))
            if len(self.history) >= 2:
                self._refit()
        return z

    def estimates(self) -> dict[str, float]:
        """The current estimate of each identified parameter (physical units)."""
        return {n: float(v) for n, v in zip(self.names, np.exp(self.mean), strict=True)}

    @property
    def information(self) -> np.ndarray:
        """Gauss-Newton information of every transition seen so far, each counted once."""
        return self.anchor_precision - np.diag(self.prior_std**-2.0) + self.window_information

    def covariance(self) -> np.ndarray:
        """Posterior covariance of the log-parameters (Laplace): the prior's, narrowed only
        along the directions the transitions seen so far have measured."""
        return np.linalg.inv(self.anchor_precision + self.window_information)

    def planning_points(self) -> list[np.ndarray]:
        """``particles`` parameter sets evenly spaced from the estimate to the cautious point
        (one: the cautious point): the planner's particle j of every candidate plans in the
        j-th, so a plan pays for what it would do anywhere on that segment."""
        if self.particles == 1:
            return [self.planning_point()]
        shift = self.planning_point() - self.mean
        return [self.mean + f * shift for f in np.linspace(0.0, 1.0, self.particles)]

    def rollout_models(self, n: int) -> mujoco.MjModel | list[mujoco.MjModel]:
        """Row ``p * particles + j`` (the planners' particle j of candidate p) in particle j's
        model."""
        if self.particles == 1:
            return self.model
        if n % self.particles:
            raise ValueError(f"{n} rollouts are not whole sets of {self.particles} particles")
        return self.particle_models * (n // self.particles)

    def planning_point(self) -> np.ndarray:
        """The log-parameters to plan in: the estimate moved ``caution`` posterior stds the way
        that makes holding the cup hardest (the worst case on that ellipsoid's surface), so a
        cup whose mass nothing has measured yet is planned as if it might be heavy."""
        if self.caution == 0.0 or not self.holding.any():
            return self.mean
        shift = self.covariance() @ self.holding
        return self.mean + self.caution * shift / np.sqrt(self.holding @ shift)

    # ------------------------------------------------------------------ identification
    def _refit(self) -> None:
        """``iterations`` CEM iterations over log-parameters on the last ``window`` transitions."""
        recent = self.history[-(self.window + 1) :]
        zs = np.stack([z for _, z, _ in recent])
        starts, ends = zs[:-1, : self.nstate], zs[1:, : self.nstate]
        controls = zs[1:, self.nstate :]  # what was applied during each step
        touches = np.stack([t for _, _, t in recent[1:]])
        k, d = len(starts), len(self.names)
        newton = None  # the Gauss-Newton point, once the probes have measured the sensitivity
        for i in range(self.iterations):
            cands = self.mean + self.std * self.rng.standard_normal((self.population, d))
            cands[0] = self.mean
            if newton is not None:
                cands[1] = newton
            if i == 0:  # finite-difference probes around the estimate: its sensitivity
                cands = np.concatenate([cands, self.mean + PROBE * np.eye(d)])
            m = len(cands)
            models = [self.write(model, c) for model, c in zip(self.candidates, cands)]  # noqa: B905
            states, sensors = self._simulate(
                [model for model in models for _ in range(k)],
                np.tile(starts, (m, 1)),
                np.repeat(np.tile(controls[:, None, :], (m, 1, 1)), self.env_substeps, axis=1),
                states=True,
            )
            res = self._residuals(states[:, -1], sensors[:, -1], ends, touches)
            res = res.reshape(m, -1) / np.tile(self.scales, k)
            if i == 0:
                jac = ((res[-d:] - res[0]) / PROBE).reshape(d, k, -1)  # (d, transitions, r)
                infos = self._information(jac)
                self.window_information = infos.sum(0)
                if self.newton:
                    newton = self._newton(jac.reshape(d, -1), res[0])
                cands, res = cands[:-d], res[:-d]
            off = cands - self.anchor_mean
            prior = np.einsum("na,ab,nb->n", off, self.anchor_precision, off)
            loss = (res**2).sum(1) + prior  # twice the negative log posterior
            order = np.argsort(loss)
            elite = cands[order[: self.elites]]
            # the Newton point when it fits best (the elites' mean would pull it back towards
            # the old estimate), else the elites' mean
            best_is_newton = newton is not None and i > 0 and order[0] == 1
            self.mean = cands[1].copy() if best_is_newton else elite.mean(0)
            spread = np.sqrt(elite.var(0) + self.drift**2)
            self.std = np.clip(spread, self.min_std, self.prior_std)
        self.refits += 1
        self.means.append(self.mean.copy())
        if k == self.window:  # the oldest transition leaves the window before the next fit
            self.anchor_precision = self.anchor_precision + infos[0]
            self.window_information = self.window_information - infos[0]
            # the estimate fitted on every transition up to it and none after
            self.anchor_mean = self.means[-self.window]
            self.absorbed += 1
        points = self.planning_points()
        self._set_model(self.write(self.model, points[-1]))
        if self.particles > 1:
            for model, point in zip(self.particle_models, points, strict=True):
                self.write(model, point)  # copies of the planning model: its timestep too

    def _newton(self, jac: np.ndarray, res: np.ndarray) -> np.ndarray:
        """The Gauss-Newton point of the window's posterior from the estimate, whose scaled
        residuals are ``res`` with sensitivity ``jac`` (d, residuals): a CEM step moves a few
        spreads at most, and a posterior that narrows faster than it moves locks in its bias.
        Each parameter moves at most one prior std (a trust region)."""
        precision = self.anchor_precision + jac @ jac.T
        gradient = jac @ res + self.anchor_precision @ (self.mean - self.anchor_mean)
        step = -np.linalg.solve(precision, gradient)
        return self.mean + np.clip(step, -self.prior_std, self.prior_std)

    @staticmethod
    def _information(jac: np.ndarray) -> np.ndarray:
        """Each transition's Gauss-Newton information (transitions, d, d) from the sensitivity
        (d, transitions, residuals) of its scaled residuals."""
        return np.einsum("atr,btr->tab", jac, jac)

    def _residuals(
        self, pred: np.ndarray, sensors: np.ndarray, ends: np.ndarray, touches: np.ndarray
    ) -> np.ndarray:
        """Error of each row's predicted next state against the observed one (physical units;
        ``scales`` turns it into standard deviations)."""
        k = len(ends)
        reps = len(pred) // k
        nq, nv = self.model.nq, self.model.nv
        ends, touches = np.tile(ends, (reps, 1)), np.tile(touches, (reps, 1))
        qpos = pred[:, 1 : 1 + nq] - ends[:, 1 : 1 + nq]
        qvel = pred[:, 1 + nq : 1 + nq + nv] - ends[:, 1 + nq : 1 + nq + nv]
        s = self._attached().sensors(sensors)
        touch = np.stack([s["left_touch"][:, 0], s["right_touch"][:, 0]], 1)
        seen = touches < 50.0  # the state vector saturates at 50 N
        force = np.where(seen, np.minimum(touch, 50.0) - touches, 0.0)
        return np.concatenate([qpos, qvel, force], 1)

    def _scales(self) -> np.ndarray:
        """One std of each residual of ``_residuals`` (its error scale x its group's noise)."""
        m = self.model
        qpos, qvel = np.empty(m.nq), np.empty(m.nv)
        for j in range(m.njnt):
            name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j)
            group = "cup" if name == "cup" else "fingers" if "finger" in name else "arm"
            kind = mujoco.mjtJoint(m.jnt_type[j])
            nq, nv = {mujoco.mjtJoint.mjJNT_FREE: (7, 6), mujoco.mjtJoint.mjJNT_BALL: (4, 3)}.get(
                kind, (1, 1)
            )
            qpos[m.jnt_qposadr[j] : m.jnt_qposadr[j] + nq] = self.noise[group]
            qvel[m.jnt_dofadr[j] : m.jnt_dofadr[j] + nv] = self.noise[group]
        touch = np.full(2, self.noise["touch"])
        return np.concatenate([QPOS_SCALE * qpos, QVEL_SCALE * qvel, FORCE_SCALE * touch])

    def write(self, model: mujoco.MjModel, log_values: np.ndarray) -> mujoco.MjModel:
        """``model`` (a copy of the nominal one) rewritten in place at these log-parameters by
        the identified shifts' writers (tests/agents/test_sysid.py checks every field against
        ``build_model``)."""
        values = {**NOMINAL, **dict(zip(self.names, np.exp(log_values).tolist(), strict=True))}
        write_work(model, self.nominal, values, SCENE, self.scratch, self.shifts)
        return model


class SysIDAgent(MPCAgent):
    """The MPC agent whose episodes record what its model identified.

    For its first ``probe_steps`` steps it holds still (the grip it has) while the model
    identifies: planning in a model still at nominal physics is what drops a heavy cup.
    """

    def __init__(self, world_model: SysIDModel, planner: Any, probe_steps: int = 0):
        super().__init__(world_model, planner)
        if probe_steps < 0:
            raise ValueError(f"probe_steps must be >= 0; got {probe_steps}")
        self.probe_steps = int(probe_steps)

    def reset(self, env: gymnasium.Env) -> None:
        super().reset(env)
        self.steps = 0

    def act(self, obs: Any) -> np.ndarray:
        self.steps += 1
        if self.steps > self.probe_steps:
            return super().act(obs)
        with torch.inference_mode():
            self.world_model.encode(obs)
        return self.last_action

    def episode_record(self) -> dict[str, float]:
        return self.world_model.estimates()


def make_policy(
    agent_cfg: DictConfig | dict, checkpoint_dir: Any, env: gymnasium.Env, seed: int
) -> SysIDAgent:
    """The ``policy`` factory of configs/agent/sysid.yaml: the MPC policy, with its record."""
    wanted = int(agent_cfg["world_model"].get("particles", 1))
    if int(agent_cfg["planner"].get("particles", 1)) != wanted:
        raise ValueError(
            f"planner.particles must equal world_model.particles ({wanted}): each planner "
            "particle plans in one of the model's parameter sets"
        )
    agent = make_mpc_policy(agent_cfg, checkpoint_dir, env, seed)
    return SysIDAgent(agent.world_model, agent.planner, int(agent_cfg.get("probe_steps", 0)))
