"""The apps' Hydra configs as a test composes them, and the small scripted eval grid that the
eval app's tests and the interrupt tests both run."""

from hydra import compose, initialize_config_module
from omegaconf import DictConfig


def app_config(name: str, *overrides: str) -> DictConfig:
    """configs/<name>.yaml with ``overrides``, as the app's command line composes it."""
    with initialize_config_module("embodied.configs", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def scripted_grid(splits: str) -> list[str]:
    """Overrides of a small eval grid: the scripted agent on ``splits`` (a Hydra list), two
    seeds of two 30-step episodes each, without videos or progress bars."""
    return [
        "agents=[scripted]",
        f"splits={splits}",
        "seeds=[0,1]",
        "episodes=2",
        "+env.kwargs.max_episode_steps=30",
        "video.clips=0",
        "videos.cells=[]",
        "progress=false",
    ]
