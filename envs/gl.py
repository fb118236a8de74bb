"""The process's OpenGL set-up, done at ``import embodied``, before MuJoCo first renders.

Three hazards of rendering in the same process as everything else:

- GLFW, MuJoCo's default backend, needs a display: a headless Linux machine gets EGL.
- Mesa (the software renderer, llvmpipe) loads its driver with ``RTLD_GLOBAL``, which puts the
  system LLVM's exported symbols in the process's global scope. A library carrying its own LLVM
  with default-visibility symbols, loaded afterwards, binds its LLVM calls to Mesa's LLVM and
  crashes in its static initialisers: triton's ``libtriton.so``, which the default PyPI torch
  imports lazily (building an optimizer imports ``torch._dynamo``, which imports triton).
  Loading those libraries first, each bound to itself (``RTLD_LOCAL | RTLD_NOW``), makes any
  later order safe; Mesa's own LLVM references are versioned and never reach them.
- llvmpipe draws on a thread pool created with its first context. A child forked after that
  (the default start method of ``multiprocessing`` on Linux, so of async vector envs) inherits
  the pool's state without its threads and hangs at its first frame. ``LP_NUM_THREADS=0``
  draws on the calling thread: fork-safe, and no slower at this scene's frame sizes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

# (package, glob under it) of the libraries that carry their own LLVM with exported symbols
LLVM_CARRIERS: tuple[tuple[str, str], ...] = (("triton", "_C/libtriton*.so"),)


def choose_backend() -> None:
    """EGL on a Linux machine without a display, unless the user chose a backend."""
    if "MUJOCO_GL" in os.environ or not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY"):
        return
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if "mujoco" in sys.modules:  # imported before us: it chose GLFW, which needs a display
        from mujoco.egl import GLContext
        from mujoco.rendering.classic import gl_context

        gl_context.GLContext = GLContext


def load_llvm_carriers() -> list[Path]:
    """Load every installed LLVM carrier, each bound to itself; returns the files loaded.

    A carrier already imported is already bound. One that fails to load is left alone: its
    package will raise the same error when it imports it.
    """
    loaded: list[Path] = []
    if not sys.platform.startswith("linux"):  # Mesa's driver loader is the hazard
        return loaded
    for package, pattern in LLVM_CARRIERS:
        if package in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            for lib in sorted(Path(root).glob(pattern)):
                try:
                    ctypes.CDLL(str(lib), mode=os.RTLD_LOCAL)
                except OSError:
                    continue
                loaded.append(lib)
    return loaded


def prepare() -> None:
    """All of the above; idempotent, and a no-op for what the user already set."""
    choose_backend()
    os.environ.setdefault("LP_NUM_THREADS", "0")
    load_llvm_carriers()
