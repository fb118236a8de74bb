"""Rollout videos: truth | prediction | error triptychs and closed-loop episodes with an overlay.

mp4 through imageio-ffmpeg (H.264, yuv420p: plays in browsers), GIF when ffmpeg is not
available. Every frame carries a time bar along its bottom edge; besides showing where in the
rollout a frame is, it keeps consecutive frames distinct, so a GIF writer cannot merge them
and the file always decodes to one frame per step. Overlays are drawn with numpy only.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np

from embodied.atomic import write_atomic

# Border colours of the closed-loop overlay (RGB).
SUCCESS = (40, 200, 70)
DROPPED = (230, 40, 40)
PHYSICS_ERROR = (240, 160, 20)
RUNNING = (90, 90, 90)
TIME_BAR = (255, 255, 255)
BORDER = 4


def _frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("a video needs at least one frame")
    return frames


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: 64 px renders are too small to look at."""
    if factor < 1:
        raise ValueError(f"scale must be >= 1, got {factor}")
    frames = _frames(frames)
    return frames.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else frames


def abs_error(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-pixel |truth - prediction| as uint8."""
    return np.abs(truth.astype(np.int16) - pred.astype(np.int16)).astype(np.uint8)


def time_bar(frames: np.ndarray, height: int = 2) -> np.ndarray:
    """A bar along the bottom edge whose length grows with the frame index."""
    frames = _frames(frames).copy()
    t, _, w, _ = frames.shape
    for i in range(t):
        frames[i, -height:, : max(1, round(w * (i + 1) / t))] = TIME_BAR
    return frames


def triptych(truth: np.ndarray, pred: np.ndarray, scale: int = 1) -> np.ndarray:
    """Frames laid out truth | prediction | abs error, each (T, H, W, 3) -> (T, H, 3W, 3)."""
    truth, pred = _frames(truth), _frames(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in shape: {truth.shape} vs {pred.shape}")
    strip = np.concatenate([truth, pred, abs_error(truth, pred)], axis=2)
    return time_bar(upscale(strip, scale))


def status_overlay(
    frames: np.ndarray,
    success: np.ndarray,
    dropped: np.ndarray,
    physics_error: np.ndarray | None = None,
) -> np.ndarray:
    """A border in each frame's colour: green success, red drop, orange physics error, else grey."""
    frames = _frames(frames).copy()
    n = len(frames)
    flags = [np.asarray(f, dtype=bool) for f in (success, dropped)]
    flags.append(np.zeros(n, bool) if physics_error is None else np.asarray(physics_error, bool))
    if any(f.shape != (n,) for f in flags):
        raise ValueError(f"need one success/dropped/physics_error flag per frame ({n})")
    ok, drop, err = flags
    b = BORDER
    for i in range(n):
        colour = PHYSICS_ERROR if err[i] else DROPPED if drop[i] else SUCCESS if ok[i] else RUNNING
        frames[i, :b], frames[i, -b:], frames[i, :, :b], frames[i, :, -b:] = (colour,) * 4
    return time_bar(frames)


def episode_video(
    frames: np.ndarray,
    success: np.ndarray,
    dropped: np.ndarray,
    physics_error: np.ndarray | None = None,
    scale: int = 1,
) -> np.ndarray:
    """A closed-loop episode (reset frame + one per step) with its status overlay."""
    return status_overlay(upscale(frames, scale), success, dropped, physics_error)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad to even height and width (H.264 in yuv420p needs both)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return os.path.exists(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return False


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 20) -> Path:
    """Write frames as mp4 (or GIF without ffmpeg) atomically; returns the path written.

    ``path``'s suffix is replaced by ``.mp4`` or ``.gif``.
    """
    frames = _frames(frames)
    suffix = ".mp4" if ffmpeg_available() else ".gif"
    out = Path(path).with_suffix(suffix)

    def encode(tmp: Path) -> None:
        if suffix == ".mp4":
            with iio2.get_writer(
                tmp, format="FFMPEG", fps=fps, macro_block_size=1, ffmpeg_log_level="error"
            ) as writer:
                for frame in _even(frames):
                    writer.append_data(frame)
        else:
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)

    return write_atomic(out, encode, suffix=f".tmp{suffix}")


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a video written by :func:`write_video` to uint8 (T, H, W, 3)."""
    path = Path(path)
    if path.suffix == ".mp4":
        with iio2.get_reader(path, format="FFMPEG") as reader:
            return np.stack(list(reader.iter_data()))
    return iio.imread(path, index=None)[..., :3]
