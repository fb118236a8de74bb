"""The four tasks: registration, API conformance, physics of holding and dropping, scripted
baselines."""

from __future__ import annotations

import copy
import pickle

import gymnasium
import imageio
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import embodied
from embodied.envs.arm import TOUCH_MIN
from embodied.envs.cup_push import CLEAN_PUSH, SLOPPY_PUSH
from embodied.envs.scene import build_model
from embodied.envs.scripted import ScriptedPolicy
from embodied.registration import TASKS, env_id
from embodied.shifts import SHIFTS

IDS = [env_id(t) for t in TASKS]
MODES = ["state", "pixels", "state+pixels"]


def test_import_registers_every_task():
    for gid in IDS:
        assert gid in gymnasium.registry
    env = gymnasium.make("embodied:embodied/CupCarry-v0")
    assert env.unwrapped.task_name == "CupCarry"


def test_each_task_is_registered_as_its_class_declares():
    assert set(TASKS) == {"Reach", "CupPush", "CupCarry", "CupPickPlace"}
    assert env_id("CupPush") == "embodied/CupPush-v1" and env_id("Reach") == "embodied/Reach-v0"
    limits = {"Reach": 60, "CupPush": 120, "CupCarry": 60, "CupPickPlace": 160}
    for name, task in TASKS.items():
        spec = gymnasium.spec(env_id(name))
        assert spec.entry_point is task and task.task_name == name
        assert spec.max_episode_steps == task.max_episode_steps == limits[name]
        assert spec.version == task.version
    with pytest.raises(ValueError, match="valid tasks: \\['CupCarry'"):
        env_id("CupHold")


def test_a_script_drives_its_own_task_only():
    with pytest.raises(ValueError, match="valid: \\['CupCarry', 'CupPickPlace'"):
        ScriptedPolicy("Arm")
    env = gymnasium.make(env_id("Reach"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="a CupPush script cannot drive Reach"):
        ScriptedPolicy("CupPush").reset(env)


def test_only_a_noisy_cup_push_script_is_sloppy():
    """The sloppy variant is CupPush's own: drawn from the script's generator only there, so
    every other task's noisy script draws exactly the noise it drew before."""
    push = TASKS["CupPush"].script_variant
    assert push(None, None) == CLEAN_PUSH
    rng = np.random.default_rng(0)
    sloppy = push(None, rng)
    assert all(lo <= sloppy[k] <= hi for k, (lo, hi) in SLOPPY_PUSH.items())
    assert sloppy != push(None, rng)  # drawn afresh each episode
    for name in ("Reach", "CupCarry", "CupPickPlace"):
        rng = np.random.default_rng(0)
        assert TASKS[name].script_variant(None, rng) == {}
        assert rng.random() == np.random.default_rng(0).random()  # untouched


@pytest.mark.parametrize("gid", IDS)
@pytest.mark.parametrize("mode", MODES)
def test_env_checkers(gid, mode):
    env = gymnasium.make(gid, obs_mode=mode, image_size=32)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for key in ("is_success", "dropped", "slipped", "physics_error", "physics", "seed"):
        assert key in info
    env.close()


def test_unwrapped_exposes_mujoco():
    env = gymnasium.make("embodied/CupCarry-v0")
    env.reset(seed=1)
    assert isinstance(env.unwrapped.model, mujoco.MjModel)
    assert isinstance(env.unwrapped.data, mujoco.MjData)
    assert len(env.unwrapped.state_labels) == env.observation_space.shape[0]


def test_async_vector_env():
    envs = gymnasium.make_vec("embodied/CupCarry-v0", num_envs=2, vectorization_mode="async")
    obs, info = envs.reset(seed=[0, 1])
    assert obs.shape == (2, len(embodied.envs.arm.STATE_LABELS))
    obs, reward, term, trunc, info = envs.step(np.zeros((2, 4), np.float32))
    assert reward.shape == (2,)
    assert not np.array_equal(obs[0], obs[1])
    envs.close()


def test_render_any_size():
    env = gymnasium.make("embodied/Reach-v0", render_mode="rgb_array", render_size=(48, 80))
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 80, 3) and frame.dtype == np.uint8 and frame.std() > 1


def test_bad_arguments_name_valid_choices():
    with pytest.raises(ValueError, match="state\\+pixels"):
        gymnasium.make("embodied/CupCarry-v0", obs_mode="rgb")
    env = gymnasium.make("embodied/CupCarry-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 1.0]))


def _cup_pad_contacts(env) -> int:
    """Contacts between the cup and a finger pad, read from MuJoCo's contact list."""
    m, d = env.model, env.data
    cup = m.geom("cup").id
    pads = {m.geom("left_pad").id, m.geom("right_pad").id}
    return sum(
        1
        for c in d.contact[: d.ncon]
        if (c.geom1 == cup and c.geom2 in pads) or (c.geom2 == cup and c.geom1 in pads)
    )


def test_opening_the_gripper_mid_carry_drops_the_cup():
    env = gymnasium.make("embodied/CupCarry-v0")
    env.reset(seed=3)
    u = env.unwrapped
    for _ in range(5):  # carry a little, squeezing
        _, _, term, _, info = env.step(np.array([0.3, 0.0, 0.3, 1.0], np.float32))
        assert not info["dropped"] and not term
    assert _cup_pad_contacts(u) > 0
    z0 = u.data.body("cup").xpos[2]
    seconds = 0.0
    while seconds < 1.0:  # at most one second of simulated time, gripper open
        _, _, term, _, info = env.step(np.array([0.0, 0.0, 0.0, -1.0], np.float32))
        seconds += 0.05
        if info["dropped"]:
            break
    assert info["dropped"] and term, "dropped must become true within a second"
    mujoco.mj_step(u.model, u.data, nstep=50)
    assert _cup_pad_contacts(u) == 0, "MuJoCo must agree: no cup-pad contact"
    assert u.data.body("cup").xpos[2] < z0 - 0.02, "the cup fell"


def test_holding_still_keeps_the_cup():
    env = gymnasium.make("embodied/CupCarry-v0")
    env.reset(seed=4)
    for _ in range(60):  # three seconds
        _, _, term, trunc, info = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
        assert not info["dropped"]
    assert _cup_pad_contacts(env.unwrapped) > 0


def test_too_little_friction_slips_out():
    """Coulomb: 2 * mu * F_grip < m * g must lose the cup, judged by MuJoCo's contacts."""
    env = gymnasium.make("embodied/CupCarry-v0", physics={"cup_friction": 0.1})
    env.reset(seed=4)
    for _ in range(20):
        _, _, term, _, info = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
        if term:
            break
    assert info["dropped"]


def test_same_seed_same_episode():
    def run():
        env = gymnasium.make("embodied/CupPickPlace-v0")
        obs, _ = env.reset(seed=11)
        policy = env.unwrapped.scripted_policy("cautious", noise=0.2, seed=5)
        policy.reset(env)
        out = [obs]
        for _ in range(30):
            obs, *_ = env.step(policy.act(obs))
            out.append(obs)
        return np.stack(out)

    np.testing.assert_array_equal(run(), run())


def test_render_state_matches_the_true_frame():
    look = {p.name: p.nominal for s in SHIFTS.values() if s.kind == "look" for p in s.params}
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state+pixels", physics=look)
    obs, _ = env.reset(seed=2)
    for _ in range(3):
        obs, *_ = env.step(np.array([0.5, -0.5, 0.2, 1.0], np.float32))

    def badly_off(frame):  # pixels far off the true frame
        return int((np.abs(frame.astype(int) - obs["pixels"].astype(int)).max(-1) > 60).sum())

    right = badly_off(env.unwrapped.render_state(obs["state"]))
    assert right < 5
    wrong = obs["state"].copy()
    wrong[env.unwrapped.state_labels.index("cup_y")] += 0.15
    assert badly_off(env.unwrapped.render_state(wrong)) > right + 20


def scripted_rates(task: str, style: str, episodes: int, shift: str = "id") -> tuple[float, float]:
    env = gymnasium.make(env_id(task), shift=shift)
    success = dropped = 0
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy = env.unwrapped.scripted_policy(style, seed=seed)
        policy.reset(env)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy.act(obs))
            done = term or trunc
        success += info["is_success"]
        dropped += info["dropped"]
    return success / episodes, dropped / episodes


@pytest.mark.parametrize("task", list(TASKS))
def test_cautious_scripted_controller_succeeds_in_distribution(task):
    success, _ = scripted_rates(task, "cautious", 50)
    assert success >= 0.9, f"{task}: cautious scripted success {success:.2f} < 0.90"


def rollout(env, actions) -> list:
    return [env.step(a)[0] for a in actions]


def same(a, b) -> bool:
    if isinstance(a, dict):
        return all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


ACTIONS = np.random.default_rng(0).uniform(-1, 1, (12, 4)).astype(np.float32)


def test_info_seed_reproduces_an_unseeded_episode():
    """Physics drawn from the split, the start and the action noise: all from the seed."""
    env = gymnasium.make("embodied/CupCarry-v0", shift="ood-action_noise-3")
    env.reset(seed=123)
    obs, info = env.reset()  # no seed: the env draws one
    first = [obs, *rollout(env, ACTIONS)]
    again = gymnasium.make("embodied/CupCarry-v0", shift="ood-action_noise-3")
    obs, info2 = again.reset(seed=info["seed"])
    assert info2["physics"] == info["physics"] and info2["seed"] == info["seed"]
    assert all(map(same, first, [obs, *rollout(again, ACTIONS)]))


@pytest.mark.parametrize("split", ["ood-cup_mass-5", "ood-cup_size-5", "id"])
def test_model_statistics_follow_the_episode(split):
    """meanmass/meaninertia/meansize (the solver scales by meaninertia) as MuJoCo compiles
    them for the episode's physics."""
    env = gymnasium.make("embodied/CupCarry-v0", shift=split)
    _, info = env.reset(seed=0)
    stat, compiled = env.unwrapped.model.stat, build_model(info["physics"]).stat
    for name in ("meanmass", "meaninertia", "meansize", "extent"):
        assert getattr(stat, name) == getattr(compiled, name), name
    if split != "id":
        assert stat.meanmass != build_model(env.unwrapped.physics | {"cup_mass": 0.2}).stat.meanmass


@pytest.mark.parametrize("mode", MODES)
def test_pickled_and_deep_copied_envs_go_on_identically(mode):
    """The GL context is dropped on copy and rebuilt on the copy's first frame."""
    env = gymnasium.make(
        "embodied/CupCarry-v0", obs_mode=mode, render_mode="rgb_array", shift="ood-action_noise-3"
    )
    env.reset(seed=3)
    env.step(ACTIONS[0])
    env.render()
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    expected = rollout(env, ACTIONS) + [env.render()]
    for other in copies:
        assert all(map(same, expected, rollout(other, ACTIONS) + [other.render()]))
    for e in (env, *copies):
        e.close()


def test_out_of_bounds_actions_are_clipped():
    env = gymnasium.make("embodied/CupCarry-v0")
    env.reset(seed=0)
    twin = copy.deepcopy(env)
    wild = np.array([3.0, -7.0, 1.5, 40.0])
    assert same(env.step(wild)[0], twin.step(np.clip(wild, -1, 1))[0])


def test_record_video_works_out_of_the_box(tmp_path):
    env = gymnasium.wrappers.RecordVideo(
        gymnasium.make("embodied/Reach-v0", render_mode="rgb_array"),
        video_folder=str(tmp_path),
        episode_trigger=lambda episode: True,
    )
    env.reset(seed=0)
    first = env.unwrapped.render()
    for _ in range(9):
        env.step(env.action_space.sample())
    env.close()
    (video,) = tmp_path.glob("*.mp4")
    with imageio.get_reader(video, "ffmpeg") as reader:
        frames = list(reader.iter_data())
    assert len(frames) >= 9 and frames[0].shape == first.shape == (240, 320, 3)
    assert np.abs(frames[0].astype(float) - first).mean() < 5  # h264 is lossy, not wrong


def test_cup_push_pays_the_hand_for_standing_behind_the_cup_not_beside_it():
    """Beside the cup is a dead end for a short-horizon planner (a push from there moves the
    cup sideways or tips it); the reward's hand term points at the push spot: behind the cup
    on the line away from the goal, low."""
    env = gymnasium.make(env_id("CupPush"))
    env.reset(seed=3)
    u = env.unwrapped
    sd = u.data.sensordata.copy()
    s = u.sensors(sd)
    cup = s["cup_pos"].copy()
    away = (cup[:2] - u.target[:2]) / np.linalg.norm(cup[:2] - u.target[:2])
    side = np.array([-away[1], away[0]])

    def reward(xy_offset, z):
        s["ee_pos"][:] = [*(cup[:2] + xy_offset), z]
        return float(u.score(sd)[0])

    gap = u.cup_radius + 0.02
    behind, beside, ahead = (
        reward(gap * away, 0.03),
        reward(gap * side, 0.03),
        reward(-gap * away, 0.03),
    )
    assert behind > beside + 0.01 and beside > ahead + 0.01
    assert behind > reward(gap * away, 0.1) + 0.01  # low, under the cup's rim
    d_cup = np.linalg.norm(cup[:2] - u.target[:2])
    assert behind == pytest.approx(-d_cup / 0.3, abs=1e-6)  # the hand term is zero there


# -- speed changes keep every number: the step as it was, kept here as the reference ----------
def reference_state_vector(u) -> np.ndarray:
    """``state_vector`` as it was: named sensor views, concatenated."""
    d = u.data
    s = u.sensors(d.sensordata)
    parts = [
        d.qpos[u._arm_qpos],
        d.qpos[u._finger_qpos[:1]],
        d.qvel[u._arm_dof],
        d.qvel[u._finger_dof[:1]],
        *(s[name] for name in ("ee_pos", "ee_vel", "cup_pos", "cup_quat", "cup_vel")),
        s["cup_angvel"],
        d.mocap_pos[u._target_mocap],
        d.ctrl[:3],
        d.ctrl[6:7],
        np.minimum(s["left_touch"], 50.0) / 10.0,
        np.minimum(s["right_touch"], 50.0) / 10.0,
    ]
    return np.concatenate(parts).astype(np.float32)


def reference_step(u, action: np.ndarray) -> tuple:
    """``ArmEnv.step`` as it was (np.clip, a fresh state buffer, warnings read one by one)."""
    from embodied.envs.arm import MAX_DELTA, check_action

    action = np.clip(check_action(action), -1.0, 1.0)
    for effect in u._effects:
        action = effect.action(action)
    u.data.ctrl[:3] = np.clip(u.data.ctrl[:3] + MAX_DELTA * action[:3], u._servo_lo, u._servo_hi)
    u.data.ctrl[6] = action[3]
    m, d = u.model, u.data
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    before = np.empty(mujoco.mj_stateSize(m, spec))
    mujoco.mj_getState(m, d, before, spec)
    kinds = [getattr(mujoco.mjtWarning, f"mjWARN_BAD{w}") for w in ("QPOS", "QVEL", "QACC", "CTRL")]
    warned = sum(d.warning[w].number for w in kinds)
    u._advance()
    bad = sum(d.warning[w].number for w in kinds) > warned
    error = bad or not np.isfinite(d.qpos).all() or np.abs(d.qvel).max() > 1e3
    if error:
        mujoco.mj_setState(m, d, before, spec)
        mujoco.mj_forward(m, d)
    u._t += 1
    frame = u._render(m, d, (u.image_size, u.image_size))
    obs = {"state": reference_state_vector(u), "pixels": frame}
    if error:
        penalty = -float(u.spec.max_episode_steps or 100)
        return obs, penalty, False, True, u._info(success=False, failed=False, physics_error=True)
    reward, success, failed = u._judge()
    if failed:
        reward -= u.failure_penalty
    info = u._info(success=success, failed=failed, physics_error=False)
    return obs, float(reward), success or failed, False, info


@pytest.mark.parametrize("task", list(TASKS))
def test_the_step_equals_the_reference_step_bit_for_bit(task):
    """Observations (state and frames), rewards and infos of 100 steps under every work shift
    (noise, latency, a shove) equal the step as it was, actions beyond the bounds included."""
    envs = [
        gymnasium.make(env_id(task), obs_mode="state+pixels", shift="ood-all-3").unwrapped
        for _ in range(2)
    ]
    rng = np.random.default_rng(0)
    seed = 0
    for env in envs:
        env.reset(seed=seed)
    for _ in range(100):
        action = rng.uniform(-1.5, 1.5, 4).astype(np.float32)
        new = envs[0].step(action)
        old = reference_step(envs[1], action)
        assert np.array_equal(new[0]["state"], old[0]["state"])
        assert np.array_equal(new[0]["pixels"], old[0]["pixels"])
        assert new[1:] == old[1:]
        if new[2] or new[3]:
            seed += 1
            for env in envs:
                env.reset(seed=seed)


def test_the_cup_geometry_follows_a_size_shift():
    """cup_radius and cup_half_height (read by index for speed) are the named geom's."""
    env = gymnasium.make(env_id("CupCarry"), shift="ood-cup_size-3").unwrapped
    for seed in range(3):
        env.reset(seed=seed)
        size = env.model.geom("cup").size
        assert (env.cup_radius, env.cup_half_height) == (float(size[0]), float(size[1]))
    assert env.cup_radius != float(build_model({}).geom("cup").size[0])


# -- the scores as they were (np.linalg.norm, np.clip, every sensor view built) --------------
def _ref_views(u, sd):
    return {name: sd[..., sl] for name, sl in u._sensor.items()}


def _ref_tilt(s):
    q = s["cup_quat"]
    return np.arccos(np.clip(1.0 - 2.0 * (q[..., 1] ** 2 + q[..., 2] ** 2), -1.0, 1.0))


def _ref_touching(s):
    return np.maximum(s["left_touch"][..., 0], s["right_touch"][..., 0]) > TOUCH_MIN


def _ref_reach(u, sd):
    d = np.linalg.norm(_ref_views(u, sd)["ee_pos"] - u.target, axis=-1)
    return -np.minimum(d, 0.5) / 0.5, d < u.success_radius, np.zeros_like(d, dtype=bool)


def _ref_cup_push(u, sd):
    s = _ref_views(u, sd)
    cup = s["cup_pos"]
    to_goal = u.target[:2] - cup[..., :2]
    d_cup = np.linalg.norm(to_goal, axis=-1)
    unit = to_goal / np.maximum(d_cup, 1e-6)[..., None]
    push_xy = cup[..., :2] - unit * (u.cup_radius + 0.02)
    push = np.concatenate([push_xy, np.full_like(push_xy[..., :1], 0.03)], -1)
    d_hand = np.linalg.norm(s["ee_pos"] - push, axis=-1)
    reward = -(d_cup / 0.3 + 0.3 * np.minimum(d_hand, 0.5) / 0.5)
    tilt = _ref_tilt(s)
    x, y, z = cup[..., 0], cup[..., 1], cup[..., 2]
    on_table = (x > 0.0) & (x < 0.9) & (y > -0.6) & (y < 0.6) & (z > 0.0)
    return reward, (d_cup < u.success_radius) & (tilt < 0.3), (tilt > 1.0) | ~on_table


def _ref_cup_carry(u, sd):
    s = _ref_views(u, sd)
    cup, hand = s["cup_pos"], s["ee_pos"]
    d = np.linalg.norm(cup - u.target, axis=-1)
    slip = np.linalg.norm(cup - (hand - np.array([0.0, 0.0, u.grasp_offset])), axis=-1)
    below = cup[..., 2] + u.cup_half_height < hand[..., 2] - u.pad_half_height
    beside = np.linalg.norm(cup[..., :2] - hand[..., :2], axis=-1) > u.cup_radius + 0.05
    out_of_reach = below | beside | (cup[..., 2] < u.cup_half_height + 0.005)
    touching = _ref_touching(s)
    pinched = (s["left_touch"][..., 0] > TOUCH_MIN) & (s["right_touch"][..., 0] > TOUCH_MIN)
    reward = -np.minimum(d, 0.5) / 0.5 - 10.0 * np.maximum(slip - 0.005, 0.0)
    success = pinched & (slip <= 0.04) & (d < u.success_radius)
    return reward, success, (~touching & out_of_reach) | (touching & (slip > 0.04))


def _ref_cup_pick_place(u, sd):
    s = _ref_views(u, sd)
    cup, h = s["cup_pos"], u.cup_half_height
    d_hand = np.linalg.norm(s["ee_pos"] - (cup + np.array([0.0, 0.0, u.grasp_offset])), axis=-1)
    d_cup = np.linalg.norm(cup - np.array([u.target[0], u.target[1], h]), axis=-1)
    reward = -(0.5 * np.minimum(d_hand, 0.5) / 0.5 + d_cup / 0.3)
    lifted = cup[..., 2] - h > 0.015
    touching, tilt = _ref_touching(s), _ref_tilt(s)
    d_xy = np.linalg.norm(cup[..., :2] - u.target[:2], axis=-1)
    success = ~touching & ~lifted & (tilt < 0.3) & (d_xy < u.success_radius)
    return reward, success, (lifted & ~touching) | (tilt > 1.0)


REFERENCE_SCORES = {
    "Reach": _ref_reach,
    "CupPush": _ref_cup_push,
    "CupCarry": _ref_cup_carry,
    "CupPickPlace": _ref_cup_pick_place,
}


@pytest.mark.parametrize("task", list(TASKS))
def test_the_score_equals_the_reference_score_bit_for_bit(task):
    """Rewards, successes and failures of scripted and random episodes' sensor readings, one at
    a time (the env) and batched (N, H, S) as the simulators pass them, equal the score as it
    was; readings jittered across the thresholds, touches of zero, a cup upside down and NaN
    included."""
    env = gymnasium.make(env_id(task))
    u = env.unwrapped
    rng = np.random.default_rng(1)
    seen = []  # (success, failing) of every reading scored
    for seed, shift in enumerate(["id", "id", "ood-all-3"]):
        obs, _ = env.reset(seed=seed, options={"shift": shift})
        policy = u.scripted_policy("cautious", noise=0.3, seed=seed)
        policy.reset(env)
        readings = []
        for _ in range(u.max_episode_steps):
            act = policy.act(obs) if shift == "id" else rng.uniform(-1, 1, 4)
            obs, _, term, trunc, _ = env.step(act)
            readings.append(u.data.sensordata.copy())
            if term or trunc:
                break
        sd = np.array(readings)
        jitter = sd + rng.normal(0.0, 0.01, sd.shape) * (rng.random(sd.shape) < 0.5)
        odd = jitter[:8].copy()
        odd[:4, u._sensor["left_touch"]] = 0.0
        odd[2:4, u._sensor["cup_quat"]] = (0.0, 1.0, 0.0, 0.0)  # upside down
        odd[4:, u._sensor["cup_quat"].start + 1] = np.nan
        odd[6:, u._sensor["right_touch"]] = np.nan
        batch = np.concatenate([sd, jitter, odd])
        rows = len(batch) // 4 * 4
        for case in [*batch, batch, batch[:rows].reshape(4, rows // 4, -1)]:
            new, old = u.score(case), REFERENCE_SCORES[task](u, case)
            for a, b in zip(new, old, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert np.array_equal(a, b, equal_nan=True)
        seen.append(np.stack(u.score(batch)[1:]))
    success, failing = np.concatenate(seen, 1)
    assert success.any() and not success.all()  # both sides of the thresholds were met
    assert task == "Reach" or (failing.any() and not failing.all())
