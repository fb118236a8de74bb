"""Any video predictor, scored by what the arm does: a predictor defined here, outside the
package, is scored on CupCarry id + an OOD split through the Python API and through
``embodied-eval agents=[video] +agent_overrides.video.predictor._target_=...``; the task's
score judges read states exactly as it judges MuJoCo's sensors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import embodied
from embodied.agents.video import (
    CopyLastFrame,
    FrameProbe,
    VideoPredictor,
    VideoWorldModel,
    sensordata,
)
from embodied.clips import probe_clips
from embodied.evaluate import EvalSettings

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ["id", "ood-cup_mass-3"]
GRID = dict(tasks=["CupCarry"], splits=SPLITS, seeds=[0], episodes=2, preset="smoke")


class ShiftPredictor:
    """A small frame predictor: the last frame, shifted by the commanded hand motion (a
    pixel per unit of dx and dy), the grip ignored. Knows nothing of cups."""

    def __init__(self, pixels: float = 1.5):
        self.pixels = pixels

    def predict(self, context_frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        t = context_frames.shape[1]
        moves = np.cumsum(actions[:, t:, :2], axis=1) * self.pixels
        last = context_frames[:, -1]
        out = np.empty((len(last), moves.shape[1], *last.shape[1:]), np.uint8)
        for b in range(len(last)):
            for k in range(moves.shape[1]):
                dy, dx = int(round(moves[b, k, 0])), int(round(moves[b, k, 1]))
                out[b, k] = np.roll(last[b], (dy, dx), axis=(0, 1))
        return out


def test_predictors_meet_the_protocol():
    assert isinstance(ShiftPredictor(), VideoPredictor)
    assert isinstance(CopyLastFrame(), VideoPredictor)
    frames = np.zeros((3, 4, 8, 8, 3), np.uint8)
    assert CopyLastFrame().predict(frames, np.zeros((3, 9, 4), np.float32)).shape == (3, 5, 8, 8, 3)


def test_read_states_are_judged_as_mujoco_sensors_are():
    """sensordata(state vector) gives the task's score what the env's own sensors give it."""
    env = gymnasium.make("embodied/CupCarry-v0", shift="ood-grip_force-5")
    u = env.unwrapped
    env.reset(seed=4)
    policy = u.scripted_policy("aggressive", noise=0.3, seed=4)
    policy.reset(env)
    judged = []
    for _ in range(60):
        obs, *_ = env.step(policy.act(u.state_vector()))
        truth = u.score(u.data.sensordata.copy())
        mine = u.score(sensordata(u, u.state_vector().astype(np.float64)))
        np.testing.assert_allclose(mine[0], truth[0], atol=1e-5)
        assert (mine[1], mine[2]) == (truth[1], truth[2])
        judged.append(bool(truth[2]))
    env.close()
    assert any(judged) and not all(judged)  # the check met a failing state and a healthy one


def test_frame_probe_reads_the_cup_and_hand(tmp_path):
    """Fitted on train clips, the probe reads ID frames' cup and hand within centimetres."""
    fit = EvalSettings(
        agents={}, run_dir=str(tmp_path), episodes=1, video_horizon=8, probe_clips=64
    )
    clips = probe_clips("CupCarry", fit)
    probe = FrameProbe.fit(
        clips["pixels"].reshape(-1, 64, 64, 3), clips["state"].reshape(-1, 44), 16, 1e-3
    )
    held = EvalSettings(agents={}, run_dir=str(tmp_path / "b"), episodes=1, video_horizon=8)
    from embodied.clips import collect_clips

    other = collect_clips("CupCarry", "id", held, list(range(900, 940)), 10)
    labels = list(gymnasium.make("embodied/CupCarry-v0").unwrapped.state_labels)
    read, truth = probe.read(other["pixels"]), other["state"]
    cup = [labels.index(n) for n in ("cup_x", "cup_y", "cup_z")]
    hand = [labels.index(n) for n in ("ee_x", "ee_y", "ee_z")]
    rel = np.linalg.norm(
        (read[..., cup] - read[..., hand]) - (truth[..., cup] - truth[..., hand]), axis=-1
    ).mean()
    absolute = np.linalg.norm(read[..., cup] - truth[..., cup], axis=-1).mean()
    print(f"frame probe on ID frames: cup - hand {1000 * rel:.1f} mm, cup {1000 * absolute:.1f} mm")
    assert rel < 0.005  # what the agent takes from frames: within 5 mm (0.9 mm measured)


def _check_lines(lines):
    assert [line["split"] for line in lines] == SPLITS
    for line in lines:
        emb, video = line["embodied"], line["video"]
        assert emb["episodes"] == 2 and 0 <= emb["success_rate"] <= 1
        assert 0 <= emb["drop_rate"] <= 1
        assert np.isfinite(video["psnr_mean"]) and video["frames_kind"] == "decoder"
        assert video["probe"]["linear"]["rel"] and video["cup_pos_error_mean"] is not None


@pytest.mark.slow
def test_a_predictor_from_outside_is_scored_through_the_api_and_the_app(tmp_path):
    lines = embodied.evaluate(
        ShiftPredictor(),
        **GRID,
        run_dir=str(tmp_path / "api"),
        overrides=["videos.cells=[]"],
        progress=False,
        frame=False,
    )
    _check_lines(lines)
    for line in lines:
        emb, video = line["embodied"], line["video"]
        rel = video["probe"]["linear"]["rel"]
        print(
            f"ShiftPredictor {line['split']}: success {emb['success_rate']:.2f} drop "
            f"{emb['drop_rate']:.2f} psnr {video['psnr_mean']:.1f} state error "
            f"{1000 * sum(rel) / len(rel):.1f} mm ({line['wall_s']:.0f} s)"
        )
    assert lines[0]["agent"] == "ShiftPredictor" and lines[0]["family"] == "predictor"
    run = tmp_path / "app"
    target = "tests.agents.test_video_agent.ShiftPredictor"  # with the repo on the python path
    cmd = [
        str(Path(sys.executable).parent / "embodied-eval"),
        "agents=[video]",
        f"+agent_overrides.video.predictor._target_={target}",
        "preset=smoke",
        f"run_dir={run}",
        "tasks=[CupCarry]",
        f"splits=[{','.join(SPLITS)}]",
        "seeds=[0]",
        "episodes=2",
        "videos.cells=[]",
        "progress=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    app = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    app.sort(key=lambda line: SPLITS.index(line["split"]))  # the file is in finishing order
    _check_lines(app)
    for mine, theirs in zip(lines, app, strict=True):  # the same cells, the same numbers
        assert mine["embodied"] == theirs["embodied"]
        assert mine["video"] == theirs["video"]


@pytest.mark.slow
def test_copy_last_frame_is_scored(tmp_path):
    df = embodied.evaluate(
        CopyLastFrame(),
        **GRID,
        run_dir=str(tmp_path),
        overrides=["videos.cells=[]"],
        progress=False,
    )
    print(df[["split", "success_rate", "drop_rate", "psnr", "state_error"]].to_string())
    assert df[["success_rate", "drop_rate", "psnr", "state_error"]].notna().all().all()


def test_a_video_agent_without_a_predictor_says_how_to_give_one(tmp_path):
    from omegaconf import OmegaConf

    from embodied.agents.video import make_policy
    from embodied.apps.eval import load_agents

    cfg = load_agents(["video"], OmegaConf.create({"run_dir": str(tmp_path)}))["video"]
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state+pixels")
    with pytest.raises(ValueError, match="predictor._target_"):
        make_policy(cfg, None, env, 0)
    env.close()


def test_a_predictor_of_the_wrong_shape_is_named(tmp_path):
    class Bad:
        def predict(self, context_frames, actions):
            return np.zeros((1, 1, 8, 8, 3), np.float32)

    fit = EvalSettings(agents={}, run_dir=str(tmp_path), episodes=1, video_horizon=2, probe_clips=4)
    clips = probe_clips("CupCarry", fit)
    probe = FrameProbe.fit(
        clips["pixels"].reshape(-1, 64, 64, 3), clips["state"].reshape(-1, 44), 16, 1e-3
    )
    env = gymnasium.make("embodied/CupCarry-v0", obs_mode="state+pixels")
    obs, _ = env.reset(seed=0)
    model = VideoWorldModel(Bad(), probe, env, context=2)
    with pytest.raises(ValueError, match="Bad.predict returned float32"):
        model.imagine(obs, np.zeros((3, 4), np.float32), env)
    env.close()
