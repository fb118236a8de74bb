"""Episodes on disk: one documented format shared by collection, training and every world model.

A dataset is a directory::

    <dir>/manifest.json          written last; its presence marks a complete dataset
    <dir>/shard-00000.npz        up to ``episodes_per_shard`` episodes each, arrays concatenated
    <dir>/shard-00001.npz ...

``manifest.json`` holds ``format`` (``"embodied-dataset/1"``), ``env_id``, ``task``, ``split``,
``obs_modes`` (subset of ``("state", "pixels")``), ``image_size``, ``state_labels``, the counts
``episodes`` and ``transitions``, ``seeds`` (one per episode), ``shards`` (file name, episode count,
byte size) and ``episode_info`` (per episode: seed, length, shard, physics values, outcome, and
free-form ``meta`` such as the collection style).

A shard holds, for its episodes in order, ``lengths`` (n,) int64 (transitions per episode, T),
``action`` (sum T, A) float32, ``reward``/``dropped``/``success``/``terminated`` (sum T,), and per
observed mode ``state`` (sum (T+1), D) float32 and ``pixels`` (sum (T+1), S, S, 3) uint8: every
episode stores T+1 observations (the reset observation and one after each step).

Every file is first written in full under a temporary name; only then are they moved into place
with ``os.replace``, the manifest last and an existing one removed first. A reader never sees a
half-written dataset, and a write that fails (disk full, Ctrl-C) leaves an older one intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embodied.atomic import remove_temps, write_temp

FORMAT = "embodied-dataset/1"
MANIFEST = "manifest.json"
OBS_MODES = ("state", "pixels")
STEP_KEYS = ("action", "reward", "dropped", "success", "terminated")


class DatasetError(ValueError):
    """A dataset directory that is missing, incomplete, corrupted or of another format."""


@dataclass
class Episode:
    """One episode: T transitions, T+1 observations (the first is the reset observation)."""

    state: np.ndarray | None  # (T+1, D) float32, None if not collected
    pixels: np.ndarray | None  # (T+1, S, S, 3) uint8, None if not collected
    action: np.ndarray  # (T, A) float32
    reward: np.ndarray  # (T,) float32
    dropped: np.ndarray  # (T,) bool: failure flag after each step
    success: np.ndarray  # (T,) bool
    terminated: np.ndarray  # (T,) bool
    physics: dict[str, float]
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"style": "cautious", "noise": 0.1}

    def __post_init__(self) -> None:
        self.action = np.asarray(self.action, np.float32)
        if self.action.ndim != 2:
            raise DatasetError(f"episode action must be (T, A); got shape {self.action.shape}")
        t = len(self.action)
        self.reward = np.asarray(self.reward, np.float32).reshape(-1)
        for key in ("dropped", "success", "terminated"):
            setattr(self, key, np.asarray(getattr(self, key), bool).reshape(-1))
        for key in ("reward", "dropped", "success", "terminated"):
            if len(getattr(self, key)) != t:
                raise DatasetError(f"episode {key} has {len(getattr(self, key))} steps, action {t}")
        if self.state is None and self.pixels is None:
            raise DatasetError("an episode needs at least one observation mode (state or pixels)")
        if self.state is not None:
            self.state = np.asarray(self.state, np.float32)
            if self.state.ndim != 2 or len(self.state) != t + 1:
                raise DatasetError(
                    f"episode state must be (T+1={t + 1}, D); got {self.state.shape}"
                )
        if self.pixels is not None:
            self.pixels = np.asarray(self.pixels, np.uint8)
            if self.pixels.ndim != 4 or len(self.pixels) != t + 1 or self.pixels.shape[-1] != 3:
                raise DatasetError(
                    f"episode pixels must be (T+1={t + 1}, S, S, 3); got {self.pixels.shape}"
                )
        self.physics = {str(k): _plain(v) for k, v in dict(self.physics).items()}
        self.seed = int(self.seed)

    @property
    def length(self) -> int:
        """Number of transitions T."""
        return len(self.action)

    def obs(self, mode: str) -> np.ndarray:
        """The (T+1, ...) observations of one mode, failing with the modes this episode has."""
        value = getattr(self, mode, None) if mode in OBS_MODES else None
        if value is None:
            have = [m for m in OBS_MODES if getattr(self, m) is not None]
            raise DatasetError(f"episode has no {mode!r} observations; it has {have}")
        return value


class Dataset:
    """Episodes plus their manifest, with flat arrays for fast sampling of transitions/sequences.

    Episodes are views into flat per-key arrays (no copies): ``flat[key]`` concatenates all
    episodes, observations per episode are T+1 rows, step arrays T rows.
    """

    def __init__(self, episodes: Sequence[Episode], manifest: dict[str, Any]):
        if not episodes:
            raise DatasetError("a dataset needs at least one episode")
        self.manifest = manifest
        modes = [m for m in OBS_MODES if all(getattr(e, m) is not None for e in episodes)]
        if not modes:
            raise DatasetError("episodes share no observation mode (state or pixels)")
        self.obs_modes = tuple(modes)
        self.lengths = np.array([e.length for e in episodes], np.int64)
        self.act_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.obs_start = self.act_start + np.arange(len(episodes))
        self.flat: dict[str, np.ndarray] = {}
        for key in (*STEP_KEYS, *self.obs_modes):
            self.flat[key] = np.concatenate([getattr(e, key) for e in episodes])
        self.episodes: list[Episode] = []
        for i, e in enumerate(episodes):
            views = {}
            a, t = self.act_start[i], self.lengths[i]
            o = self.obs_start[i]
            for key in STEP_KEYS:
                views[key] = self.flat[key][a : a + t]
            for key in OBS_MODES:
                views[key] = self.flat[key][o : o + t + 1] if key in self.obs_modes else None
            self.episodes.append(
                Episode(physics=e.physics, seed=e.seed, meta=dict(e.meta), **views)
            )
        # Transition i (flat step row) -> its episode and its observation row.
        self._step_episode = np.repeat(np.arange(len(episodes)), self.lengths)
        self._obs_row = np.arange(int(self.lengths.sum())) + self._step_episode

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        obs_modes: Sequence[str] | None = None,
        env_id: str | None = None,
    ) -> Dataset:
        """Read a dataset directory; ``obs_modes`` limits what is read (e.g. skip pixels), and
        with ``env_id`` a dataset of another task is refused. A LeRobot dataset directory is
        read by embodied.lerobot."""
        root = Path(path)
        if _is_lerobot(root):
            from embodied import lerobot

            return lerobot.load(root, obs_modes, env_id)
        manifest = read_manifest(root, env_id)
        have = list(manifest["obs_modes"])
        modes = have if obs_modes is None else list(obs_modes)
        missing = [m for m in modes if m not in have]
        if missing:
            raise DatasetError(f"dataset {root} has no {missing} observations; it holds {have}")
        episodes: list[Episode] = []
        info = manifest["episode_info"]
        for shard in manifest["shards"]:
            arrays = _read_shard(root, shard, modes)
            try:
                episodes += _shard_episodes(arrays, info[len(episodes) :], modes)
            except (ValueError, TypeError, IndexError) as err:
                if isinstance(err, DatasetError):
                    raise
                raise DatasetError(
                    f"dataset {root}: shard {shard['file']} does not match {MANIFEST} "
                    f"(corrupted?): {err}"
                ) from err
        if len(episodes) != manifest["episodes"]:
            raise DatasetError(
                f"dataset {root}: shards hold {len(episodes)} episodes, "
                f"manifest says {manifest['episodes']}"
            )
        manifest = dict(manifest, obs_modes=modes)
        return cls(episodes, manifest)

    # -- info ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_transitions(self) -> int:
        return int(self.lengths.sum())

    @property
    def state_labels(self) -> list[str]:
        return list(self.manifest.get("state_labels", []))

    def state_index(self, *names: str) -> list[int]:
        """Indices of named state entries, failing with the valid labels."""
        labels = self.state_labels
        bad = [n for n in names if n not in labels]
        if bad:
            raise DatasetError(f"unknown state labels {bad}; valid labels: {labels}")
        return [labels.index(n) for n in names]

    def subset(self, indices: Sequence[int]) -> Dataset:
        """A dataset of some episodes (e.g. a validation split), sharing the manifest's metadata."""
        eps = [self.episodes[int(i)] for i in indices]
        return Dataset(eps, dict(self.manifest, **_counts(eps)))

    # -- sampling -----------------------------------------------------------------------------
    def transitions(self, mode: str = "state") -> dict[str, np.ndarray]:
        """All transitions, flat: obs, next_obs (N, ...) of ``mode`` and the step arrays (N, ...).

        For pixels this copies every frame twice; prefer ``sample_transitions`` there.
        """
        self._check_mode(mode)
        obs = self.flat[mode]
        out = {"obs": obs[self._obs_row], "next_obs": obs[self._obs_row + 1]}
        out.update({k: self.flat[k] for k in STEP_KEYS})
        return out

    def sample_transitions(
        self, batch_size: int, rng: np.random.Generator, modes: Sequence[str] = ("state",)
    ) -> dict[str, np.ndarray]:
        """A random batch of transitions: ``<mode>``, ``next_<mode>`` and the step arrays."""
        rows = rng.integers(0, self.num_transitions, size=batch_size)
        obs_rows = self._obs_row[rows]
        out: dict[str, np.ndarray] = {}
        for mode in modes:
            self._check_mode(mode)
            out[mode] = self.flat[mode][obs_rows]
            out[f"next_{mode}"] = self.flat[mode][obs_rows + 1]
        out.update({k: self.flat[k][rows] for k in STEP_KEYS})
        return out

    def sequence_starts(self, length: int) -> np.ndarray:
        """Flat step rows where a window of ``length`` steps fits inside its episode."""
        if length < 1:
            raise DatasetError(f"sequence length must be >= 1; got {length}")
        ends = self.act_start + self.lengths  # exclusive
        starts = [np.arange(s, e - length + 1) for s, e in zip(self.act_start, ends, strict=True)]
        rows = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if len(rows) == 0:
            raise DatasetError(
                f"no episode has {length} steps (longest has {int(self.lengths.max())}); "
                "use a shorter sequence length"
            )
        return rows.astype(np.int64)

    def sample_sequences(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator,
        modes: Sequence[str] = ("state",),
    ) -> dict[str, np.ndarray]:
        """Windows of ``length`` steps inside episodes: ``<mode>`` (B, L+1, ...), steps (B, L, ...).

        ``<mode>[:, 0]`` is the observation before the first action; ``<mode>[:, k+1]`` follows
        action k. Windows may end in a drop (``terminated`` true at the last step), never cross it.
        """
        starts = self.sequence_starts(length)
        rows = starts[rng.integers(0, len(starts), size=batch_size)]
        steps = rows[:, None] + np.arange(length)[None, :]
        obs = self._obs_row[rows][:, None] + np.arange(length + 1)[None, :]
        out: dict[str, np.ndarray] = {}
        for mode in modes:
            self._check_mode(mode)
            out[mode] = self.flat[mode][obs]
        out.update({k: self.flat[k][steps] for k in STEP_KEYS})
        return out

    def _check_mode(self, mode: str) -> None:
        if mode not in self.obs_modes:
            raise DatasetError(f"dataset has no {mode!r} observations; it has {self.obs_modes}")


# -- writing ----------------------------------------------------------------------------------
def write_dataset(
    path: str | os.PathLike,
    episodes: Sequence[Episode],
    *,
    env_id: str,
    task: str,
    split: str,
    obs_modes: Sequence[str],
    image_size: int,
    state_labels: Sequence[str],
    extra: dict[str, Any] | None = None,
    episodes_per_shard: int = 64,
) -> dict[str, Any]:
    """Write episodes as a dataset directory (atomically, manifest last); returns the manifest."""
    if not episodes:
        raise DatasetError("refusing to write a dataset with no episodes")
    modes = list(obs_modes)
    bad = [m for m in modes if m not in OBS_MODES]
    if bad or not modes:
        raise DatasetError(f"obs_modes {modes} invalid; choose from {list(OBS_MODES)}")
    for i, e in enumerate(episodes):
        for m in modes:
            if getattr(e, m) is None:
                raise DatasetError(f"episode {i} has no {m!r} observations but obs_modes has it")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    remove_temps(root)  # left by a write that was killed
    shards, info, temps = [], [], {}
    try:
        for k, first in enumerate(range(0, len(episodes), episodes_per_shard)):
            group = episodes[first : first + episodes_per_shard]
            shard, tmp = _write_shard(root, k, group, modes)
            temps[shard["file"]] = tmp
            shards.append(shard)
            info += [_episode_info(e, shard["file"]) for e in group]
        manifest = {
            "format": FORMAT,
            "env_id": env_id,
            "task": task,
            "split": split,
            "obs_modes": modes,
            "image_size": int(image_size),
            "state_labels": list(state_labels),
            **_counts(episodes),
            "shards": shards,
            "episode_info": info,
            **(extra or {}),
        }
        text = json.dumps(manifest, indent=1, default=_plain)
        temps[MANIFEST] = write_temp(root / MANIFEST, lambda p: p.write_text(text))
    except BaseException:
        for tmp in temps.values():  # nothing was replaced yet: an older dataset stays intact
            tmp.unlink(missing_ok=True)
        raise
    # Everything is on disk; commit with renames only. The old manifest goes first, so a
    # crash between the renames leaves no manifest over a mix of old and new shards.
    (root / MANIFEST).unlink(missing_ok=True)
    for name, tmp in temps.items():
        os.replace(tmp, root / name)
    for stale in root.glob("shard-*.npz"):
        if stale.name not in temps:
            stale.unlink()
    return manifest


def append_dataset(path: str | os.PathLike, episodes: Sequence[Episode]) -> dict[str, Any]:
    """Add episodes to a dataset as new shards; returns the new manifest.

    Their ``meta`` is their provenance in ``episode_info`` (the rounds of own experience write
    round, agent, success and failure kind there). The old shards stay untouched: the new
    ones are written under fresh names first, and the manifest that lists them replaces the
    old one last, so a reader sees the dataset before or after, never between.
    """
    if not episodes:
        raise DatasetError("refusing to append no episodes")
    root = Path(path)
    manifest = read_manifest(root)
    modes = list(manifest["obs_modes"])
    for i, e in enumerate(episodes):
        missing = [m for m in modes if getattr(e, m) is None]
        if missing:
            raise DatasetError(f"appended episode {i} lacks {missing}; the dataset holds {modes}")
    per_shard = max(s["episodes"] for s in manifest["shards"])
    first = len(manifest["shards"])
    shards, info, temps = [], [], {}
    try:
        for k, start in enumerate(range(0, len(episodes), per_shard)):
            group = episodes[start : start + per_shard]
            shard, tmp = _write_shard(root, first + k, group, modes)
            temps[shard["file"]] = tmp
            shards.append(shard)
            info += [_episode_info(e, shard["file"]) for e in group]
        seeds = [int(e["seed"]) for e in manifest["episode_info"]] + [e.seed for e in episodes]
        new = dict(
            manifest,
            shards=manifest["shards"] + shards,
            episode_info=manifest["episode_info"] + info,
            episodes=len(seeds),
            transitions=sum(int(e["length"]) for e in manifest["episode_info"] + info),
            seeds=seeds,
        )
        text = json.dumps(new, indent=1, default=_plain)
        temps[MANIFEST] = write_temp(root / MANIFEST, lambda p: p.write_text(text))
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in temps.items():  # the manifest last: until then no reader sees the shards
        os.replace(tmp, root / name)
    return new


def _write_shard(
    root: Path, index: int, group: Sequence[Episode], modes: Sequence[str]
) -> tuple[dict[str, Any], Path]:
    """One shard of ``group`` written under a temporary name: (its manifest entry, the temp)."""
    name = f"shard-{index:05d}.npz"
    arrays = {"lengths": np.array([e.length for e in group], np.int64)}
    for key in (*STEP_KEYS, *modes):
        arrays[key] = np.concatenate([getattr(e, key) for e in group])
    tmp = write_temp(root / name, lambda p, a=arrays: _savez(p, a))
    entry = {
        "file": name,
        "episodes": len(group),
        "transitions": int(arrays["lengths"].sum()),
        "bytes": tmp.stat().st_size,
    }
    return entry, tmp


def _episode_info(e: Episode, shard: str) -> dict[str, Any]:
    """An episode's entry in the manifest: where it is, its physics and its outcome."""
    return {
        "seed": e.seed,
        "length": e.length,
        "shard": shard,
        "physics": e.physics,
        "dropped": bool(e.dropped.any()),
        "success": bool(e.success.any()),
        "return": float(e.reward.sum()),
        "meta": {str(k): _plain(v) for k, v in e.meta.items()},
    }


def read_manifest(root: str | os.PathLike, env_id: str | None = None) -> dict[str, Any]:
    """The validated manifest of a dataset directory, or a DatasetError saying what is wrong.

    With ``env_id``, a dataset of another task is refused too.
    """
    root = Path(root)
    if _is_lerobot(root):
        from embodied import lerobot

        return lerobot.read_manifest(root, env_id)
    if not root.exists():
        raise DatasetError(
            f"dataset directory {root} does not exist (write one with embodied-collect)"
        )
    if not root.is_dir():
        raise DatasetError(f"{root} is a file; a dataset is a directory holding {MANIFEST}")
    mpath = root / MANIFEST
    if not mpath.exists():
        raise DatasetError(
            f"{root} has no {MANIFEST}: not a dataset directory, or its writing was interrupted"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{mpath} is not valid JSON (truncated or corrupted): {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{mpath} has format {found!r}; expected {FORMAT!r} (a foreign file?)")
    need = ("env_id", "split", "obs_modes", "episodes", "shards", "episode_info", "state_labels")
    missing = [k for k in need if k not in manifest]
    if missing:
        raise DatasetError(f"{mpath} lacks the keys {missing}")
    if manifest["episodes"] == 0 or not manifest["shards"]:
        raise DatasetError(f"dataset {root} holds no episodes")
    if len(manifest["episode_info"]) != manifest["episodes"]:
        raise DatasetError(
            f"{mpath}: episode_info has {len(manifest['episode_info'])} entries, "
            f"episodes says {manifest['episodes']}"
        )
    for entries, keys in (
        (manifest["shards"], ("file", "episodes")),
        (manifest["episode_info"], ("seed",)),
    ):
        if not all(isinstance(e, dict) and all(k in e for k in keys) for e in entries):
            raise DatasetError(f"{mpath}: an entry lacks one of the keys {list(keys)} (corrupted?)")
    if env_id is not None and manifest["env_id"] != env_id:
        raise DatasetError(
            f"dataset {root} holds {manifest['env_id']!r} episodes; {env_id!r} needs a dataset "
            "of its own task (collect one with embodied-collect env=...)"
        )
    return manifest


def _is_lerobot(root: Path) -> bool:
    """A LeRobot dataset (meta/info.json, no manifest of ours): embodied/lerobot.py reads it."""
    return not (root / MANIFEST).exists() and (root / "meta" / "info.json").is_file()


def _read_shard(root: Path, shard: dict[str, Any], modes: Sequence[str]) -> dict[str, np.ndarray]:
    file = root / shard["file"]
    if not file.exists():
        raise DatasetError(f"dataset {root}: shard {shard['file']} listed in {MANIFEST} is missing")
    size = file.stat().st_size
    if "bytes" in shard and size != shard["bytes"]:
        raise DatasetError(
            f"dataset {root}: shard {shard['file']} has {size} bytes, {MANIFEST} says "
            f"{shard['bytes']} (truncated or overwritten)"
        )
    keys = ["lengths", *STEP_KEYS, *modes]
    try:
        with np.load(file, allow_pickle=False) as npz:
            absent = [k for k in keys if k not in npz.files]
            if absent:
                raise DatasetError(f"dataset {root}: shard {shard['file']} lacks arrays {absent}")
            arrays = {k: npz[k] for k in keys}
    except DatasetError:
        raise
    except Exception as err:  # a damaged zip or npy raises many types (zlib.error, TokenError...)
        raise DatasetError(f"dataset {root}: cannot read shard {shard['file']}: {err}") from err
    if len(arrays["lengths"]) != shard["episodes"]:
        raise DatasetError(
            f"dataset {root}: shard {shard['file']} holds "
            f"{len(arrays['lengths'])} episodes, {MANIFEST} says {shard['episodes']}"
        )
    return arrays


def _shard_episodes(
    arrays: dict[str, np.ndarray], info: Sequence[dict[str, Any]], modes: Sequence[str]
) -> list[Episode]:
    """The episodes of one shard, in order; ``info`` starts at its first episode."""
    out = []
    a = o = 0
    for i, t in enumerate(int(t) for t in arrays["lengths"]):
        ep = info[i]
        out.append(
            Episode(
                state=arrays["state"][o : o + t + 1] if "state" in modes else None,
                pixels=arrays["pixels"][o : o + t + 1] if "pixels" in modes else None,
                physics=ep.get("physics", {}),
                seed=ep["seed"],
                meta=ep.get("meta", {}),
                **{k: arrays[k][a : a + t] for k in STEP_KEYS},
            )
        )
        a, o = a + t, o + t + 1
    return out


def _counts(episodes: Sequence[Episode]) -> dict[str, Any]:
    return {
        "episodes": len(episodes),
        "transitions": int(sum(e.length for e in episodes)),
        "seeds": [e.seed for e in episodes],
    }


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` to exactly ``path`` (given a name, numpy would append .npz)."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _plain(value: Any) -> Any:
    """JSON-friendly Python values from numpy scalars/arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
