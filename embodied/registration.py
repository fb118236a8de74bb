"""Gymnasium registration by entry-point string: the core never imports the tasks."""

import gymnasium

# task name -> (entry point, default time limit in control steps at 20 Hz)
TASKS: dict[str, tuple[str, int]] = {
    "Reach": ("embodied.envs.reach:Reach", 60),
    "CupPush": ("embodied.envs.cup_push:CupPush", 120),
    "CupCarry": ("embodied.envs.cup_carry:CupCarry", 60),
    "CupPickPlace": ("embodied.envs.cup_pick_place:CupPickPlace", 160),
}


def env_id(task: str) -> str:
    """The gymnasium id of a task name, failing with the valid names."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(TASKS)}")
    return f"embodied/{task}-v0"


def register_all() -> None:
    for name, (entry_point, steps) in TASKS.items():
        gid = f"embodied/{name}-v0"
        if gid not in gymnasium.registry:
            gymnasium.register(id=gid, entry_point=entry_point, max_episode_steps=steps)
