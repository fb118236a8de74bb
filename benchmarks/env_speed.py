"""Env steps per second for every task, next to raw ``mj_step`` doing the same physics.

Each task runs its scripted controller (with noise) in the env; the controls the env sent to
MuJoCo are recorded and then replayed with bare ``mj_step(nstep=substeps)`` from the same
states, so both columns pay for exactly the same contacts. ``bare px/s`` is the same replay
with a bare 64x64 ``mujoco.Renderer`` drawing the fixed camera after each step: what a pixels
env step could cost at the least. The ratios are what matter (machines are noisy): ``state``
mode aims at >= 90% of the raw rate, ``pixels`` mode at the bare renderer's. Times are the
CPU time of this (single-threaded) process, so other load on the machine does not skew them.

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
clock = time.thread_time  # CPU time: MuJoCo and the renderer (LP_NUM_THREADS=0) run on this thread


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
            start = clock()
            obs, _ = env.reset(seed=seed)
            resetting += clock() - start
            policy = u.scripted_policy("cautious", noise=0.3, seed=seed)
            policy.reset(env)
            state = np.empty(mujoco.mj_stateSize(u.model, FULL))
            mujoco.mj_getState(u.model, u.data, state, FULL)
            episodes.append((state, []))
            seed += 1
        action = policy.act(obs)
        start = clock()
        obs, _, term, trunc, _ = env.step(action)
        stepping += clock() - start
        episodes[-1][1].append(u.data.ctrl.copy())
        done = term or trunc
    model = u.model
    env.close()
    return steps / stepping, 1000 * resetting / len(episodes), [model, episodes]


def raw_rate(
    model: mujoco.MjModel, episodes: list, substeps: int, image_size: int | None = None
) -> float:
    """Control steps per second of bare mj_step replaying the recorded controls, with a bare
    renderer drawing each step's frame when ``image_size`` is given."""
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, image_size, image_size) if image_size else None
    elapsed = 0.0
    count = 0
    for state, controls in episodes:
        mujoco.mj_setState(model, data, state, FULL)
        start = clock()
        for ctrl in controls:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=substeps)
            if renderer is not None:
                renderer.update_scene(data, camera="fixed")
                renderer.render()
        elapsed += clock() - start
        count += len(controls)
    if renderer is not None:
        renderer.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    print(f"embodied-ood {embodied.__version__}, mujoco {mujoco.__version__}")
    header = (
        f"{'task':<14}{'raw ctl/s':>11}{'state/s':>10}{'state/raw':>11}{'pixels/s':>10}"
        f"{'bare px/s':>11}{'px/bare':>9}{'reset ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for task in TASKS:
        state, reset_ms, (model, episodes) = env_rate(task, "state", args.steps)
        raw = raw_rate(model, episodes, substeps=25)
        pixels, _, (model, episodes) = env_rate(task, "pixels", max(args.steps // 4, 200))
        bare = raw_rate(model, episodes, substeps=25, image_size=64)
        print(
            f"{task:<14}{raw:>11.0f}{state:>10.0f}{state / raw:>11.2f}{pixels:>10.0f}"
            f"{bare:>11.0f}{pixels / bare:>9.2f}{reset_ms:>10.2f}"
        )


if __name__ == "__main__":
    main()
