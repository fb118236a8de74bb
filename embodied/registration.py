"""The task table: each task class registers itself here when it is defined.

A task is its class (``ArmEnv.__init_subclass__`` calls :func:`register`): its name, version,
time limit, scripted controller, plan horizon and reward entries are declared on it, and
``import embodied`` imports the task modules. The core reads a task only through ``TASKS``
and gymnasium's registry, so it never imports the tasks.
"""

from __future__ import annotations

import re

import gymnasium
from omegaconf import OmegaConf

from embodied.protocols import Task

# task name -> its class, in the order the classes were defined
TASKS: dict[str, type[Task]] = {}
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def env_id(task: str) -> str:
    """The gymnasium id of a task name, failing with the valid names."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(TASKS)}")
    return f"embodied/{task}-v{TASKS[task].version}"


def register(task: type[Task]) -> None:
    """Add ``task`` under its ``task_name`` and register ``embodied/<name>-v<version>`` with
    gymnasium, time limit ``max_episode_steps``. A class defined again under the same module and
    name (a reloaded module) replaces its first definition; another class of the same name fails.
    """
    name, version = task.task_name, task.version
    steps = getattr(task, "max_episode_steps", None)  # declared by each task, no default
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{task.__qualname__}.task_name must be an identifier, got {name!r}")
    for attr, value, least in (("version", version, 0), ("max_episode_steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: {attr} must be an integer >= {least}, got {value!r}")
    before = TASKS.get(name)
    if before is not None and _where(before) != _where(task):
        raise ValueError(f"task {name!r} is defined twice: by {_where(before)} and {_where(task)}")
    if before is not None:
        gymnasium.registry.pop(env_id(name), None)
    TASKS[name] = task
    gymnasium.register(id=env_id(name), entry_point=task, max_episode_steps=steps)


def _where(task: type) -> str:
    return f"{task.__module__}.{task.__qualname__}"


# configs name a task and derive its id: ``id: ${env_id:${.name}}`` (configs/env/*.yaml)
OmegaConf.register_new_resolver("env_id", env_id, replace=True)
