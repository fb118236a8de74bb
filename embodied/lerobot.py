"""LeRobot datasets (format v3.0) both ways: our episodes out, and back in for training.

A LeRobot dataset is a directory of plain files (LeRobot's own loader reads it as it is)::

    meta/info.json                       codebase_version "v3.0", fps, features, totals, paths
    meta/stats.json                      min/max/mean/std/count of every feature
    meta/tasks.parquet                   the task strings (index) and their task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode (see below)
    data/chunk-000/file-000.parquet      one row per frame, every episode
    videos/observation.image/chunk-000/file-000.mp4   every episode's frames, concatenated

An episode of T transitions is T+1 frames: frame t holds observation t (``observation.state``,
``observation.image``), the action taken there and what it led to (``next.reward``,
``next.done`` = our ``terminated``, ``next.success``, ``next.dropped``). The last frame holds
the final observation; its action is the hold action (no motion, the last grip) and its
``next.*`` are zero: a reader turns N frames into N-1 transitions, so a LeRobot dataset
recorded elsewhere (every frame a real action) loses only its last action.

The episode rows carry our labels beside LeRobot's columns: ``embodied/seed``,
``embodied/split``, ``embodied/shift`` and ``embodied/severity`` (the split's shift, or ""
and 0), ``embodied/meta`` (the collection style, as JSON) and ``physics/<param>`` for every
physics parameter in force. ``info.json`` carries the manifest's task fields under
``embodied``.

Frames are H.264 in RGB at quantiser 0 (``libx264rgb -qp 0``): lossless, so the frames read
back are bit for bit the frames collected, and what training sees is what was recorded.
``crf=<n>`` writes ordinary lossy yuv420p H.264 instead (smaller; frames then differ).

Needs pyarrow and pandas (``pip install 'embodied-ood[lerobot]'``); video goes through
imageio-ffmpeg's ffmpeg, which ships with the package.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np

from embodied.dataset import FORMAT, Dataset, DatasetError, Episode
from embodied.shifts.splits import parse_split

CODEBASE_VERSION = "v3.0"
STATE, IMAGE, ACTION = "observation.state", "observation.image", "action"
# our step arrays -> LeRobot's per-frame columns (the outcome of the frame's action)
STEPS = {
    "reward": ("next.reward", "float32"),
    "terminated": ("next.done", "bool"),
    "success": ("next.success", "bool"),
    "dropped": ("next.dropped", "bool"),
}
ACTION_NAMES = ["dx", "dy", "dz", "grip"]
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
VIDEO_FILE = f"videos/{IMAGE}/chunk-000/file-000.mp4"
INFO = "meta/info.json"


def _libs() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.parquet and pandas, or an error saying which extra installs them."""
    try:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"LeRobot datasets need pyarrow and pandas ({err.name} is missing): "
            "pip install 'embodied-ood[lerobot]'"
        ) from err
    return pa, pq, pd


def control_rate(env_id: str) -> int:
    """Frames per second of a task's episodes: its control rate (gymnasium's render_fps)."""
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    entry = gymnasium.spec(env_id).entry_point  # the task's class (or an import string)
    task = load_env_creator(entry) if isinstance(entry, str) else entry
    return int(task.metadata["render_fps"])


# ----------------------------------------------------------------------------- writing
def export(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    repo_id: str | None = None,
    crf: int | None = None,
) -> dict[str, Any]:
    """Write our dataset at ``src`` as a LeRobot dataset at ``out``; returns its info.json.

    ``out`` is written in a temporary sibling directory and moved into place at the end, so a
    failed export leaves no half dataset; an ``out`` that is not a LeRobot dataset is refused.
    """
    pa, pq, pd = _libs()
    data = Dataset.load(src)
    manifest = data.manifest
    root = Path(out)
    if root.exists() and any(root.iterdir()) and not (root / INFO).is_file():
        raise DatasetError(f"{root} exists and is not a LeRobot dataset; choose another out")
    fps = control_rate(manifest["env_id"])
    task = manifest.get("task") or manifest["env_id"]
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        frames = _frames_table(data, fps, pa)
        _write_parquet(pq, frames, tmp / DATA_FILE)
        features = _features(data, fps)
        if "pixels" in data.obs_modes:
            pixels = np.concatenate([e.pixels for e in data.episodes])
            _encode(pixels, tmp / VIDEO_FILE, fps, crf)
            features[IMAGE]["info"]["video.pix_fmt"] = "gbrp" if crf is None else "yuv420p"
        _write_parquet(pq, _episodes_table(data, fps, task, pa), tmp / EPISODES_FILE)
        (tmp / "meta/tasks.parquet").parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"task_index": [0]}, index=[task]).to_parquet(tmp / "meta/tasks.parquet")
        info = _info(data, features, fps, repo_id or f"embodied-ood/{task}")
        (tmp / INFO).write_text(json.dumps(info, indent=2))
        (tmp / "meta/stats.json").write_text(json.dumps(_stats(data), indent=2))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _frames_table(data: Dataset, fps: int, pa: Any) -> Any:
    """One row per frame: T+1 per episode, the last with the hold action and zero outcomes."""
    eps = data.episodes
    sizes = data.lengths + 1
    columns: dict[str, Any] = {}
    if "state" in data.obs_modes:
        state = np.concatenate([e.state for e in eps]).astype(np.float32)
        columns[STATE] = _fixed(pa, state)
    action = np.concatenate([np.concatenate([e.action, _hold(e)]) for e in eps])
    columns[ACTION] = _fixed(pa, action.astype(np.float32))
    for key, (name, dtype) in STEPS.items():
        padded = [
            np.concatenate([getattr(e, key), np.zeros(1, getattr(e, key).dtype)]) for e in eps
        ]
        columns[name] = pa.array(np.concatenate(padded).astype(dtype))
    frame_index = np.concatenate([np.arange(n) for n in sizes])
    columns["timestamp"] = pa.array((frame_index / fps).astype(np.float32))
    columns["frame_index"] = pa.array(frame_index.astype(np.int64))
    columns["episode_index"] = pa.array(np.repeat(np.arange(len(eps)), sizes).astype(np.int64))
    columns["index"] = pa.array(np.arange(int(sizes.sum()), dtype=np.int64))
    columns["task_index"] = pa.array(np.zeros(int(sizes.sum()), np.int64))
    return pa.table(columns)


def _hold(e: Episode) -> np.ndarray:
    """The final frame's action: no motion, the grip of the last command."""
    return np.array([[0.0, 0.0, 0.0, e.action[-1, 3]]], np.float32)


def _fixed(pa: Any, rows: np.ndarray) -> Any:
    """A (N, D) array as a fixed-size list column (HF datasets' Sequence(length=D))."""
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


def _episodes_table(data: Dataset, fps: int, task: str, pa: Any) -> Any:
    """One row per episode: LeRobot's index columns, then our labels and physics."""
    sizes = data.lengths + 1
    ends = np.cumsum(sizes)
    starts = ends - sizes
    split = str(data.manifest.get("split", ""))
    parsed = _parse(split)
    rows: dict[str, list[Any]] = {
        "episode_index": list(range(len(data))),
        "tasks": [[task]] * len(data),
        "length": sizes.tolist(),
        "data/chunk_index": [0] * len(data),
        "data/file_index": [0] * len(data),
        "dataset_from_index": starts.tolist(),
        "dataset_to_index": ends.tolist(),
    }
    if "pixels" in data.obs_modes:
        video = f"videos/{IMAGE}"
        rows[f"{video}/chunk_index"] = [0] * len(data)
        rows[f"{video}/file_index"] = [0] * len(data)
        rows[f"{video}/from_timestamp"] = (starts / fps).tolist()
        rows[f"{video}/to_timestamp"] = (ends / fps).tolist()
    rows["meta/episodes/chunk_index"] = [0] * len(data)
    rows["meta/episodes/file_index"] = [0] * len(data)
    rows["embodied/seed"] = [e.seed for e in data.episodes]
    rows["embodied/split"] = [split] * len(data)
    rows["embodied/shift"] = [parsed[0]] * len(data)
    rows["embodied/severity"] = [parsed[1]] * len(data)
    rows["embodied/meta"] = [json.dumps(e.meta, sort_keys=True) for e in data.episodes]
    params = sorted({k for e in data.episodes for k in e.physics})
    for p in params:
        rows[f"physics/{p}"] = [float(e.physics.get(p, np.nan)) for e in data.episodes]
    return pa.table(rows)  # python ints: int64 columns


def _parse(split: str) -> tuple[str, int]:
    """(shift, severity) of a split name: ("", 0) for train/id or a name we do not know."""
    try:
        sp = parse_split(split)
    except ValueError:
        return "", 0
    return sp.shift or "", int(sp.severity or 0)


def _features(data: Dataset, fps: int) -> dict[str, dict[str, Any]]:
    scalar = {"shape": [1], "names": None}
    out: dict[str, dict[str, Any]] = {}
    if "state" in data.obs_modes:
        d = data.flat["state"].shape[1]
        out[STATE] = {"dtype": "float32", "shape": [d], "names": data.state_labels or None}
    if "pixels" in data.obs_modes:
        h, w = data.flat["pixels"].shape[1:3]
        out[IMAGE] = {
            "dtype": "video",
            "shape": [int(h), int(w), 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": int(h),
                "video.width": int(w),
                "video.codec": "h264",
                "video.pix_fmt": "gbrp",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    out[ACTION] = {"dtype": "float32", "shape": [4], "names": ACTION_NAMES}
    for name, dtype in STEPS.values():
        out[name] = {"dtype": dtype, **scalar}
    for name in ("timestamp",):
        out[name] = {"dtype": "float32", **scalar}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        out[name] = {"dtype": "int64", **scalar}
    return out


def _info(data: Dataset, features: dict[str, Any], fps: int, repo_id: str) -> dict[str, Any]:
    m = data.manifest
    frames = int((data.lengths + 1).sum())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "embodied-ood-arm",
        "total_episodes": len(data),
        "total_frames": frames,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(data)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
        "repo_id": repo_id,
        "embodied": {
            k: m[k] for k in ("env_id", "task", "split", "image_size", "state_labels") if k in m
        },
    }


def _stats(data: Dataset) -> dict[str, dict[str, list[float]]]:
    """Global stats of every numeric feature; frames per channel in [0, 1], shape (3, 1, 1)."""

    def of(x: np.ndarray, axes: tuple[int, ...]) -> dict[str, Any]:
        x = x.astype(np.float64)
        return {
            "min": np.min(x, axes).tolist(),
            "max": np.max(x, axes).tolist(),
            "mean": np.mean(x, axes).tolist(),
            "std": np.std(x, axes).tolist(),
            "count": [int(np.prod([x.shape[a] for a in axes]))],
        }

    out = {}
    if "state" in data.obs_modes:
        out[STATE] = of(data.flat["state"], (0,))
    out[ACTION] = of(data.flat["action"], (0,))
    out["next.reward"] = of(data.flat["reward"][:, None], (0,))
    if "pixels" in data.obs_modes:
        px = data.flat["pixels"][::7] / 255.0  # every 7th frame: the scale, not each pixel
        stats = of(px, (0, 1, 2))
        out[IMAGE] = {k: np.reshape(v, (-1, 1, 1)).tolist() for k, v in stats.items()}
        out[IMAGE]["count"] = [int(len(data.flat["pixels"]))]
    return out


def _write_parquet(pq: Any, table: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _encode(frames: np.ndarray, path: Path, fps: int, crf: int | None) -> None:
    """Frames (N, H, W, 3) uint8 -> an mp4: lossless RGB H.264, or yuv420p at ``crf``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    if crf is None:
        codec, pix_fmt, params = "libx264rgb", "rgb24", ["-qp", "0"]
    else:
        codec, pix_fmt, params = "libx264", "yuv420p", ["-crf", str(int(crf))]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (int(w), int(h)),
        fps=fps,
        codec=codec,
        pix_fmt_in="rgb24",
        pix_fmt_out=pix_fmt,
        output_params=[*params, "-preset", "veryfast", "-g", "1" if crf is None else "20"],
        macro_block_size=1,
        quality=None,
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


# ----------------------------------------------------------------------------- reading
def decode(path: str | os.PathLike) -> np.ndarray:
    """Every frame of an mp4 as (N, H, W, 3) uint8 RGB."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)


def read_manifest(root: str | os.PathLike, env_id: str | None = None) -> dict[str, Any]:
    """Our manifest's fields for a LeRobot dataset (what training checks before any work)."""
    root = Path(root)
    try:
        info = json.loads((root / INFO).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{root / INFO} cannot be read: {err}") from err
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetError(
            f"{root} is LeRobot format {info.get('codebase_version')!r}; this reader takes "
            f"{CODEBASE_VERSION!r} (convert it with LeRobot's own converter)"
        )
    feats = info.get("features", {})
    missing = [k for k in (ACTION, "next.reward") if k not in feats]
    if missing or not ({STATE, IMAGE} & set(feats)):
        raise DatasetError(
            f"{root} lacks the features {missing or [STATE + ' or ' + IMAGE]}; our training "
            f"needs {ACTION}, next.reward and {STATE} and/or {IMAGE}"
        )
    ours = info.get("embodied", {})
    if "env_id" not in ours:
        raise DatasetError(
            f'{root / INFO} names no task: add "embodied": {{"env_id": '
            '"embodied/<Task>-v<version>", "task": "<Task>"}} for data recorded elsewhere'
        )
    if env_id is not None and ours["env_id"] != env_id:
        raise DatasetError(
            f"dataset {root} holds {ours['env_id']!r} episodes; {env_id!r} needs a dataset "
            "of its own task"
        )
    modes = [m for m, k in (("state", STATE), ("pixels", IMAGE)) if k in feats]
    image = feats.get(IMAGE, {}).get("shape", [ours.get("image_size", 64)])[0]
    return {
        "format": FORMAT,
        "source": "lerobot/" + CODEBASE_VERSION,
        "task": ours.get("task"),
        "split": ours.get("split", "train"),
        "image_size": int(ours.get("image_size", image)),
        "state_labels": ours.get("state_labels") or feats.get(STATE, {}).get("names") or [],
        "fps": int(info["fps"]),
        **{k: v for k, v in ours.items() if k not in ("split", "image_size", "state_labels")},
        "obs_modes": modes,
        "episodes": int(info["total_episodes"]),
        "transitions": int(info["total_frames"]) - int(info["total_episodes"]),
    }


def load(
    root: str | os.PathLike,
    obs_modes: Sequence[str] | None = None,
    env_id: str | None = None,
) -> Dataset:
    """A LeRobot dataset as our Dataset: N frames of an episode -> N-1 transitions."""
    root = Path(root)
    pa, pq, _ = _libs()
    manifest = read_manifest(root, env_id)
    modes = list(manifest["obs_modes"] if obs_modes is None else obs_modes)
    absent = [m for m in modes if m not in manifest["obs_modes"]]
    if absent:
        raise DatasetError(f"dataset {root} has no {absent}; it holds {manifest['obs_modes']}")
    episodes = _read_dir(pa, pq, root / "meta/episodes").to_pydict()
    frames = _read_dir(pa, pq, root / "data")
    order = np.argsort(np.asarray(frames.column("index")))
    wanted = (STATE, ACTION, *(n for n, _ in STEPS.values()))
    columns = {n: _column(frames, n)[order] for n in frames.column_names if n in wanted}
    video = _video_frames(root, episodes, manifest["fps"]) if "pixels" in modes else None
    seeds = episodes.get("embodied/seed", episodes["episode_index"])
    metas = episodes.get("embodied/meta", ["{}"] * len(seeds))
    out = []
    for i, (start, end) in enumerate(
        zip(episodes["dataset_from_index"], episodes["dataset_to_index"], strict=True)
    ):
        steps = {
            key: columns[name][start : end - 1, 0] if name in columns else np.zeros(end - start - 1)
            for key, (name, _) in STEPS.items()
        }
        physics = {
            k.split("/", 1)[1]: v[i]
            for k, v in episodes.items()
            if k.startswith("physics/") and v[i] == v[i]  # NaN: absent in this episode
        }
        out.append(
            Episode(
                state=columns[STATE][start:end] if "state" in modes else None,
                pixels=video[i] if video is not None else None,
                action=columns[ACTION][start : end - 1],
                physics=physics,
                seed=int(seeds[i]),
                meta=json.loads(metas[i] or "{}"),
                **steps,
            )
        )
    return Dataset(out, dict(manifest, obs_modes=modes, seeds=[e.seed for e in out]))


def _column(table: Any, name: str) -> np.ndarray:
    """A parquet column as (N, d) numpy: list columns (vectors) flattened row by row."""
    col = table.column(name).combine_chunks()
    if hasattr(col, "flatten"):  # a (fixed-size) list per row
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False).reshape(len(col), 1)


def _read_dir(pa: Any, pq: Any, folder: Path) -> Any:
    """Every chunk-*/file-*.parquet under ``folder`` as one table, in file order."""
    paths = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not paths:
        raise DatasetError(f"{folder} holds no chunk-*/file-*.parquet")
    return pa.concat_tables([pq.read_table(p) for p in paths])


def _video_frames(root: Path, episodes: dict[str, list[Any]], fps: int) -> list[np.ndarray]:
    """Each episode's frames, cut from its video file by its from/to timestamps."""
    key = f"videos/{IMAGE}"
    files: dict[tuple[int, int], np.ndarray] = {}
    out = []
    for i, length in enumerate(episodes["length"]):
        where = (int(episodes[f"{key}/chunk_index"][i]), int(episodes[f"{key}/file_index"][i]))
        if where not in files:
            path = root / "videos" / IMAGE / f"chunk-{where[0]:03d}" / f"file-{where[1]:03d}.mp4"
            if not path.is_file():
                raise DatasetError(f"dataset {root}: video {path} is missing")
            files[where] = decode(path)
        first = int(round(episodes[f"{key}/from_timestamp"][i] * fps))
        clip = files[where][first : first + int(length)]
        if len(clip) != length:
            raise DatasetError(
                f"dataset {root}: episode {i} needs frames {first}-{first + length} of a video "
                f"of {len(files[where])} (truncated?)"
            )
        out.append(clip)
    return out
