"""Env steps per second for every task, next to raw ``mj_step`` doing the same physics.

Each task runs its scripted controller (with noise) in the env; the controls the env sent to
MuJoCo are recorded and then replayed with bare ``mj_step(nstep=substeps)`` from the same
states, so both columns pay for exactly the same contacts. The ratio is what matters
(machines are noisy): ``state`` mode should reach >= 80% of the raw rate, and 64x64 ``pixels``
mode >= 500 env steps per second on one core.

    python benchmarks/env_speed.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import mujoco
import numpy as np

import embodied
from embodied.registration import TASKS, env_id

FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


def env_rate(task: str, obs_mode: str, steps: int) -> tuple[float, float, list]:
    """(env steps/s, ms per reset, episodes as (start state, controls)) with timing apart."""
    env = gymnasium.make(env_id(task), obs_mode=obs_mode)
    u = env.unwrapped
    stepping = resetting = 0.0
    episodes: list[tuple[np.ndarray, list[np.ndarray]]] = []
    seed = 0
    done = True
    for _ in range(steps):
        if done:
            start = time.perf_counter()
            obs, _ = env.reset(seed=seed)
            resetting += time.perf_counter() - start
            policy = u.scripted_policy("cautious", noise=0.3, seed=seed)
            policy.reset(env)
            state = np.empty(mujoco.mj_stateSize(u.model, FULL))
            mujoco.mj_getState(u.model, u.data, state, FULL)
            episodes.append((state, []))
            seed += 1
        action = policy.act(obs)
        start = time.perf_counter()
        obs, _, term, trunc, _ = env.step(action)
        stepping += time.perf_counter() - start
        episodes[-1][1].append(u.data.ctrl.copy())
        done = term or trunc
    model = u.model
    env.close()
    return steps / stepping, 1000 * resetting / len(episodes), [model, episodes]


def raw_rate(model: mujoco.MjModel, episodes: list, substeps: int) -> float:
    """Control steps per second of bare mj_step replaying the recorded controls."""
    data = mujoco.MjData(model)
    elapsed = 0.0
    count = 0
    for state, controls in episodes:
        mujoco.mj_setState(model, data, state, FULL)
        start = time.perf_counter()
        for ctrl in controls:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=substeps)
        elapsed += time.perf_counter() - start
        count += len(controls)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    print(f"embodied-ood {embodied.__version__}, mujoco {mujoco.__version__}")
    header = (
        f"{'task':<14}{'raw ctl/s':>11}{'state/s':>10}{'state/raw':>11}{'pixels/s':>10}"
        f"{'reset ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for task in TASKS:
        state, reset_ms, (model, episodes) = env_rate(task, "state", args.steps)
        raw = raw_rate(model, episodes, substeps=25)
        pixels, _, _ = env_rate(task, "pixels", max(args.steps // 4, 200))
        print(
            f"{task:<14}{raw:>11.0f}{state:>10.0f}{state / raw:>11.2f}{pixels:>10.0f}"
            f"{reset_ms:>10.2f}"
        )


if __name__ == "__main__":
    main()
