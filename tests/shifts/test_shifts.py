"""Shifts, checked against MuJoCo's own state: which fields each changes and by how much, paired
draws, errors that name the valid choices, a cup that really slips, and look vs work in the env."""

import ast
import colorsys
import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest

import embodied  # noqa: F401  (registers the envs)
from embodied.apps.shifts import catalogue_table
from embodied.apps.shifts import main as shifts_main
from embodied.envs.arm import MAX_DELTA
from embodied.envs.scene import SCENE, build_model
from embodied.shifts import (
    NOMINAL,
    PARAMS,
    SHIFTS,
    parse_split,
    resolve_physics,
    start_physics,
    valid_splits,
)
from embodied.shifts.splits import ALL_SHIFTS, LOOK_SHIFTS, OOD_SHIFTS, train_physics_names

MODEL_SHIFTS = [n for n, s in SHIFTS.items() if s.start_effect is None]
ENV_SHIFTS = [n for n, s in SHIFTS.items() if s.start_effect is not None]
GRASP_SHIFTS = ("cup_mass", "cup_friction", "grip_force")


def model_fields(m: mujoco.MjModel) -> dict[str, np.ndarray]:
    """Every numeric field of the model, its options and statistics, by name ("opt.gravity")."""
    out = {}
    for obj, prefix in ((m, ""), (m.opt, "opt."), (m.stat, "stat.")):
        for name in dir(obj):
            if name.startswith("_"):
                continue
            value = getattr(obj, name)
            if isinstance(value, np.ndarray | int | float) and not isinstance(value, bool):
                out[prefix + name] = np.asarray(value)
    return out


def changed(a: mujoco.MjModel, b: mujoco.MjModel) -> set[str]:
    fa, fb = model_fields(a), model_fields(b)
    assert fa.keys() == fb.keys()
    return {k for k in fa if not np.array_equal(fa[k], fb[k])}


def shifted_values(shift: str) -> dict[str, float]:
    """Severity 3 of a work shift; the middle of the look range of a look shift."""
    out = {}
    for p in SHIFTS[shift].params:
        if p.severities is not None:
            out[p.name] = p.severities[2]
        elif p.look_range is not None:
            out[p.name] = sum(p.look_range) / 2
    return out


@pytest.fixture(scope="module")
def nominal() -> mujoco.MjModel:
    return build_model(NOMINAL)


# ----------------------------------------------------------------- catalogue


def test_nominal_model_is_the_xml_bit_for_bit(nominal):
    assert changed(nominal, mujoco.MjModel.from_xml_string(SCENE.xml)) == set()


def test_catalogue_values_are_valid_ood_monotone_and_outside_id():
    for p in PARAMS.values():
        lo, hi = p.id_range
        assert lo <= p.nominal <= hi, p.name
        for v in (p.nominal, lo, hi, *(p.look_range or ())):
            assert p.check(v) == v
        if p.severities is not None:
            assert len(p.severities) == 5
            dist = [abs(v - p.nominal) for v in p.severities]
            assert all(a < b for a, b in zip(dist, dist[1:], strict=False)), p.name
            assert all(not lo <= v <= hi for v in p.severities), p.name
            assert all(p.check(v) == v for v in p.severities)
    assert {s.kind for s in SHIFTS.values()} == {"work", "look", "both"}
    assert set(NOMINAL) == set(PARAMS)


@pytest.mark.parametrize("shift", MODEL_SHIFTS)
def test_shift_changes_exactly_the_fields_it_names(nominal, shift):
    s = SHIFTS[shift]
    diff = changed(nominal, build_model(shifted_values(shift)))
    assert set(s.fields) <= diff, f"{shift} left a named field unchanged"
    assert diff <= set(s.fields) | set(s.derived), f"{shift} changed {diff - set(s.fields)}"


@pytest.mark.parametrize("shift", ENV_SHIFTS)
def test_env_applied_shift_leaves_the_model_alone(nominal, shift):
    assert changed(nominal, build_model(shifted_values(shift))) == set()


def test_work_shifts_change_fields_by_the_documented_amount(nominal):
    n = nominal
    cup, grip = n.body("cup").id, n.actuator("grip").id
    pads = [n.pair(p).id for p in ("cup_left_pad", "cup_right_pad")]
    table = n.pair("cup_table").id

    m = build_model({"cup_mass": 0.5})
    assert m.body_mass[cup] == 0.5
    np.testing.assert_allclose(m.body_inertia[cup], n.body_inertia[cup] * 2.5, rtol=1e-12)

    m = build_model({"cup_friction": 0.33, "table_friction": 0.11})
    assert np.all(m.pair_friction[pads, :2] == 0.33)
    assert np.all(m.pair_friction[table, :2] == 0.11)
    np.testing.assert_array_equal(m.pair_friction[:, 2:], n.pair_friction[:, 2:])
    others = [i for i in range(n.npair) if i not in (*pads, table)]
    np.testing.assert_array_equal(m.pair_friction[others], n.pair_friction[others])

    m = build_model({"grip_force": 1.25})
    assert m.actuator_gainprm[grip, 0] == 1.25

    m = build_model({"actuator_gain": 0.5})
    for name in ("x", "y", "z"):
        a = n.actuator(name).id
        assert m.actuator_gainprm[a, 0] == 0.5 * n.actuator_gainprm[a, 0] == 750.0
        np.testing.assert_array_equal(m.actuator_biasprm[a, 1:3], 0.5 * n.actuator_biasprm[a, 1:3])
    for name in ("rx", "ry", "rz", "grip"):
        a = n.actuator(name).id
        np.testing.assert_array_equal(m.actuator_gainprm[a], n.actuator_gainprm[a])
        np.testing.assert_array_equal(m.actuator_biasprm[a], n.actuator_biasprm[a])

    m = build_model({"joint_damping": 7.5})
    arm = [n.joint(f"joint{i}").dofadr[0] for i in range(1, 8)]
    assert np.all(m.dof_damping[arm] == 7.5)
    rest = [i for i in range(n.nv) if i not in arm]
    np.testing.assert_array_equal(m.dof_damping[rest], n.dof_damping[rest])

    m = build_model({"gravity": 15.0})
    np.testing.assert_array_equal(m.opt.gravity, [0.0, 0.0, -15.0])


def test_mass_edit_in_place_matches_a_model_compiled_with_that_mass():
    spec = mujoco.MjSpec.from_string(SCENE.xml)
    spec.geom("cup").mass = 0.45
    compiled, edited = model_fields(spec.compile()), model_fields(build_model({"cup_mass": 0.45}))
    for name, value in compiled.items():
        np.testing.assert_allclose(edited[name], value, rtol=1e-12, atol=1e-15, err_msg=name)


def test_cup_size_rebuilds_geometry_and_mass_follows_at_constant_density(nominal):
    g, b = nominal.geom("cup").id, nominal.body("cup").id
    m = build_model({"cup_size": 1.25, "cup_mass": 0.3})
    np.testing.assert_allclose(m.geom_size[g, :2], nominal.geom_size[g, :2] * 1.25)
    np.testing.assert_allclose(m.body_mass[b], 0.3 * 1.25**3, rtol=1e-12)
    assert m.geom_rbound[g] > nominal.geom_rbound[g]


def test_look_shifts_change_appearance_by_the_documented_amount(nominal):
    g, mat = nominal.geom("cup").id, nominal.material("table").id
    light, cam = nominal.light("key").id, nominal.camera("fixed").id
    m = build_model({"cup_hue": 0.25, "table_tint": 0.6, "table_hue": 2 / 3, "light_level": 0.4})
    h0 = colorsys.rgb_to_hsv(*nominal.geom_rgba[g, :3].astype(float))[0]
    h1 = colorsys.rgb_to_hsv(*m.geom_rgba[g, :3].astype(float))[0]
    assert math.isclose((h1 - h0) % 1.0, 0.25, abs_tol=1e-5)
    np.testing.assert_allclose(m.mat_rgba[mat, :3], [0.4, 0.4, 1.0], atol=1e-6)  # blue tint
    np.testing.assert_allclose(m.light_diffuse[light], 0.4 * nominal.light_diffuse[light])
    m = build_model({"camera_dx": 0.03, "camera_dy": -0.02, "camera_dz": 0.01})
    np.testing.assert_allclose(m.cam_pos[cam] - nominal.cam_pos[cam], [0.03, -0.02, 0.01])


def test_look_splits_leave_every_dynamics_field_identical():
    for shift in LOOK_SHIFTS:
        diff = changed(
            build_model(resolve_physics("id", 4)), build_model(resolve_physics(f"look-{shift}", 4))
        )
        assert diff and diff <= set(SHIFTS[shift].fields), shift


def test_build_model_is_a_pure_function_of_the_dict():
    physics = resolve_physics("ood-all-4", 11)
    first = build_model(physics)
    build_model(resolve_physics("ood-cup_size-2", 3))  # other models in between
    assert changed(first, build_model(physics)) == set()
    assert build_model(physics) is not build_model(physics)


# ----------------------------------------------------------------- each shift's own writer


@pytest.mark.parametrize("shift", [n for n, s in SHIFTS.items() if s.start_effect is None])
def test_a_shift_writer_writes_the_fields_it_claims_at_its_severity(nominal, shift):
    """The writer on the Shift itself, called alone on the scene: at severity 3 (or the middle of
    its look range) it moves the fields it claims and, but for what MuJoCo derives, no other."""
    s, values = SHIFTS[shift], NOMINAL | shifted_values(shift)
    if s.edit_spec is not None:
        spec = mujoco.MjSpec.from_string(SCENE.xml)
        s.edit_spec(spec, values, SCENE)
        m = spec.compile()
    else:
        m = copy.copy(nominal)
        s.write_model(m, values, SCENE)
    diff = changed(nominal, m)
    assert set(s.fields) <= diff <= set(s.fields) | set(s.derived), (shift, diff)


def trace(physics: dict[str, float], field: str, steps: int = 12) -> np.ndarray:
    """MuJoCo's ``field`` ("data.ctrl") after reset and after each step of a Reach episode under
    ``physics``, with the same actions every time."""
    env = gymnasium.make("embodied/Reach-v0", physics=QUIET | physics)
    env.reset(seed=3)
    read = lambda: getattr(env.unwrapped.data, field.removeprefix("data.")).copy()  # noqa: E731
    rows = [read()]
    for t in range(steps):
        env.step(ACTIONS[t % len(ACTIONS)] * [0.3, 0.3, 0.3, 0.5])
        rows.append(read())
    env.close()
    return np.array(rows)


QUIET = {"action_noise": 0.0, "action_latency": 0.0, "push_force": 0.0}


def check_action_noise(field: str) -> None:
    std = PARAMS["action_noise"].severities[2]
    noisy, clean = trace({"action_noise": std}, field, 60), trace({}, field, 60)

    def actions(ctrl: np.ndarray) -> np.ndarray:  # what reached the servos and the grip
        return np.column_stack([np.diff(ctrl[:, :3], axis=0) / MAX_DELTA, ctrl[1:, 6]])

    applied = actions(noisy)
    noise = (applied - actions(clean))[np.abs(applied) < 1.0]  # the entries left unclipped
    assert len(noise) > 200 and abs(noise.std() / std - 1.0) < 0.2  # measured: 0.91


def check_action_latency(field: str) -> None:
    steps = int(PARAMS["action_latency"].severities[2])
    late, clean = trace({"action_latency": steps}, field), trace({}, field)
    np.testing.assert_array_equal(late[: steps + 1], np.tile(clean[0], (steps + 1, 1)))  # held
    np.testing.assert_array_equal(late[steps:], clean[:-steps])


def check_push(field: str) -> None:
    force = PARAMS["push_force"].severities[2]
    push = {"push_force": force, "push_time": 0.3, "push_angle": 0.5}
    cup = build_model(NOMINAL).body("cup").id
    pushed, clean = trace(push, field)[:, cup], trace({}, field)[:, cup]
    on = [7, 8]  # after control steps 7 and 8 (25 x 2 ms each), inside [0.3 s, 0.4 s)
    expected = force * np.array([np.cos(0.5), np.sin(0.5), 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(pushed[on], [expected, expected])
    assert not np.delete(pushed, on, axis=0).any() and not clean.any()


EPISODE_CHECKS = {
    "action_noise": check_action_noise,
    "action_latency": check_action_latency,
    "push": check_push,
}


@pytest.mark.parametrize("shift", ENV_SHIFTS)
def test_an_episode_shift_writes_the_mjdata_field_it_claims_at_its_severity(shift):
    """Through the env, read back from MjData: noise and latency reach data.ctrl (the servo
    targets and the grip), a push reaches data.xfrc_applied of the cup, at severity 3."""
    (field,) = SHIFTS[shift].fields
    assert field.startswith("data.")
    EPISODE_CHECKS[shift](field)  # a new episode shift needs a check here


# ----------------------------------------------------------------- splits and draws


def test_same_seed_same_values_and_every_key_present():
    for split in ("train", "id", "ood-cup_mass-3", "look-light", "ood-all-2"):
        a, b = resolve_physics(split, 5), resolve_physics(split, 5)
        assert a == b and set(a) == set(NOMINAL)
        assert all(type(v) is float for v in a.values())
    assert resolve_physics("id", 5) != resolve_physics("id", 6)


def test_train_and_id_draw_different_values_from_the_same_ranges():
    train, held_out = resolve_physics("train", 0), resolve_physics("id", 0)
    for name, p in PARAMS.items():
        lo, hi = p.id_range
        assert lo <= train[name] <= hi and lo <= held_out[name] <= hi, name
        assert (train[name] != held_out[name]) == (lo != hi), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_split_changes_only_what_it_names(seed):
    ref = resolve_physics("id", seed)
    for split in valid_splits():
        sp = parse_split(split)
        if sp.kind in ("train", "id"):
            continue
        named = {p.name for s in sp.shifts for p in SHIFTS[s].params}
        values = resolve_physics(split, seed)
        moved = {k for k in ref if values[k] != ref[k]}
        assert moved <= named, split
        if sp.kind == "ood":
            for p in SHIFTS[sp.shift].params:
                if p.severities is not None:
                    assert values[p.name] == p.severities[sp.severity - 1]


def test_ood_all_moves_every_work_shift_and_no_look():
    values, ref = resolve_physics("ood-all-3", 9), resolve_physics("id", 9)
    assert set(ALL_SHIFTS) == {n for n, s in SHIFTS.items() if s.kind == "work"}
    for name, p in PARAMS.items():
        if p.severities is not None and name != "cup_size":
            assert values[name] == p.severities[2], name
        elif p.severities is None:
            assert values[name] == ref[name], name
    assert values["cup_size"] == ref["cup_size"] == 1.0


def test_look_split_draws_from_the_wide_range():
    for seed in range(5):
        values = resolve_physics("look-camera_jitter", seed)
        for axis in "xyz":
            p = PARAMS[f"camera_d{axis}"]
            assert p.look_range[0] <= abs(values[p.name]) <= p.look_range[1]
        assert 0.2 <= resolve_physics("look-cup_colour", seed)["cup_hue"] <= 0.8


def test_explicit_values_override_and_round_trip():
    physics = resolve_physics("ood-grip_force-2", 3, {"cup_mass": 0.6, "action_latency": 2})
    assert physics["cup_mass"] == 0.6 and physics["action_latency"] == 2.0
    assert physics["grip_force"] == PARAMS["grip_force"].severities[1]
    assert resolve_physics("id", 3, physics) == physics


def test_parse_split_flags():
    assert parse_split("ood-cup_mass-3").work and not parse_split("ood-cup_mass-3").look
    assert parse_split("look-light").look and not parse_split("look-light").work
    size = parse_split("ood-cup_size-1")
    assert size.look and size.work and size.severity == 1
    assert parse_split("ood-all-5").shift == "all" and parse_split("ood-all-5").work
    assert not parse_split("id").look and not parse_split("id").work


@pytest.mark.parametrize(
    ("split", "names"),
    [
        ("validation", ["train", "id", "ood-<shift>-<1..5>"]),
        ("ood-mass-3", ["cup_mass", "grip_force", "all"]),
        ("ood-cup_mass-0", ["[1, 2, 3, 4, 5]"]),
        ("ood-cup_mass-6", ["[1, 2, 3, 4, 5]"]),
        ("ood-cup_mass-high", ["[1, 2, 3, 4, 5]"]),
        ("ood-cup_mass", ["ood-<shift>-<severity>"]),
        ("look-cup_mass", ["cup_colour", "camera_jitter"]),
        ("ood-cup_colour-2", ["cup_mass", "push"]),
    ],
)
def test_bad_splits_fail_naming_the_valid_choices(split, names):
    with pytest.raises(ValueError) as err:
        resolve_physics(split, 0)
    assert all(n in str(err.value) for n in names), str(err.value)


@pytest.mark.parametrize(
    ("physics", "needle"),
    [
        ({"mass": 0.3}, "cup_mass"),
        ({"cup_mass": -0.1}, "(0, inf)"),
        ({"cup_mass": 0.0}, "(0, inf)"),
        ({"cup_friction": -0.2}, "[0, inf)"),
        ({"gravity": 0.0}, "(0, inf)"),
        ({"gravity": -9.81}, "(0, inf)"),
        ({"action_latency": 1.5}, "integer"),
        ({"action_latency": -1}, "[0, 50]"),
        ({"grip_force": math.nan}, "[0, inf)"),
        ({"joint_damping": math.inf}, "[0, inf)"),
        ({"cup_size": 3.0}, "[0.5, 1.5]"),
        ({"cup_mass": "heavy"}, "(0, inf)"),
        ({"cup_mass": True}, "(0, inf)"),
    ],
)
def test_bad_explicit_values_fail_naming_the_valid_range(physics, needle):
    with pytest.raises(ValueError) as err:
        resolve_physics("id", 0, physics)
    assert needle in str(err.value)
    with pytest.raises(ValueError):
        build_model(physics)


def test_bad_seed_fails():
    for seed in (-1, 1.5, "0"):
        with pytest.raises(ValueError, match="non-negative integer"):
            resolve_physics("id", seed)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the cup really slips


def cup_drop_in_grip(physics: dict[str, float], seconds: float = 1.0) -> float:
    """How far (m) a cup pinched by the pads at full grip slides down relative to the hand."""
    m = build_model(physics)
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    mujoco.mj_kinematics(m, d)
    ee = d.site("ee").xpos.copy()
    radius, half_height = m.geom("cup").size[:2]
    d.joint("left_finger").qpos = d.joint("right_finger").qpos = radius
    d.joint("cup").qpos = [*(ee - [0.0, 0.0, 0.4 * half_height]), 1.0, 0.0, 0.0, 0.0]
    d.ctrl[:3], d.ctrl[m.actuator("grip").id] = ee, 1.0
    mujoco.mj_forward(m, d)
    start = d.site("cup").xpos[2] - d.site("ee").xpos[2]
    mujoco.mj_step(m, d, nstep=int(seconds / m.opt.timestep))
    return float(start - (d.site("cup").xpos[2] - d.site("ee").xpos[2]))


def test_the_grasp_holds_at_nominal_and_at_the_weakest_id_corner():
    assert cup_drop_in_grip(NOMINAL) < 0.005
    weakest = {n: PARAMS[n].id_range[i] for n, i in [("cup_mass", 1), ("cup_friction", 0)]}
    weakest |= {"grip_force": PARAMS["grip_force"].id_range[0], "gravity": 10.0}
    assert cup_drop_in_grip(weakest) < 0.005


@pytest.mark.parametrize("shift", GRASP_SHIFTS)
def test_the_cup_slips_out_at_severity_5_of_each_grasp_shift(shift):
    assert cup_drop_in_grip(shifted_values(shift) | {shift: PARAMS[shift].severities[4]}) > 0.1


def test_pair_friction_alone_lets_the_cup_slip():
    """The pads' geom friction stays 1: only the pair's own friction can let the cup go."""
    m = build_model({"cup_friction": 0.2})
    assert m.geom_friction[m.geom("left_pad").id, 0] >= 0.8
    assert cup_drop_in_grip({"cup_friction": 0.2}) > 0.1
    assert cup_drop_in_grip({"cup_friction": 0.6}) < 0.005


# ----------------------------------------------------------------- the env: look vs work

ACTIONS = np.array(
    [[0.6, -0.4, 0.5, 1.0], [-0.3, 0.8, -0.2, 1.0], [0.9, 0.9, 0.9, 1.0]], np.float32
)


def rollout(env: gymnasium.Env, split: str, seed: int, steps: int = 12):
    obs, _ = env.reset(seed=seed, options={"shift": split})
    states, frames = [obs["state"]], [obs["pixels"]]
    for t in range(steps):
        obs, *_ = env.step(ACTIONS[t % len(ACTIONS)])
        states.append(obs["state"])
        frames.append(obs["pixels"])
    return np.array(states), np.array(frames)


@pytest.fixture(scope="module")
def pixel_env():
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state+pixels", image_size=48)
    yield env
    env.close()


@pytest.mark.parametrize("shift", LOOK_SHIFTS)
def test_a_look_shift_keeps_the_trajectory_and_changes_the_frames(pixel_env, shift):
    states, frames = rollout(pixel_env, "id", seed=2)
    look_states, look_frames = rollout(pixel_env, f"look-{shift}", seed=2)
    np.testing.assert_array_equal(look_states, states)
    assert not np.array_equal(look_frames[0], frames[0])


@pytest.mark.parametrize(
    "split",
    [
        "ood-cup_mass-3",
        "ood-grip_force-3",
        "ood-actuator_gain-3",
        "ood-push-3",
        "ood-action_latency-2",
    ],
)
def test_a_work_shift_keeps_the_first_frame_and_changes_the_trajectory(pixel_env, split):
    states, frames = rollout(pixel_env, "id", seed=2)
    work_states, work_frames = rollout(pixel_env, split, seed=2)
    np.testing.assert_array_equal(work_frames[0], frames[0])
    assert not np.array_equal(work_states, states)


def test_start_physics_is_nominal_dynamics_with_the_episode_look_and_geometry():
    for split in ("ood-all-4", "look-light", "ood-cup_size-3", "train"):
        physics = resolve_physics(split, 8)
        start = start_physics(physics)
        for name, p in PARAMS.items():
            kind = next(s.kind for s in SHIFTS.values() if p in s.params)
            assert start[name] == (NOMINAL[name] if kind == "work" else physics[name]), name
    assert start_physics(resolve_physics("ood-cup_mass-5", 8)) == start_physics(
        resolve_physics("id", 8)
    )


# ----------------------------------------------------------------- the command


def test_the_command_prints_every_shift_and_resolves_a_split(capsys):
    table = catalogue_table()
    for name, shift in SHIFTS.items():
        assert name in table and shift.fields[0] in table
    assert "0.28 0.34 0.4 0.46 0.55" in table  # cup_mass severities
    shifts_main(["--resolve", "ood-cup_mass-3", "--seed", "1"])
    assert '"cup_mass": 0.4' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        shifts_main(["--resolve", "ood-nothing-3"])
    assert "valid" in capsys.readouterr().err
    shifts_main(["--splits"])
    assert set(capsys.readouterr().out.split()) == set(valid_splits())
    trains = len(train_physics_names())  # train, train-wide/mix-1..4, train-interp-<shift>
    assert len(OOD_SHIFTS) * 5 + len(LOOK_SHIFTS) + 6 + trains == len(valid_splits())


# ----------------------------------------------------------------- one place for each thing

CORE = Path(__file__).resolve().parents[2] / "embodied"
# Only the package's __init__ may name the envs: it sets up rendering (embodied.envs.gl)
# before MuJoCo is imported, then imports the task modules (each task class registers itself).
GLUE = {CORE / "__init__.py"}
ENVS_NAME = re.compile(r"embodied\.envs(\.\w+)*(:\w+)?")


def envs_references(path: Path) -> list[str]:
    """Where a module imports embodied.envs or names it as a module string (resources.files,
    import_module); docstrings may mention it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("embodied.envs")]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [n for n in names if n.startswith("embodied.envs")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [node.value] if ENVS_NAME.fullmatch(node.value) else []
    return found


def test_the_core_neither_imports_nor_reads_the_envs():
    modules = sorted(set(CORE.rglob("*.py")) - GLUE)
    assert CORE / "shifts" / "model.py" in modules and len(modules) > 20
    assert envs_references(CORE / "__init__.py")  # the check does see a reference
    assert {
        str(p.relative_to(CORE)): envs_references(p) for p in modules if envs_references(p)
    } == {}
    # and at run time: every core module imports with the envs unreachable (the package's
    # __init__, which imports the tasks, left out; registration's table then stays empty)
    names = [".".join(("embodied", *p.relative_to(CORE).with_suffix("").parts)) for p in modules]
    code = (
        "import importlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('embodied', {str(CORE / '__init__.py')!r},"
        f" submodule_search_locations=[{str(CORE)!r}])\n"
        "sys.modules['embodied'] = importlib.util.module_from_spec(spec)\n"
        "sys.modules['embodied.envs'] = None  # import embodied.envs... raises ImportError\n"
        f"for name in {[n.removesuffix('.__init__') for n in names]!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len([m for m in sys.modules if m.startswith('embodied.')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) >= len(modules)
