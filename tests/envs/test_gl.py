"""Rendering beside everything else in one process (embodied.envs.gl): torch's compiler stack
after Mesa's software renderer, and forked workers after the parent rendered.

Each check runs in a fresh interpreter: what it guards against is the order in which native
libraries enter a process, which a long-lived pytest process has already fixed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RENDER = """
import gymnasium as gym, embodied
env = gym.make("embodied/CupCarry-v0", obs_mode="pixels")
env.reset(seed=0)
frame = env.step(env.action_space.sample())[0]
assert frame.shape == (64, 64, 3) and frame.std() > 0
"""
TRAIN = """
import torch
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
"""


def run(code: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("order", ["render-then-train", "train-then-render"])
def test_rendering_and_training_share_a_process(tmp_path, order):
    """The issue's snippet (a segfault with the default PyPI torch and its triton)."""
    code = RENDER + TRAIN if order == "render-then-train" else TRAIN + RENDER
    out = run(code + "\nprint('done')", tmp_path, MUJOCO_GL="egl")
    assert out.returncode == 0 and "done" in out.stdout, (out.returncode, out.stderr[-2000:])


FAKE_LLVM = """
int LLVMIsMultithreaded(void) { return 42; }  /* LLVM's C API name; 1 in a threaded LLVM */
int probe(void) { return LLVMIsMultithreaded(); }
"""
PROBE = """
import ctypes, os
print("probe", ctypes.CDLL({lib!r}, mode=os.RTLD_LOCAL).probe())
"""
RAW_RENDER = """
import mujoco
m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
renderer = mujoco.Renderer(m, 8, 8)
renderer.update_scene(mujoco.MjData(m))
renderer.render()
"""


def test_llvm_carriers_stay_bound_to_themselves_after_rendering(tmp_path):
    """The mechanism, without triton: a stand-in ``triton`` whose library exports an LLVM
    symbol. Loaded after MuJoCo rendered on Mesa, its own call resolves to Mesa's LLVM (the
    hazard, checked first so the test means something here); ``import embodied`` loads it
    before the renderer, and its call stays its own."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in library")
    lib = tmp_path / "pkgs" / "triton" / "_C" / "libtriton.so"
    lib.parent.mkdir(parents=True)
    (lib.parents[1] / "__init__.py").write_text("")
    (tmp_path / "fake.c").write_text(FAKE_LLVM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib, tmp_path / "fake.c"], check=True)
    probe = PROBE.format(lib=str(lib))

    bare = run(RAW_RENDER + probe, tmp_path, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")
    assert bare.returncode == 0, bare.stderr[-2000:]
    if "probe 42" in bare.stdout:
        pytest.skip("this machine's GL driver puts no LLVM in the global scope: no hazard")
    assert "probe 1" in bare.stdout, bare.stdout

    guarded = run(RENDER + probe, tmp_path, MUJOCO_GL="egl", PYTHONPATH=str(lib.parents[2]))
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "probe 42" in guarded.stdout, guarded.stdout


def test_async_pixel_envs_after_the_parent_rendered(tmp_path):
    """The README's "make_vec works as it is", with the default (fork) start method."""
    code = """
    import gymnasium as gym, numpy as np, embodied
    env = gym.make("embodied/CupCarry-v0", obs_mode="pixels", render_mode="rgb_array")
    env.reset(seed=0)
    parent = env.render()
    vec = gym.make_vec("embodied/CupCarry-v0", num_envs=2, vectorization_mode="async",
                       obs_mode="pixels")
    obs, _ = vec.reset(seed=0)
    obs, *_ = vec.step(vec.action_space.sample())
    vec.close()
    assert obs.shape == (2, 64, 64, 3) and obs.std() > 0 and parent.std() > 0
    print("done")
    """
    try:
        out = run(code, tmp_path, timeout=120, MUJOCO_GL="egl")
    except subprocess.TimeoutExpired:
        pytest.fail("async vector env of pixel envs hung after the parent rendered")
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
