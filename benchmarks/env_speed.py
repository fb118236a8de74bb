"""Env steps per second for every task, next to raw ``mj_step`` on the same model.

The ratio is what matters (machines are noisy): ``state`` mode should run at >= 80% of the raw
stepping rate for the same number of physics substeps, and 64x64 ``pixels`` mode at >= 500 env
steps per second on one core. Run: ``python benchmarks/env_speed.py [--steps 2000]``.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import mujoco
import numpy as np

import embodied
from embodied.registration import TASKS, env_id


def raw_rate(
    model: mujoco.MjModel, data: mujoco.MjData, control_steps: int, substeps: int
) -> float:
    """Control steps per second of bare ``mj_step(nstep=substeps)`` with fixed controls."""
    start = time.perf_counter()
    for _ in range(control_steps):
        mujoco.mj_step(model, data, nstep=substeps)
    return control_steps / (time.perf_counter() - start)


def env_rate(env: gymnasium.Env, steps: int, seed: int = 0) -> tuple[float, float]:
    """(steps per second, milliseconds per reset), timing steps and resets apart."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-0.3, 0.3, size=(steps, 4)).astype(np.float32)
    actions[:, 3] = 1.0
    stepping = resetting = 0.0
    resets = 1
    start = time.perf_counter()
    env.reset(seed=seed)
    resetting += time.perf_counter() - start
    for action in actions:
        start = time.perf_counter()
        _, _, term, trunc, _ = env.step(action)
        stepping += time.perf_counter() - start
        if term or trunc:
            start = time.perf_counter()
            env.reset()
            resetting += time.perf_counter() - start
            resets += 1
    return steps / stepping, 1000 * resetting / resets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    print(f"embodied-ood {embodied.__version__}, mujoco {mujoco.__version__}")
    header = (
        f"{'task':<14}{'raw ctl/s':>11}{'state/s':>10}{'state/raw':>11}{'pixels/s':>10}"
        f"{'reset ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for task in TASKS:
        state_env = gymnasium.make(env_id(task), obs_mode="state")
        state_env.reset(seed=0)
        u = state_env.unwrapped
        raw_data = mujoco.MjData(u.model)
        raw_data.qpos[:] = u.data.qpos
        raw_data.ctrl[:] = u.data.ctrl
        # interleave to share the machine's noise between the two measurements
        raw = max(raw_rate(u.model, raw_data, args.steps, u.n_substeps) for _ in range(2))
        state, reset_ms = max(env_rate(state_env, args.steps) for _ in range(2))
        pixel_env = gymnasium.make(env_id(task), obs_mode="pixels", image_size=args.image_size)
        pixels, _ = env_rate(pixel_env, max(args.steps // 4, 100))
        print(
            f"{task:<14}{raw:>11.0f}{state:>10.0f}{state / raw:>11.2f}{pixels:>10.0f}"
            f"{reset_ms:>10.2f}"
        )
        state_env.close()
        pixel_env.close()


if __name__ == "__main__":
    main()
