"""What a checkpoint directory was trained on, checked before a model is used.

Trainers write ``trained_on.json`` beside their model (``<run_dir>/models/<Task>/<agent>/``):
the dataset's task and split and the world model's family and class. Eval and the policy
factories refuse a model trained on another task or of another family instead of planning with
it (every task shares the state layout, so such a model would load and quietly plan nonsense).
A model trained on an older version of its task (``env_id``) is refused too. Directories
without the file (other trainers, older runs) are not checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embodied.atomic import write_atomic
from embodied.registration import TASKS, env_id

TRAINED_ON = "trained_on.json"


def write_trained_on(out_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Record ``{"env_id", "task", "split", "family", "world_model"}`` of a training run."""
    write_atomic(Path(out_dir) / TRAINED_ON, json.dumps(dict(record), indent=1) + "\n")


def read_trained_on(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a checkpoint directory, None where it has none."""
    path = Path(checkpoint_dir) / TRAINED_ON
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); train the model again") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a JSON object; train the model again")
    return record


def check_trained_on(
    checkpoint_dir: str | os.PathLike, task: str | None, agent_cfg: Mapping[str, Any]
) -> None:
    """ValueError when the model in ``checkpoint_dir`` was not trained for this task and agent."""
    record = read_trained_on(checkpoint_dir)
    if record is None:
        return
    name = agent_cfg.get("name", "?")
    if task is not None and record.get("task") not in (None, task):
        raise ValueError(
            f"the model in {checkpoint_dir} was trained on {record['task']} data, not {task}: "
            f"train agent {name!r} on {task} (models live in <checkpoints>/<Task>/<agent>/)"
        )
    trained_id, task_id = record.get("env_id"), env_id(task) if task in TASKS else None
    if trained_id is not None and task_id is not None and trained_id != task_id:
        raise ValueError(
            f"the model in {checkpoint_dir} was trained on {trained_id} data; the task is now "
            f"{task_id} (CHANGELOG.md says what changed): train {name!r} again on fresh data"
        )
    world_model = agent_cfg.get("world_model") or {}
    target = world_model.get("_target_")
    if target and record.get("world_model") not in (None, target):
        raise ValueError(
            f"the model in {checkpoint_dir} is a {record.get('family')!r} model "
            f"({record['world_model']}); agent {name!r} plans with {target} "
            f"(family {agent_cfg.get('family')!r}): point it at its own checkpoint"
        )
