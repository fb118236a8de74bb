"""The arm scene, its base env and the tasks, one module each.

:func:`import_tasks` imports every module here, and each task class registers itself as it is
defined (``ArmEnv.__init_subclass__``): a new task is its own file and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_tasks() -> None:
    """Import every module of this package (``import embodied`` does, after the GL set-up)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
