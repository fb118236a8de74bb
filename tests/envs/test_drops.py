"""``dropped`` and ``slipped`` in CupCarry, checked against MuJoCo's own contact list.

Every flagged drop is replayed forward (the MjData copied, 0.5 s more with the same controls):
MuJoCo must agree the cup has left the grasp, i.e. no longer pinched by both pads. A slip is
a cup a pad still presses on; an episode that ends without a drop ends with the cup in the hand.
The episodes are the scripted controllers under the shifts that drop cups, ``action_noise``
(which opens the hand now and then) among them.
"""

from __future__ import annotations

import copy

import gymnasium
import mujoco
import numpy as np
import pytest

import embodied  # noqa: F401

SPLITS = ["ood-action_noise-5", "ood-cup_mass-3", "ood-cup_friction-3", "ood-push-3"]
CONTROLLERS = [("aggressive", 0.0), ("aggressive", 0.3), ("cautious", 0.0)]
SEEDS = range(4)
REPLAY_S = 0.5


def pad_forces(m: mujoco.MjModel, d: mujoco.MjData) -> tuple[float, float]:
    """Normal force of each pad on the cup (N), summed over MuJoCo's contacts."""
    cup = m.geom("cup").id
    pads = [m.geom("left_pad").id, m.geom("right_pad").id]
    force, out = np.zeros(6), [0.0, 0.0]
    for i, c in enumerate(d.contact[: d.ncon]):
        for k, pad in enumerate(pads):
            if {c.geom1, c.geom2} == {cup, pad}:
                mujoco.mj_contactForce(m, d, i, force)
                out[k] += abs(force[0])
    return out[0], out[1]


def pinched(m: mujoco.MjModel, d: mujoco.MjData) -> bool:
    return min(pad_forces(m, d)) > 0.0


def pinched_after_replay(m: mujoco.MjModel, d: mujoco.MjData) -> bool:
    """Run a copy 0.5 s on with the controls as they are (no shove) and ask MuJoCo."""
    ahead = copy.copy(d)
    ahead.xfrc_applied[:] = 0.0
    mujoco.mj_step(m, ahead, nstep=int(round(REPLAY_S / m.opt.timestep)))
    return pinched(m, ahead)


def run(split: str, style: str, noise: float, seed: int) -> dict:
    """One episode; what the env flagged and what MuJoCo says at each flag."""
    env = gymnasium.make("embodied/CupCarry-v0", shift=split)
    obs, info = env.reset(seed=seed)
    u = env.unwrapped
    policy = u.scripted_policy(style, noise=noise, seed=seed)
    policy.reset(env)
    out = {"dropped": False, "slipped": False, "first_slip_touching": None}
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(policy.act(obs))
        done = term or trunc
        if info["slipped"] and out["first_slip_touching"] is None:
            out["first_slip_touching"] = max(pad_forces(u.model, u.data)) > 0.0
    out["dropped"], out["slipped"] = info["dropped"], info["slipped"]
    out["pinched_after"] = pinched_after_replay(u.model, u.data)
    out["touching_now"] = max(pad_forces(u.model, u.data)) > 0.0
    out["physics_error"] = info["physics_error"]
    env.close()
    return out


@pytest.fixture(scope="module")
def episodes() -> dict[tuple, dict]:
    return {
        (split, style, noise, seed): run(split, style, noise, seed)
        for split in SPLITS
        for style, noise in CONTROLLERS
        for seed in SEEDS
    }


def test_mujoco_agrees_on_every_flagged_drop(episodes):
    drops = {k: e for k, e in episodes.items() if e["dropped"]}
    assert len(drops) >= 10, "too few drops for the check to mean anything"
    assert any(k[0] == "ood-action_noise-5" for k in drops)
    still_held = [k for k, e in drops.items() if e["pinched_after"]]
    assert not still_held, f"flagged dropped, but still pinched 0.5 s later: {still_held}"


def test_a_slip_is_a_cup_still_in_the_hand(episodes):
    slips = {k: e for k, e in episodes.items() if e["slipped"]}
    assert slips, "no slip among the episodes: the check would be empty"
    assert all(e["first_slip_touching"] for e in slips.values())
    for key, e in slips.items():
        if not e["dropped"]:  # slipped, and held to the end
            assert e["touching_now"], key


def test_no_drop_is_missed(episodes):
    """An episode that ends without a drop flag ends with the cup in the hand."""
    kept = {k: e for k, e in episodes.items() if not e["dropped"] and not e["physics_error"]}
    assert kept
    lost = [k for k, e in kept.items() if not (e["touching_now"] or e["pinched_after"])]
    assert not lost, f"cup out of the hand but never flagged dropped: {lost}"


def test_results_count_slips_apart_from_drops(episodes):
    """A cell's ``slip_rate`` counts cups held to the end but slid too far, never a drop."""
    from embodied.evaluate import run_episode, summarise

    slip = next(k for k, e in episodes.items() if e["slipped"] and not e["dropped"])
    drop = next(k for k, e in episodes.items() if e["slipped"] and e["dropped"])
    rows = []
    for split, style, noise, seed in (slip, drop):
        env = gymnasium.make("embodied/CupCarry-v0", shift=split)
        policy = env.unwrapped.scripted_policy(style, noise=noise, seed=seed)
        rows.append(run_episode(env, policy, seed)[0])
        env.close()
    assert [(r["slipped"], r["dropped"]) for r in rows] == [(True, False), (False, True)]
    line = summarise(rows)
    assert line["slip_rate"] == line["drop_rate"] == 0.5 and line["slip_ci"][0] > 0.0
