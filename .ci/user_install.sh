#!/usr/bin/env bash
# CI, the user's path besides the Makefile's: a fresh venv, `pip install .` with whatever torch
# pip picks (on PyPI today a CUDA build with triton, not the Makefile's CPU wheel), then the
# README's first steps from a directory outside the repository: render and train in one process
# (issue 17's snippet) and a smoke run of the main job.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# a clean copy of the sources, as a fresh clone has them (no .venv, no stale build/)
mkdir "$work/src"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./runs -cf - . \
  | tar -C "$work/src" -xf -
"${PY:-python3}" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install -q --upgrade pip
"$bin/python" -m pip install -q "$work/src"
echo "user install: $(( SECONDS - start )) s, $("$bin/python" -c 'import torch; print("torch", torch.__version__)')"

cd "$work"
"$bin/python" - <<'PYTHON'
import gymnasium as gym, embodied, torch
env = gym.make("embodied/CupCarry-v0", obs_mode="pixels"); env.reset(seed=0); env.step(env.action_space.sample())
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
print("render then train in one process: ok")
PYTHON
"$bin/embodied-bench" preset=smoke run_dir="$work/run"
test -s "$work/run/report.html"
echo "user path: $(( SECONDS - start )) s in all"
