"""The protocols declare every optional hook the code looks up, and there is one ``Policy``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import embodied.rollout
from embodied.protocols import Policy, WorldModel

ROOT = Path(__file__).resolve().parents[2]
# what the code names the objects it probes for a hook; SB3's ``model`` is SB3's, not a
# WorldModel, so agents/sb3* is left out
RECEIVERS = {
    "policy": Policy,
    "world_model": WorldModel,
    "self.world_model": WorldModel,
    "model": WorldModel,
    "step_fn": WorldModel,
}


def hook_lookups() -> list[tuple[str, type, str]]:
    """(where, protocol, name) of every getattr/hasattr(<receiver>, "<name>") in the code."""
    found = []
    files = [*(ROOT / "embodied").rglob("*.py"), *(ROOT / "agents").rglob("*.py")]
    for path in files:
        if "sb3" in path.relative_to(ROOT).as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                continue
            protocol = RECEIVERS.get(ast.unparse(node.args[0]))
            if protocol is not None:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.append((where, protocol, node.args[1].value))
    return found


def test_every_optional_hook_looked_up_is_declared_on_its_protocol():
    lookups = hook_lookups()
    names = {name for _, _, name in lookups}
    # the lookups this check must see (a rename of a receiver would hide them)
    assert {"world_model", "episode_record", "deterministic", "attach", "rollout"} <= names
    undeclared = [
        (where, protocol.__name__, name)
        for where, protocol, name in lookups
        if name not in dir(protocol) and f"``{name}" not in inspect.getdoc(protocol)
    ]
    assert undeclared == []


def test_one_policy():
    assert embodied.rollout.Policy is Policy
    assert inspect.signature(embodied.rollout.rollout).parameters["policy"].annotation in (
        Policy,
        "Policy",
    )
