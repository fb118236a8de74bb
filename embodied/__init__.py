"""embodied-ood: does a world model get the physical state right out of distribution?

Importing the package sets up rendering before MuJoCo is first imported (``embodied.envs.gl``:
a headless backend, and rendering that is safe beside torch's compiler and across fork), then
imports the task modules: each task class registers itself as it is defined (``TASKS``, the
gymnasium ids ``embodied/<Task>-v<version>``).
"""

from embodied.envs import gl

gl.prepare()

from embodied.envs import import_tasks  # noqa: E402
from embodied.registration import TASKS  # noqa: E402

__version__ = "0.2.0"
__all__ = ["TASKS", "__version__"]

import_tasks()
from embodied import api as _api  # noqa: E402, F401  (embodied.evaluate(...): the notebook API)
