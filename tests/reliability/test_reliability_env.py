"""Env API under misuse: wild actions, every split, explicit physics in and out of range, and
simulations that diverge (counted as ``physics_error`` with truncation, never a crash or NaN)."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import embodied
from embodied import evaluate
from embodied.collect import collect
from embodied.registration import env_id
from embodied.shifts import PARAMS, valid_splits

TASKS = sorted(embodied.TASKS)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# explicit values that make MuJoCo diverge on the first step (found by fuzzing: any of these
# alone sends qacc to inf or NaN)
DIVERGING = [{"joint_damping": 1e9}, {"grip_force": 1e300}, {"gravity": 1e300}]


@pytest.fixture(scope="module")
def envs():
    """One env per task, shared by the module's tests in any order.

    Each is reset and stepped once first: gymnasium's passive checker inspects the first
    reset and step, and (gymnasium 1.4) fails on the first step if the first reset raised,
    as a test here makes it do on purpose.
    """
    made = {task: gymnasium.make(env_id(task)) for task in TASKS}
    for env in made.values():
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
    yield made
    for env in made.values():
        env.close()


def check_step(out) -> None:
    obs, reward, terminated, truncated, info = out
    assert obs.dtype == np.float32 and np.isfinite(obs).all()
    assert math.isfinite(reward)
    assert {"is_success", "dropped", "physics_error", "physics"} <= set(info)
    if info["physics_error"]:
        assert truncated and not terminated


def is_valid_action(action) -> bool:
    a = np.asarray(action)
    return a.dtype.kind in "iuf" and a.shape == (4,) and bool(np.isfinite(a).all())


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
actions = st.one_of(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=5), elements=floats),
    hnp.arrays(
        st.sampled_from([np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_]),
        st.just((4,)),
    ),
    hnp.arrays(np.complex128, (4,)),
    st.lists(st.one_of(floats, st.integers(-(10**6), 10**6)), min_size=0, max_size=6),
    st.lists(st.one_of(st.text(max_size=3), st.none(), st.floats()), min_size=4, max_size=4),
    st.one_of(st.none(), st.integers(), st.text(max_size=4), st.dictionaries(st.text(), floats)),
)


@FUZZ
@given(action=actions, task=st.sampled_from(TASKS))
def test_any_action_steps_or_fails_with_a_clear_value_error(envs, action, task):
    env = envs[task]
    env.reset(seed=0)
    if is_valid_action(action):
        check_step(env.step(action))  # out of bounds is clipped, never an error
    else:
        with pytest.raises(ValueError, match=r"action must"):
            env.step(action)
        check_step(env.step(np.zeros(4, np.float32)))  # and the env is still usable


@pytest.mark.parametrize("task", TASKS)
def test_every_split_resets_and_steps(envs, task):
    env = envs[task]
    rng = np.random.default_rng(0)
    for i, split in enumerate(valid_splits()):
        obs, info = env.reset(seed=i, options={"shift": split})
        assert np.isfinite(obs).all() and set(info["physics"]) == set(PARAMS)
        for _ in range(2):
            check_step(env.step(rng.uniform(-1.5, 1.5, 4)))


def inside(p) -> st.SearchStrategy[float]:
    lo, hi = p.valid
    if p.integer:
        return st.integers(int(lo), int(hi)).map(float)
    lo = max(lo, -1e300)
    hi = min(hi, 1e300)
    return st.floats(lo, hi, exclude_min=p.open_low, allow_nan=False)


def outside(p) -> st.SearchStrategy[object]:
    lo, hi = p.valid
    bad: list[st.SearchStrategy[object]] = [
        st.just(math.nan),
        st.just("0.5"),
        st.just(None),
        st.just(True),
        st.just([lo]),
    ]
    if math.isfinite(lo):
        bad.append(st.floats(max_value=lo, exclude_max=not p.open_low, allow_nan=False))
    if math.isfinite(hi):
        bad.append(st.floats(min_value=hi, exclude_min=True, allow_nan=False))
    if p.integer:
        bad.append(st.just(lo + 0.5))
    return st.one_of(bad)


@st.composite
def physics(draw, valid: bool) -> dict[str, object]:
    names = draw(st.lists(st.sampled_from(sorted(PARAMS)), min_size=1, max_size=4, unique=True))
    values = {n: draw(inside(PARAMS[n])) for n in names}
    if not valid:
        name = draw(st.sampled_from(names))
        values[name] = draw(outside(PARAMS[name]))
    return values


@FUZZ
@given(values=physics(valid=True), task=st.sampled_from(TASKS), seed=st.integers(0, 2**31))
def test_any_valid_explicit_physics_runs_without_crash_or_nan(envs, values, task, seed):
    env = envs[task]
    _, info = env.reset(seed=seed, options={"physics": values})
    assert all(info["physics"][k] == float(v) for k, v in values.items())
    rng = np.random.default_rng(seed)
    for _ in range(4):
        out = env.step(rng.uniform(-1, 1, 4))
        check_step(out)
        if out[2] or out[3]:
            break


@FUZZ
@given(values=physics(valid=False), task=st.sampled_from(TASKS))
def test_invalid_explicit_physics_fails_naming_the_valid_range(envs, values, task):
    with pytest.raises(ValueError, match=r"must be (an integer|a finite number) in [\[(]"):
        envs[task].reset(seed=0, options={"physics": values})
    with pytest.raises(ValueError, match=r"must be (an integer|a finite number) in [\[(]"):
        gymnasium.make(env_id(task), physics=values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"physics": "cup_mass=0.3"}, r"physics must be a mapping"),
        ({"physics": [("cup_mass", 0.3)]}, r"physics must be a mapping"),
        ({"physics": {"cup_mas": 0.3}}, r"unknown physics parameter 'cup_mas'; valid: \["),
        ({"image_size": 10**9}, r"image_size must be an integer in \[8, 480\]"),
        ({"image_size": 64.5}, r"image_size must be an integer"),
        ({"image_size": "64"}, r"image_size must be an integer"),
        ({"render_size": (0, 10)}, r"render_size height must be an integer in \[1, 480\]"),
        ({"render_size": 64}, r"render_size must be \(height, width\)"),
        ({"shift": None}, r"split must be a string"),
        ({"obs_mode": "rgb"}, r"valid: \['state', 'pixels', 'state\+pixels'\]"),
    ],
)
def test_bad_constructor_arguments_fail_at_make(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gymnasium.make("embodied/CupCarry-v0", **kwargs)


@pytest.mark.parametrize(
    "options", [{"shfit": "id"}, ["shift"], {"physics": [1.0]}, {"shift": "ood-cup_mass-9"}]
)
def test_bad_reset_options_fail_clearly(envs, options):
    with pytest.raises(ValueError, match=r"reset options take|physics must be|severity must"):
        envs["CupCarry"].reset(seed=0, options=options)


@pytest.mark.parametrize("values", DIVERGING)
def test_a_diverging_simulation_truncates_with_physics_error_and_finite_state(envs, values):
    env = envs["CupCarry"]
    env.reset(seed=0, options={"physics": values})
    data = env.unwrapped.data
    qpos, qvel = data.qpos.copy(), data.qvel.copy()
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.hold_action())
    assert info["physics_error"] and truncated and not terminated and reward < 0
    # rewound to the last physical state: no NaN for a replay buffer, a renderer or a planner
    assert np.isfinite(obs).all()
    np.testing.assert_array_equal(data.qpos, qpos)
    np.testing.assert_array_equal(data.qvel, qvel)


@pytest.mark.parametrize("field", ["qvel", "qpos", "qacc_warmstart"])
def test_a_nan_in_the_simulation_is_a_physics_error_not_a_silent_reset(envs, field):
    """MuJoCo answers a NaN by resetting the data to qpos0 (the arm jumps home); that used to
    go unnoticed for qpos and qvel, and the episode ran on from the teleported state."""
    env = envs["CupCarry"]
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))
    getattr(env.unwrapped.data, field)[0] = np.nan
    *_, truncated, info = env.step(np.zeros(4, np.float32))
    assert info["physics_error"] and truncated
    _, info = env.reset(seed=1)  # a fresh episode is healthy again
    *_, info = env.step(np.zeros(4, np.float32))
    assert not info["physics_error"]


class Still:
    def reset(self, env):
        pass

    def act(self, obs):
        return np.zeros(4, np.float32)


def test_eval_counts_a_real_divergence_and_collect_gives_up_clearly(tmp_path):
    env = gymnasium.make("embodied/CupCarry-v0", physics=DIVERGING[0])
    row, flags = evaluate.run_episode(env, Still(), seed=3)
    assert row["physics_error"] and row["steps"] == 1 and not row["success"]
    assert flags["physics_error"].tolist() == [False, True]
    with pytest.raises(RuntimeError, match=r"episodes diverged in embodied/CupCarry-v0"):
        collect(
            "embodied/CupCarry-v0",
            tmp_path / "data",
            episodes=2,
            obs_modes=("state",),
            progress=False,
            env_kwargs={"physics": DIVERGING[0]},
        )
    assert not (tmp_path / "data" / "manifest.json").exists()
