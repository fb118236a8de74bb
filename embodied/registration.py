"""Gymnasium registration by entry-point string: the core never imports the tasks."""

import gymnasium

# task name -> (entry point, default time limit in control steps at 20 Hz, version). A change
# that moves a task's numbers (its reward, say) bumps its version, so data and results of the
# old one are refused rather than mixed in (CupPush v1: the hand term points behind the cup).
TASKS: dict[str, tuple[str, int, int]] = {
    "Reach": ("embodied.envs.reach:Reach", 60, 0),
    "CupPush": ("embodied.envs.cup_push:CupPush", 120, 1),
    "CupCarry": ("embodied.envs.cup_carry:CupCarry", 60, 0),
    "CupPickPlace": ("embodied.envs.cup_pick_place:CupPickPlace", 160, 0),
}


def env_id(task: str) -> str:
    """The gymnasium id of a task name, failing with the valid names."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(TASKS)}")
    return f"embodied/{task}-v{TASKS[task][2]}"


def register_all() -> None:
    for name, (entry_point, steps, _) in TASKS.items():
        gid = env_id(name)
        if gid not in gymnasium.registry:
            gymnasium.register(id=gid, entry_point=entry_point, max_episode_steps=steps)
