"""Rollout videos decode to the expected frames; video metrics line truth and prediction up.

The fake world models here are also the ones tests/eval/test_executors.py runs in worker
processes (``_target_: test_videos.make_policy``).
"""

import numpy as np
import pytest
from hydra.utils import instantiate

from embodied import videos
from embodied.clips import collect_stage
from embodied.envs.scripted import make_policy as make_scripted
from embodied.evaluate import EvalSettings, heldout_path, run_cell
from embodied.grid import Cell
from embodied.protocols import Imagination

CUP = ("cup_x", "cup_y", "cup_z")


class ReplayWorld:
    """A perfect model: steps the env it is given (reset to the clip's start) under the actions."""

    family, obs_mode = "oracle", "state+pixels"

    def imagine(self, obs0, actions, env):
        u = env.unwrapped
        idx = [u.state_labels.index(n) for n in CUP]
        frames, cups = [], []
        for action in actions:
            obs = u.step(action)[0]
            frames.append(obs["pixels"])
            cups.append(obs["state"][idx])
        return Imagination(np.asarray(frames), "render", np.asarray(cups))


class FrozenWorld:
    """Predicts that nothing moves: the first frame and cup position, H times."""

    family, obs_mode = "state", "state"

    def imagine(self, obs0, actions, env):
        u = env.unwrapped
        cup = obs0[[u.state_labels.index(n) for n in CUP]]
        frame = u.render_state(obs0)
        h = len(actions)
        return Imagination(np.repeat(frame[None], h, 0), "render", np.repeat(cup[None], h, 0))


def make_policy(agent_cfg, checkpoint_dir, env, seed):
    """The scripted controller, planning-free, with the config's fake world model attached."""
    policy = make_scripted(agent_cfg, checkpoint_dir, env, seed)
    policy.world_model = instantiate(agent_cfg.world_model)
    return policy


def fake_agent(name: str, world: str, obs_mode: str) -> dict:
    return {
        "name": name,
        "kind": "scripted",
        "family": name,
        "obs_mode": obs_mode,
        "world_model": {"_target_": f"test_videos.{world}"},  # declared: the clips stage reads it
        "trainer": None,
        "policy": {"_target_": "test_videos.make_policy", "_partial_": True},
    }


AGENTS = {
    "replay": fake_agent("replay", "ReplayWorld", "state+pixels"),
    "frozen": fake_agent("frozen", "FrozenWorld", "state"),
}


def settings(tmp_path, **kw) -> EvalSettings:
    base = dict(
        agents=AGENTS,
        run_dir=str(tmp_path),
        episodes=2,
        video_clips=2,
        video_horizon=6,
        env_kwargs={"max_episode_steps": 25},
        video_cells=("*/*/*/0",),
        videos_dir=str(tmp_path / "videos"),
    )
    return EvalSettings(**{**base, **kw})


def frames(t: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (t, size, size + 2, 3), dtype=np.uint8)


@pytest.mark.parametrize("mp4", [True, False])
def test_videos_decode_to_one_frame_per_step(tmp_path, monkeypatch, mp4):
    if not mp4:
        monkeypatch.setattr(videos, "ffmpeg_available", lambda: False)
    still = np.zeros((7, 16, 18, 3), np.uint8)  # identical frames: a GIF writer would merge them
    clip = videos.episode_video(still, np.zeros(7), np.arange(7) > 4)
    path = videos.write_video(tmp_path / "ep", clip)
    assert path.suffix == (".mp4" if mp4 else ".gif")
    decoded = videos.read_video(path)
    assert decoded.shape == (7, 16, 18, 3)
    assert not list(tmp_path.glob(".*"))  # the temp file was renamed


def test_triptych_is_truth_prediction_error():
    truth, pred = frames(3), frames(3)[::-1].copy()
    strip = videos.triptych(truth, pred, scale=2)
    assert strip.shape == (3, 32, 3 * 36, 3)
    w = 36
    np.testing.assert_array_equal(strip[1, :-2, :w:2][::2], truth[1, :-1])
    np.testing.assert_array_equal(strip[1, :-2, w : 2 * w : 2][::2], pred[1, :-1])
    err = np.abs(truth[1].astype(int) - pred[1].astype(int))
    np.testing.assert_array_equal(strip[1, :-2, 2 * w :: 2][::2], err[:-1])
    with pytest.raises(ValueError, match="differ in shape"):
        videos.triptych(truth, pred[:2])


def test_overlay_colours_the_border_by_status():
    clip = videos.status_overlay(frames(3), [False, True, False], [False, False, True])
    assert tuple(clip[0, 0, 0]) == videos.RUNNING
    assert tuple(clip[1, 0, 0]) == videos.SUCCESS
    assert tuple(clip[2, 0, 0]) == videos.DROPPED
    with pytest.raises(ValueError, match="one success/dropped"):
        videos.status_overlay(frames(3), [True], [False])


def test_a_perfect_model_scores_zero_error_and_a_frozen_one_does_not(tmp_path):
    s = settings(tmp_path)
    cells = [Cell("replay", "CupCarry", "id", 0), Cell("frozen", "CupCarry", "id", 0)]
    collect_stage(cells, s, progress=False)
    assert heldout_path(s, "CupCarry", "id", 0).exists()  # one clip file serves both agents
    perfect = run_cell(cells[0], s)["video"]
    assert perfect["horizon"] == 6 and perfect["clips"] == 2
    assert perfect["mse"] == [0.0] * 6 and perfect["ssim_mean"] == pytest.approx(1.0)
    assert perfect["psnr_mean"] == 100.0 and perfect["cup_pos_error_mean"] == 0.0

    frozen = run_cell(cells[1], s)
    video = frozen["video"]
    assert len(video["psnr"]) == len(video["cup_pos_error"]) == 6
    assert video["cup_pos_error"][-1] > video["cup_pos_error"][0] > 0.0
    assert video["mse_mean"] > 0.0 and video["ssim_mean"] < 1.0

    # the rollout videos of a chosen cell: the episode and truth | prediction | error
    root = tmp_path / "videos"
    episode = videos.read_video(root / frozen["videos"]["episode"])
    assert len(episode) == frozen["embodied"]["per_episode"][0]["steps"] + 1
    strip = videos.read_video(root / frozen["videos"]["imagination"])
    assert strip.shape == (6, 64 * 2, 3 * 64 * 2, 3)


def test_cells_not_chosen_write_no_videos(tmp_path):
    cell, s = Cell("frozen", "CupCarry", "id", 1), settings(tmp_path)
    collect_stage([cell], s, progress=False)
    line = run_cell(cell, s)
    assert line["videos"] is None and not (tmp_path / "videos").exists()
