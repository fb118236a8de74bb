"""Any video predictor as a planning agent, scored by what the arm does.

A predictor only has to predict frames (``VideoPredictor.predict``); the suite supplies the
rest of a world model:

- **State from frames.** ``FrameProbe`` reads the env's state vector out of a frame: ridge
  regression (``embodied.metrics.probes.LinearProbe``) on the frame pooled to ``pool`` x
  ``pool`` pixels, fitted on the task's ``train`` clips (the clips the report fits its state
  probes on, cached in the run directory). The cup relative to the hand and the pads' touch
  are taken from it; the hand moves as the robot commands it; the goal is known (see
  ``VideoWorldModel``).
- **Reward and failure from state.** The read state is laid out as the env's sensors
  (``sensordata``) and judged by the task's own vectorised ``score``: the code the env and the
  simulators judge with.
- **Planning.** The MPC agent's planner (CEM by default) scores N candidate sequences of H
  actions with one ``predict`` call on N rows: the cost of an action is ``iterations`` calls
  of ``predict(B=population, T=context, K=horizon)`` plus the probe on population x horizon
  frames (``configs/agent/video.yaml``; CupCarry's defaults: 2 calls of 64 rows x 5 frames).

The agent's latent is the probe's read-out of a frame: the report's state probes are fitted
on it, so success, drops, PSNR/SSIM and state error land in the same report as every model's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.agents.mpc import MPCAgent, build_planner
from embodied.agents.nets import resolve_device
from embodied.agents.training import for_task, set_torch_threads
from embodied.envs.arm import MAX_DELTA
from embodied.metrics.probes import LinearProbe
from embodied.protocols import Imagination

# the env's sensors as state-vector entries (the state stores a touch force as min(f, 50) / 10)
SENSORS = {
    "left_touch": (("touch_left",), 10.0),
    "right_touch": (("touch_right",), 10.0),
    "ee_pos": (("ee_x", "ee_y", "ee_z"), 1.0),
    "ee_vel": (("ee_vx", "ee_vy", "ee_vz"), 1.0),
    "cup_pos": (("cup_x", "cup_y", "cup_z"), 1.0),
    "cup_quat": (("cup_qw", "cup_qx", "cup_qy", "cup_qz"), 1.0),
    "cup_vel": (("cup_vx", "cup_vy", "cup_vz"), 1.0),
    "cup_angvel": (("cup_wx", "cup_wy", "cup_wz"), 1.0),
    "target_pos": (("target_x", "target_y", "target_z"), 1.0),
}
INDEX = {  # state entries the agent writes itself
    "goal": ("target_x", "target_y", "target_z"),
    "hand": ("ee_x", "ee_y", "ee_z"),
    "cup": ("cup_x", "cup_y", "cup_z"),
    "servo": ("servo_x", "servo_y", "servo_z"),
    "grip": ("grip_cmd",),
}


@runtime_checkable
class VideoPredictor(Protocol):
    """A model that predicts frames from frames and actions; nothing else is asked of it.

    ``predict(context_frames, actions)``: ``context_frames`` uint8 (B, T, H, W, 3), the last T
    frames, oldest first; ``actions`` float32 (B, T+K, A) in [-1, 1], ``actions[:, j]`` the
    action taken just before frame j of the T+K frames (context, then prediction): the first T
    led into the context frames (before an episode's first frame: the hold action), the last K
    are the actions to imagine. Returns uint8 (B, K, H, W, 3). A ``predict`` that also takes
    ``proprio`` gets the robot's proprioception at the context frames, float32 (B, T, P), laid
    out as the agent config's ``proprio_labels``. Batched: B is the planner's population.
    """

    def predict(self, context_frames: np.ndarray, actions: np.ndarray) -> np.ndarray: ...


class CopyLastFrame:
    """The predictor that sees no change: every future frame is the last one it was shown."""

    def predict(self, context_frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        k = actions.shape[1] - context_frames.shape[1]
        return np.repeat(context_frames[:, -1:], k, axis=1)


@dataclass
class FrameProbe:
    """The env's state vector read from frames: ridge regression on pooled pixels."""

    pool: int
    linear: LinearProbe

    @staticmethod
    def features(frames: np.ndarray, pool: int) -> np.ndarray:
        """(..., H, W, 3) uint8 -> (N, pool * pool * 3) mean-pooled pixels in [0, 1]."""
        frames = np.asarray(frames)
        h, w = frames.shape[-3:-1]
        if h % pool or w % pool:
            raise ValueError(f"probe pool {pool} must divide the frame size {h}x{w}")
        kh, kw = h // pool, w // pool
        x = frames.reshape(-1, pool, kh, w, 3).astype(np.float32).sum(axis=2)  # exact sums
        x = x.reshape(len(x), pool, pool, kw, 3).sum(axis=3)  # one axis at a time: 30x faster
        return x.reshape(len(x), -1).astype(np.float64) / (255.0 * kh * kw)

    @classmethod
    def fit(cls, frames: np.ndarray, states: np.ndarray, pool: int, ridge: float) -> FrameProbe:
        """Fit on (N, H, W, 3) frames and their (N, D) true state vectors."""
        x = cls.features(frames, pool)
        return cls(pool, LinearProbe.fit(x, np.asarray(states, np.float64), ridge=ridge))

    def read(self, frames: np.ndarray) -> np.ndarray:
        """(..., H, W, 3) -> (..., D) state vectors."""
        lead = np.shape(frames)[:-3]
        out = self.linear.predict(self.features(frames, self.pool))
        return out.reshape(*lead, -1)


def sensordata(env: Any, states: np.ndarray) -> np.ndarray:
    """(..., D) state vectors laid out as the env's (..., nsensordata) sensor readings."""
    labels = list(env.state_labels)
    out = np.zeros((*np.shape(states)[:-1], env.model.nsensordata))
    views = env.sensors(out)
    if set(views) - set(SENSORS):
        raise ValueError(f"sensors {sorted(set(views) - set(SENSORS))} have no state entries")
    for name, view in views.items():
        entries, scale = SENSORS[name]
        view[...] = states[..., [labels.index(e) for e in entries]] * scale
    return out


@dataclass
class Context:
    """The episode so far as a predictor sees it, and what the robot knows of itself."""

    frames: np.ndarray  # (B, T, H, W, 3): the last T frames
    actions: np.ndarray  # (B, T, A): actions[:, j] led into frames[:, j]
    proprio: np.ndarray  # (B, T, P)
    goal: np.ndarray  # (B, 3)
    hand: np.ndarray  # (B, 3): the hand's position now (ee_x, ee_y, ee_z)
    servo: np.ndarray  # (B, 3): its servo target now (the robot's own command)

    def rows(self, n: int) -> Context:
        """The context of row 0 for n candidate rows (views, no copies)."""
        return Context(*(np.broadcast_to(v[:1], (n, *v.shape[1:])) for v in vars(self).values()))


class VideoWorldModel:
    """A VideoPredictor + FrameProbe + the task's score, behind the WorldModel protocol.

    What a read state holds: the cup relative to the hand, its velocity and the pads' touch
    come from the predicted frames (the probe reads them within millimetres: 0.9 mm ID on
    CupCarry's cup-minus-hand; tests/agents/test_video_agent.py); the hand's motion is the robot's
    own command (the servo targets after the candidate actions, from the hand where it is
    now), since a linear probe reads a hand's absolute position only to ~3 cm; the goal is
    known. So drops and slips are the predictor's, progress to the goal is the command's.

    ``encode`` starts an open-loop batch (one row per observation) and ``step`` continues the
    batch the last ``encode`` began: that is how the report steps a model open loop. Planning
    goes through ``observe`` (the episode's context) and ``rollout`` (N sequences, one call).
    """

    family = "video"
    obs_mode = "state+pixels"
    deterministic = True  # a predictor is called as a function of its inputs

    def __init__(
        self,
        predictor: Any,
        probe: FrameProbe,
        env: gymnasium.Env,
        context: int = 4,
        proprio_labels: Sequence[str] = (),
        device: str = "cpu",
    ):
        if not callable(getattr(predictor, "predict", None)):
            raise TypeError(f"{type(predictor).__name__} has no predict(context_frames, actions)")
        if context < 1:
            raise ValueError(f"context must be >= 1 frame; got {context}")
        self.predictor, self.probe, self.context = predictor, probe, context
        self.proprio_labels = list(proprio_labels)
        self.takes_proprio = "proprio" in inspect.signature(predictor.predict).parameters
        self.device = device
        # the cell's env: its score, servo range and labels (no ``attach``: the report would
        # take this model for a simulator whose latent is MuJoCo's state)
        self.env = env.unwrapped
        labels = list(self.env.state_labels)
        self._ix = {k: [labels.index(n) for n in v] for k, v in INDEX.items()}
        self._proprio = [labels.index(p) for p in self.proprio_labels]
        self._servo_range = (self.env._servo_lo, self.env._servo_hi)
        self.belief: Context | None = None
        self._batch: Context | None = None

    def start(self, obs: Any) -> Context:
        """The context of observations (one or a batch) at an episode's start: the first frame
        repeated, entered by the hold action."""
        frames, states = np.asarray(obs["pixels"]), np.asarray(obs["state"], np.float32)
        if frames.ndim == 3:
            frames, states = frames[None], states[None]
        t, ix = self.context, self._ix
        hold = np.zeros((len(frames), t, 4), np.float32)  # no motion, the grip in force
        hold[..., 3] = states[:, None, ix["grip"][0]]
        return Context(
            np.repeat(frames[:, None], t, axis=1),
            hold,
            np.repeat(states[:, None, self._proprio], t, axis=1),
            states[:, ix["goal"]],
            states[:, ix["hand"]].astype(np.float64),
            states[:, ix["servo"]].astype(np.float64),
        )

    def hands(self, ctx: Context, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hand, servo), each (B, K, 3), after each of K actions (B, K, A): the servo target
        moves as the env moves it (MAX_DELTA per unit, clipped to its range); the hand by as
        much as its target, from where it is now."""
        servo, out = ctx.servo, []
        for k in range(actions.shape[1]):
            step = MAX_DELTA * np.clip(actions[:, k, :3], -1.0, 1.0)
            servo = np.clip(servo + step, *self._servo_range)
            out.append(servo)
        servos = np.stack(out, 1)
        return ctx.hand[:, None] + servos - ctx.servo[:, None], servos

    def read(self, frames: np.ndarray, ctx: Context, hand: np.ndarray) -> np.ndarray:
        """State vectors (B, K, D) of frames (B, K, H, W, 3): the cup read relative to the
        hand, the hand at ``hand`` (B, K, 3), the goal known."""
        states = self.probe.read(frames)
        ix = self._ix
        rel = states[..., ix["cup"]] - states[..., ix["hand"]]
        states[..., ix["hand"]] = hand
        states[..., ix["cup"]] = hand + rel
        states[..., ix["goal"]] = ctx.goal[:, None]
        return states

    # ------------------------------------------------------------------ the protocol
    def fit(self, dataset: Any, steps: int = 0, **kwargs: Any) -> dict[str, list[float]]:
        return {}  # the predictor is trained elsewhere; the probe at make_policy

    def observe(self, belief: Context | None, action: np.ndarray, obs: Any) -> tuple[Any, Any]:
        """Fold the last action and the new observation into the context (T frames)."""
        now = self.start(obs)
        if belief is not None:
            act = np.asarray(action, np.float32)[None, None]
            now.frames = np.concatenate([belief.frames[:, 1:], now.frames[:, -1:]], 1)
            now.actions = np.concatenate([belief.actions[:, 1:], act], 1)
            now.proprio = np.concatenate([belief.proprio[:, 1:], now.proprio[:, -1:]], 1)
        self.belief = now
        z = self.read(now.frames[:, -1:], now, now.hand[:, None])[:, 0]
        return now, torch.as_tensor(z, dtype=torch.float32)

    def encode(self, obs: Any) -> torch.Tensor:
        """Observations (one or a batch) -> read states (B, D); starts an open-loop batch."""
        self._batch = ctx = self.start(obs)
        z = self.read(ctx.frames[:, -1:], ctx, ctx.hand[:, None])[:, 0]
        return torch.as_tensor(z, dtype=torch.float32)

    @torch.no_grad()
    def step(self, z: torch.Tensor, action: torch.Tensor) -> tuple[Any, Any, Any]:
        """One predicted frame for every row of the batch ``encode`` began."""
        ctx = self._batch
        if ctx is None or len(ctx.frames) != z.shape[0]:
            raise RuntimeError("step continues the batch of the last encode: encode first")
        act = action.cpu().numpy().astype(np.float32)[:, None]
        frame = self._predict(ctx, act)
        hand, servo = self.hands(ctx, act)
        states = self.read(frame, ctx, hand)[:, 0]
        self._batch = Context(
            np.concatenate([ctx.frames[:, 1:], frame], 1),
            np.concatenate([ctx.actions[:, 1:], act], 1),
            np.concatenate([ctx.proprio[:, 1:], ctx.proprio[:, -1:]], 1),  # not predicted
            ctx.goal,
            hand[:, 0],
            servo[:, 0],
        )
        reward, fail = self._score(states)
        return torch.as_tensor(states, dtype=torch.float32), reward, fail

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> tuple[Any, Any]:
        """(reward, failing), each (N, H), of N sequences (N, H, A) after the episode so far:
        one ``predict`` call of N rows."""
        if self.belief is None:
            raise RuntimeError("rollout plans from the episode's context: observe first")
        acts = np.clip(actions.cpu().numpy().astype(np.float32), -1.0, 1.0)
        ctx = self.belief.rows(len(acts))
        frames = self._predict(ctx, acts)
        return self._score(self.read(frames, ctx, self.hands(ctx, acts)[0]))

    def imagine(self, obs0: Any, actions: np.ndarray, env: gymnasium.Env) -> Imagination:
        """Open-loop frames of ``actions`` after ``obs0`` (one call), and the cup read from them."""
        ctx = self.start(obs0)
        acts = np.asarray(actions, np.float32)[None]
        frames = self._predict(ctx, acts)
        states = self.read(frames, ctx, self.hands(ctx, acts)[0])[0]
        return Imagination(frames[0], "decoder", states[:, self._ix["cup"]])

    def save(self, path: str) -> None:
        raise NotImplementedError("a video agent's predictor is saved by its own code")

    # ------------------------------------------------------------------ mechanics
    def _predict(self, ctx: Context, future: np.ndarray) -> np.ndarray:
        """The predictor's K frames after the context under ``future`` (B, K, A), checked:
        uint8 (B, K, H, W, 3)."""
        actions = np.concatenate([ctx.actions, future], 1)
        kwargs = {"proprio": np.ascontiguousarray(ctx.proprio)} if self.takes_proprio else {}
        out = np.asarray(
            self.predictor.predict(
                np.ascontiguousarray(ctx.frames), np.ascontiguousarray(actions), **kwargs
            )
        )
        want = (len(ctx.frames), future.shape[1], *ctx.frames.shape[2:])
        if out.shape != want or out.dtype != np.uint8:
            raise ValueError(
                f"{type(self.predictor).__name__}.predict returned {out.dtype} {out.shape}; "
                f"expected uint8 {want} (B, K, H, W, 3)"
            )
        return out

    def _score(self, states: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        reward, _, failing = self.env.score(sensordata(self.env, states))
        return (
            torch.as_tensor(reward, dtype=torch.float32, device=self.device),
            torch.as_tensor(failing, dtype=torch.float32, device=self.device),
        )


# ----------------------------------------------------------------------------- the agent
def fit_frame_probe(task: str, cfg: DictConfig, image_size: int) -> FrameProbe:
    """The frame probe of a task, fitted on its ``train`` clips (collected once, cached in the
    run directory beside the report's probe clips)."""
    from embodied.clips import probe_clips
    from embodied.evaluate import EvalSettings

    settings = EvalSettings(
        agents={},
        run_dir=str(Path(cfg.cache)),
        episodes=1,
        video_horizon=int(cfg.horizon),
        probe_clips=int(cfg.clips),
        image_size=image_size,
    )
    clips = probe_clips(task, settings)
    frames = clips["pixels"].reshape(-1, *clips["pixels"].shape[2:])
    states = clips["state"].reshape(-1, clips["state"].shape[-1])
    return FrameProbe.fit(frames, states, int(cfg.pool), float(cfg.ridge))


_probes: dict[tuple[str, str, int], FrameProbe] = {}


def make_policy(
    agent_cfg: DictConfig | dict,
    checkpoint_dir: str | None,
    env: gymnasium.Env,
    seed: int,
    predictor: Any = None,
) -> MPCAgent:
    """The video agent of ``agent_cfg`` (configs/agent/video.yaml): its predictor (built from
    ``predictor._target_``, or the object given), the task's frame probe and the planner."""
    cfg = agent_cfg if isinstance(agent_cfg, DictConfig) else OmegaConf.create(agent_cfg)
    task = getattr(env.unwrapped, "task_name", None)
    cfg = for_task(cfg, task)
    set_torch_threads(cfg.get("torch_threads"))
    device = str(resolve_device(cfg.get("device", "cpu")))
    if predictor is None:
        target = OmegaConf.select(cfg, "predictor._target_", default=None)
        if target in (None, "???"):
            raise ValueError(
                "the video agent needs a predictor: embodied-eval agents=[video] "
                "+agent_overrides.video.predictor._target_=your.module.YourPredictor "
                "(or embodied.evaluate(your_predictor, ...))"
            )
        params = inspect.signature(get_class(target)).parameters
        predictor = instantiate(cfg.predictor, **({"device": device} if "device" in params else {}))
    image_size = int(env.unwrapped.image_size)
    key = (str(task), OmegaConf.to_yaml(cfg.probe, resolve=True), image_size)
    if key not in _probes:
        _probes[key] = fit_frame_probe(str(task), cfg.probe, image_size)
    model = VideoWorldModel(
        predictor,
        _probes[key],
        env,
        context=int(cfg.context),
        proprio_labels=list(cfg.get("proprio_labels") or ()),
        device=device,
    )
    return MPCAgent(model, build_planner(cfg.planner, env, seed, model))
