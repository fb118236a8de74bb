"""embodied-ood: does a world model get the physical state right out of distribution?

Importing the package registers the gymnasium ids (``embodied/<Task>-v0``) and, on a
machine without a display, selects MuJoCo's headless EGL renderer.
"""

import os
import sys

if (
    "MUJOCO_GL" not in os.environ
    and sys.platform.startswith("linux")
    and not os.environ.get("DISPLAY")
):
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if "mujoco" in sys.modules:  # imported before us: it chose GLFW, which needs a display
        from mujoco.egl import GLContext
        from mujoco.rendering.classic import gl_context

        gl_context.GLContext = GLContext

from embodied.registration import TASKS, register_all  # noqa: E402

__version__ = "0.1.0"
__all__ = ["TASKS", "__version__", "register_all"]

register_all()
