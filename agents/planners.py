"""CEM, iCEM and MPPI over action sequences for any batched ``step_fn(z, a) -> (z2, r, p_fail)``.

Every candidate sequence is evaluated by ``particles`` copies at once: the batch has
``population * particles`` rows, row ``p * particles + k`` being particle k of candidate p, in
the same order at every step (so an ensemble that maps row b to member b % E keeps each particle
on one member: TS-inf). The cost of a candidate is the particles' mean of

    -sum_t [S_t r_t + (1 - S_t) r_dead] + failure_penalty * sum_t S_t p_t,
    S_0 = 1, S_{t+1} = S_t (1 - p_t),

the expected return of an episode that may terminate with a penalty at each predicted step.
A failed episode keeps earning ``r_dead`` (the tasks' per-step reward floor) for the rest of
the horizon: were it 0, failing early would beat failing late whenever rewards are negative,
and a planner facing only failing candidates would pick the quickest drop.
Plans are warm-started: the previous plan shifted by one step seeds the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


REFITS = ("clipped", "raw")  # what CEM refits its Gaussian to (see CEM)
GRIPS = ("continuous", "binary")  # how the grip (the last action entry) is planned (Planner)


class Scored(NamedTuple):
    """One iteration's candidates (N, H, A): as drawn (``raw``), clipped to the bounds
    (``actions``, what the model scored), and their costs (N,)."""

    raw: torch.Tensor
    actions: torch.Tensor
    cost: torch.Tensor


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` torch threads, then restore the count (a sub-microsecond switch).

    The planner's own arithmetic (sampling, elite fitting) is a few hundred tiny ops that gain
    nothing from threads, while each parallel region wakes the pool: on a busy 2-core machine
    a float32 matmul of a few hundred flops took 60-90 ms at 2 threads against 0.005 ms at 1
    (oneDNN/OpenMP workers waiting for a core), which made the zero-cost floor ~100x slower.
    """
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


class Planner:
    """Shared machinery: bounds, warm start, sampling and the cost of candidate sequences."""

    def __init__(
        self,
        horizon: int = 10,
        population: int = 100,
        iterations: int = 3,
        particles: int = 5,
        init_std: float = 0.5,
        failure_penalty: float = 100.0,
        dead_reward: float = -1.0,
        action_dim: int = 4,
        action_low: float | np.ndarray = -1.0,
        action_high: float | np.ndarray = 1.0,
        seed: int = 0,
        device: str = "cpu",
        grip: str = "continuous",
        grip_std: float | None = None,
    ):
        for name, value in (("horizon", horizon), ("population", population)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if iterations < 1 or particles < 1:
            raise ValueError(
                f"iterations and particles must be >= 1; got {iterations}, {particles}"
            )
        self.horizon, self.population = horizon, population
        self.iterations, self.particles = iterations, particles
        self.init_std, self.failure_penalty = init_std, failure_penalty
        self.dead_reward = dead_reward
        self.action_dim = action_dim
        self.device = torch.device(device)
        shape = (action_dim,)
        self.low = torch.as_tensor(np.broadcast_to(action_low, shape).copy(), dtype=torch.float32)
        self.high = torch.as_tensor(np.broadcast_to(action_high, shape).copy(), dtype=torch.float32)
        self.low, self.high = self.low.to(self.device), self.high.to(self.device)
        if grip not in GRIPS:
            raise ValueError(f"unknown grip {grip!r}; valid: {list(GRIPS)}")
        if grip_std is not None and grip_std <= 0:
            raise ValueError(f"grip_std must be > 0 (or null: init_std); got {grip_std}")
        self.grip, self.grip_std = grip, grip_std
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.mean: torch.Tensor | None = None
        self.model_threads = torch.get_num_threads()  # the model's, set again by each plan

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self.mean = None

    def _initial_mean(self, prior: torch.Tensor | None = None) -> torch.Tensor:
        """The warm start; ``prior`` (default: the box centre) fills steps with no plan yet.

        The MPC agent passes the action that changes nothing (no motion, the grip it holds):
        a centred grip of 0 would let go of a carried cup in every initial candidate.
        """
        fill = (self.low + self.high) / 2 if prior is None else prior.to(self.low)
        if self.mean is None:
            return fill.expand(self.horizon, -1).clone()
        return torch.cat([self.mean[1:], fill[None]], 0)  # shift by one step

    def _clip(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def _initial_std(self, mean: torch.Tensor) -> torch.Tensor:
        """``init_std`` everywhere, the grip's own ``grip_std`` in its column when given."""
        std = torch.full_like(mean, self.init_std)
        if self.grip_std is not None:
            std[..., -1] = self.grip_std
        return std

    def _decide(self, actions: torch.Tensor) -> torch.Tensor:
        """The actions the model scores and the robot executes, from the planner's own.

        ``grip: binary`` plans the grip as the decision it is: open (low) or closed (high) by
        the side of the middle its value falls on. Under ``continuous`` CEM draws a fresh
        grip magnitude every step, and the executed command jitters between a half-open and
        a closed hand (the cup tips or falls); a binary grip is firm either way. The planner
        keeps sampling and refitting the continuous value (a preference: decided values
        would collapse the spread at one bound), so the grip changes only when the elites
        move the plan's mean across the middle: a committed switch.
        """
        if self.grip == "continuous":
            return actions
        out = actions.clone()
        mid = (self.low[-1] + self.high[-1]) / 2
        out[..., -1] = torch.where(actions[..., -1] >= mid, self.high[-1], self.low[-1])
        return out

    def _sample(
        self, mean: torch.Tensor, std: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws around the plan, the plan itself first: raw (what the refit averages)
        and clipped to the bounds (what the model scores)."""
        noise = torch.randn((n, *mean.shape), generator=self.generator, device=self.device)
        raw = mean + std * noise
        raw[0] = mean  # keep the current plan among the candidates
        return raw, self._clip(raw)

    @torch.no_grad()
    def cost(self, step_fn: StepFn, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Expected cost (N,) of N candidate sequences (N, H, A) from one start latent z0.

        A ``step_fn`` that also has ``rollout(z0, actions) -> (reward, p_fail)``, each (B, H),
        is asked for the whole horizon in one call (the simulator: one ``mujoco.rollout``
        instead of H); otherwise it is stepped H times.
        """
        n, h = actions.shape[:2]
        k = self.particles
        acts = self._decide(actions).repeat_interleave(
            k, dim=0
        )  # row p*k + j: particle j of candidate p
        whole = getattr(step_fn, "rollout", None)
        with torch_threads(self.model_threads):
            if whole is not None:
                reward, p_fail = whole(z0, acts)
            else:
                z = z0.reshape(1, -1).expand(n * k, -1)
                rewards, fails = [], []
                for t in range(h):
                    z, r, p = step_fn(z, acts[:, t])
                    rewards.append(r)
                    fails.append(p)
                reward, p_fail = torch.stack(rewards, 1), torch.stack(fails, 1)
        reward, p_fail = reward.to(self.device), p_fail.to(self.device)
        # survival before each step: S_0 = 1, S_{t+1} = S_t (1 - p_t)
        alive = torch.cumprod(torch.cat([torch.ones_like(p_fail[:, :1]), 1 - p_fail[:, :-1]], 1), 1)
        ret = (alive * reward + (1.0 - alive) * self.dead_reward).sum(1)
        cost = -ret + self.failure_penalty * (alive * p_fail).sum(1)
        return cost.reshape(n, k).mean(1)

    def plan(
        self, step_fn: StepFn, z0: torch.Tensor, prior: torch.Tensor | None = None
    ) -> np.ndarray:
        """The first action of the optimised sequence, float32 within the bounds.

        The model runs on the caller's torch threads, the planner's own arithmetic on one.
        """
        self.model_threads = torch.get_num_threads()
        with torch_threads(1):
            mean = self.optimise(step_fn, z0.to(self.device), prior)
        self.mean = mean
        return self._decide(mean[0]).cpu().numpy().astype(np.float32)

    def optimise(
        self, step_fn: StepFn, z0: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The plan (H, A): ``iterations`` rounds of sampling around it, scoring the draws and
        refitting the sampling distribution to them (``_update``, each method's own)."""
        mean = self._initial_mean(prior)
        std = self._initial_std(mean)
        for _ in range(self.iterations):
            raw, actions = self._sample(mean, std, self.population)
            scored = Scored(raw, actions, self.cost(step_fn, z0, actions))
            mean, std = self._update(mean, std, scored)
        return mean

    def _update(
        self, mean: torch.Tensor, std: torch.Tensor, scored: Scored
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampling distribution's next mean and std, from its last and the scored draws."""
        raise NotImplementedError


class CEM(Planner):
    """Cross-entropy method: refit a diagonal Gaussian to the ``elites`` best candidates.

    The model scores the draws clipped to the bounds; ``refit`` says what the Gaussian is
    refitted to. ``clipped`` (those actions) drags a mean at a bound inwards: a dimension the
    model is indifferent to there settles at E[min(N(1, 0.5), 1)] = 0.8 (a learned model that
    never saw a full grip slip plans a grip of 0.8-0.9, and a heavier cup than any in training
    slips out). ``raw`` (the draws before clipping, the mean clipped after) keeps it at the
    bound but pushes an optimum just inside one outwards (a toy quadratic's 0.8 under a bound
    of 1: 0.85-0.92 after 8 plans vs 0.78-0.83); measured per agent (docs/measurements.md).
    """

    def __init__(
        self,
        elites: int = 10,
        min_std: float = 0.05,
        momentum: float = 0.1,
        refit: str = "clipped",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= elites <= self.population:
            raise ValueError(f"elites must be in [1, population={self.population}]; got {elites}")
        if refit not in REFITS:
            raise ValueError(f"unknown refit {refit!r}; valid: {list(REFITS)}")
        self.elites, self.min_std, self.momentum = elites, min_std, momentum
        self.refit = refit

    def _update(
        self, mean: torch.Tensor, std: torch.Tensor, scored: Scored
    ) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.topk(scored.cost, self.elites, largest=False).indices
        elite = (scored.raw if self.refit == "raw" else scored.actions)[order]
        new_std = elite.std(0, unbiased=False) if self.elites > 1 else std
        mean = self._clip(self.momentum * mean + (1 - self.momentum) * elite.mean(0))
        std = (self.momentum * std + (1 - self.momentum) * new_std).clamp(min=self.min_std)
        return mean, std


class ICEM(CEM):
    """CEM improved as in iCEM (Pinneri et al. 2020): coloured noise, kept elites, the best plan.

    Samples are power-law ("coloured") noise in time, ``noise_beta`` 0 white, 2 brown: smooth
    sequences whose low frequencies move the plan as a whole. A fraction ``keep_elites`` of the
    elites joins the next iteration's candidates, and after a step the last elites, shifted by
    one step, join the first; the population shrinks by ``population_decay`` per iteration.
    The plan executed and warm-started is the best candidate ever scored, not the elites' mean
    (which may sit between two good plans and be worse than both: a grip halfway released).
    """

    def __init__(
        self,
        noise_beta: float = 2.0,
        keep_elites: float = 0.3,
        population_decay: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.refit != "clipped":
            raise ValueError("ICEM refits to the candidates it scored (refit: clipped)")
        if noise_beta < 0 or not 0 <= keep_elites <= 1 or population_decay < 1:
            raise ValueError(
                "need noise_beta >= 0, keep_elites in [0, 1], population_decay >= 1; got "
                f"{noise_beta}, {keep_elites}, {population_decay}"
            )
        self.noise_beta, self.keep_elites = noise_beta, keep_elites
        self.population_decay = population_decay
        self.kept: torch.Tensor | None = None
        # Power-law amplitudes over the horizon's frequencies (the zero frequency as the
        # lowest), turned once into a linear map from white coefficients (real and imaginary
        # parts; DC and Nyquist have none imaginary) to time samples: sampling is one matmul.
        # On one thread, as the planner's arithmetic runs: a multi-threaded FFT rounds
        # differently, and the same seed would plan other actions on 2 threads.
        k = self.horizon // 2 + 1
        with torch_threads(1):
            freqs = torch.fft.rfftfreq(self.horizon)
            freqs[0] = freqs[1] if self.horizon > 1 else 1.0
            amp = torch.diag(freqs ** (-noise_beta / 2)).to(torch.complex64)
            imag = torch.fft.irfft(1j * amp, n=self.horizon)
            imag[0] = 0.0
            if self.horizon % 2 == 0:
                imag[-1] = 0.0
            basis = torch.cat([torch.fft.irfft(amp, n=self.horizon), imag])  # (2k, H)
        self._basis = (basis / basis.pow(2).sum(0).mean().sqrt()).to(self.device)
        self._coefficients = 2 * k

    def reset(self) -> None:
        super().reset()
        self.kept = None

    def _coloured(self, n: int) -> torch.Tensor:
        """(n, H, A) unit-variance noise, correlated in time with spectrum 1 / f^beta."""
        shape = (n * self.action_dim, self._coefficients)
        white = torch.randn(shape, generator=self.generator, device=self.device)
        # one 2-D product: a batched one spins up the thread pool for a few hundred flops
        noise = (white @ self._basis).reshape(n, self.action_dim, self.horizon)
        return noise.transpose(1, 2)

    def optimise(
        self, step_fn: StepFn, z0: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        mean = self._initial_mean(prior)
        std = self._initial_std(mean)
        kept = None
        if self.kept is not None:  # last step's elites, one step on
            fill = mean[-1:].expand(len(self.kept), 1, -1)
            kept = torch.cat([self.kept[:, 1:], fill], 1)
        best, best_cost = mean, float("inf")
        n_keep = int(round(self.keep_elites * self.elites))
        memo: dict[bytes, float] | None = {} if getattr(step_fn, "deterministic", False) else None
        for i in range(self.iterations):
            n = max(self.elites, int(self.population / self.population_decay**i))
            actions = mean + std * self._coloured(n)
            actions[0] = mean
            if kept is not None and len(kept):
                actions = torch.cat([actions, kept])
            actions = self._clip(actions)
            cost = self._scored(step_fn, z0, actions, memo)
            order = torch.topk(cost, self.elites, largest=False).indices
            elite = actions[order]
            if float(cost[order[0]]) < best_cost:
                best, best_cost = elite[0], float(cost[order[0]])
            new_std = elite.std(0, unbiased=False) if self.elites > 1 else std
            mean = self.momentum * mean + (1 - self.momentum) * elite.mean(0)
            std = (self.momentum * std + (1 - self.momentum) * new_std).clamp(min=self.min_std)
            kept = elite[:n_keep]
        self.kept = kept
        return best

    def _scored(
        self,
        step_fn: StepFn,
        z0: torch.Tensor,
        actions: torch.Tensor,
        memo: dict[bytes, float] | None,
    ) -> torch.Tensor:
        """The candidates' costs; with a ``memo`` (a deterministic model: the simulators) each
        distinct sequence is rolled out once per plan. The kept elites are scored again at
        every iteration otherwise, and last step's best, shifted, is also the warm start: 3 of
        the simulators' 24 rollouts per action."""
        if memo is None:
            return self.cost(step_fn, z0, actions)
        keys = [row.tobytes() for row in actions.reshape(len(actions), -1).cpu().numpy()]
        fresh: dict[bytes, int] = {}  # each new sequence -> its first row
        for i, key in enumerate(keys):
            if key not in memo:
                fresh.setdefault(key, i)
        if fresh:
            rows = actions[list(fresh.values())]
            memo.update(zip(fresh, self.cost(step_fn, z0, rows).tolist(), strict=True))
        return torch.tensor([memo[k] for k in keys], device=actions.device)


class MPPI(Planner):
    """Model-predictive path integral: candidates averaged with weights exp(-cost / temperature).

    ``temperature`` is relative to the population's cost spread (median minus best), so one
    value works whatever the reward scale, and a few catastrophic candidates (a predicted drop
    costs hundreds) cannot flatten the weights the way a standard deviation would. The sampling
    std follows the weighted spread, as in TD-MPC's MPPI, down to ``min_std``.
    """

    def __init__(self, temperature: float = 0.3, min_std: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature, self.min_std = temperature, min_std

    def _update(
        self, mean: torch.Tensor, std: torch.Tensor, scored: Scored
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cost, actions = scored.cost, scored.actions
        best = cost.min()
        scale = self.temperature * (cost.median() - best + 1e-6)
        weights = torch.softmax(-(cost - best) / scale, 0)[:, None, None]
        mean = (weights * actions).sum(0)
        std = ((weights * (actions - mean) ** 2).sum(0)).sqrt().clamp(min=self.min_std)
        return mean, std


class ModelStep:
    """A world model's ``step`` as the planners take it, with the model's ``rollout`` beside.

    ``Planner.cost`` uses a step function's ``rollout(z0, actions)`` when it has one: a whole
    horizon in one call (the simulator: one ``mujoco.rollout``; a learned model: the recurrence
    stepped H times, its heads scoring all N x H transitions in one batch).
    """

    def __init__(self, model: object):
        self.model = model
        self.deterministic = getattr(model, "deterministic", False)  # see ICEM._scored

    def __call__(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.step(z, action)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rollout(z0, actions)


def step_function(model: object) -> StepFn:
    """What a planner plans with: ``model.step``, whole-horizon when the model has ``rollout``."""
    return ModelStep(model) if hasattr(model, "rollout") else model.step


def zero_cost_step(z: torch.Tensor, action: torch.Tensor):
    """A model that predicts nothing, instantly: the floor of a planner's own overhead."""
    zero = torch.zeros(z.shape[0], device=z.device)
    return z, zero, zero
