"""Env steps per second for every task, next to raw ``mj_step`` doing the same physics.

Each task runs its scripted controller (with noise) in the env; the controls the env sent to
MuJoCo are recorded and then replayed with bare ``mj_step(nstep=substeps)`` from the same
states, so both columns pay for exactly the same contacts. ``bare px/s`` is the same replay
with a bare 64x64 ``mujoco.Renderer`` drawing the fixed camera after each step: what a pixels
env step could cost at the least. The ratios are what matter (machines are noisy): ``state``
mode aims at >= 90% of the raw rate, ``pixels`` mode at the bare renderer's. Times are the
CPU time of this (single-threaded) process, so other load on the machine does not skew them.

``--split`` adds where a state step's time goes, from a second run with its parts timed:
``mj_step`` inside the env (slower than the bare replay's: the Python between steps evicts
MuJoCo's data from the caches), the divergence checks around it, the task's judgement and the
rest (action handling, observation, info, gymnasium's wrappers).

    python benchmarks/env_speed.py [--steps 2000] [--split]
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


def split_us(task: str, steps: int) -> dict[str, float]:
    """Microseconds per state step in mj_step, the checks around it, the judgement and the rest
    (each part's clock calls land in its parent: a few microseconds)."""
    env = gymnasium.make(env_id(task), obs_mode="state")
    u = env.unwrapped
    spent = dict.fromkeys(("step", "_advance", "_simulate", "_judge"), 0.0)
    for name in ("_advance", "_simulate", "_judge"):
        part = getattr(u, name)

        def timed(part=part, name=name):
            start = clock()
            out = part()
            spent[name] += clock() - start
            return out

        setattr(u, name, timed)
    seed, done = 0, True
    for _ in range(steps):
        if done:
            obs, _ = env.reset(seed=seed)
            policy = u.scripted_policy("cautious", noise=0.3, seed=seed)
            policy.reset(env)
            seed += 1
        action = policy.act(obs)
        start = clock()
        obs, _, term, trunc, _ = env.step(action)
        spent["step"] += clock() - start
        done = term or trunc
    env.close()
    us = {k: 1e6 * v / steps for k, v in spent.items()}
    return {
        "mj_step": us["_advance"],
        "checks": us["_simulate"] - us["_advance"],
        "judge": us["_judge"],
        "rest": us["step"] - us["_simulate"] - us["_judge"],
    }


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
    parser.add_argument("--split", action="store_true", help="also time a state step's parts")
    args = parser.parse_args()
    print(f"embodied-ood {embodied.__version__}, mujoco {mujoco.__version__}")
    header = (
        f"{'task':<14}{'raw ctl/s':>11}{'state/s':>10}{'state/raw':>11}{'pixels/s':>10}"
        f"{'bare px/s':>11}{'px/bare':>9}{'reset ms':>10}"
    )
    print(header)
    print("-" * len(header))
    raws = {}
    for task in TASKS:
        state, reset_ms, (model, episodes) = env_rate(task, "state", args.steps)
        raw = raws[task] = raw_rate(model, episodes, substeps=25)
        pixels, _, (model, episodes) = env_rate(task, "pixels", max(args.steps // 4, 200))
        bare = raw_rate(model, episodes, substeps=25, image_size=64)
        print(
            f"{task:<14}{raw:>11.0f}{state:>10.0f}{state / raw:>11.2f}{pixels:>10.0f}"
            f"{bare:>11.0f}{pixels / bare:>9.2f}{reset_ms:>10.2f}"
        )

    if args.split:
        print(f"\nus per state step: {'bare':>6}{'mj_step':>9}{'checks':>8}{'judge':>7}{'rest':>6}")
        for task in TASKS:
            parts = split_us(task, args.steps)
            cells = "".join(
                f"{v:>{w}.0f}" for v, w in zip(parts.values(), (9, 8, 7, 6), strict=True)
            )
            print(f"{task:<19}{1e6 / raws[task]:>6.0f}{cells}")


if __name__ == "__main__":
    main()
