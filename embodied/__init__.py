"""embodied-ood: does a world model get the physical state right out of distribution?

Importing the package registers the gymnasium ids (``embodied/<Task>-v<version>``) and sets up
rendering before MuJoCo first renders (``embodied.envs.gl``: a headless backend, and rendering
that is safe beside torch's compiler and across fork).
"""

from embodied.envs import gl

gl.prepare()

from embodied.registration import TASKS, register_all  # noqa: E402

__version__ = "0.2.0"
__all__ = ["TASKS", "__version__", "register_all"]

register_all()
from embodied.api import evaluate as evaluate  # noqa: E402  (the notebook API)
