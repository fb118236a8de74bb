"""The arm scene as the shift catalogue sees it: its MJCF and the names that play each role.

The catalogue's writers (``embodied/shifts/catalogue.py``) name elements by role only; this is
the one place that says which body, pair, actuator, joint, material, light and camera of
``assets/arm.xml`` each role means, and ``build_model`` for this scene.
"""

from collections.abc import Mapping
from importlib import resources

import mujoco

from embodied.shifts import Scene
from embodied.shifts import build_model as build_scene_model

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))

SCENE = Scene(
    xml=resources.files("embodied.envs").joinpath("assets/arm.xml").read_text(),
    roles={
        "cup_body": ("cup",),
        "cup_geom": ("cup",),
        "pad_pairs": ("cup_left_pad", "cup_right_pad"),  # cup-pad contacts (the grasp)
        "table_pair": ("cup_table",),
        "grip": ("grip",),  # the finger actuator
        "servos": ("x", "y", "z"),  # the Cartesian end-effector servos
        "arm_joints": ARM_JOINTS,
        "table_material": ("table",),
        "key_light": ("key",),
        "camera": ("fixed",),
    },
)


def build_model(physics: Mapping[str, float]) -> mujoco.MjModel:
    """The arm scene's MjModel with every parameter in ``physics`` applied."""
    return build_scene_model(physics, SCENE)
