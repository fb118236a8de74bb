"""A world model's settings: one dataclass per family, built from a config's keys.

Each family declares its settings once, as a dataclass (``PixelConfig``, ``StateConfig``...):
the constructor takes them as keywords (what ``agent.yaml``'s ``world_model`` holds), the model
reads them as attributes and a checkpoint stores ``dataclasses.asdict`` of them, from which
``load`` builds the model again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls(**values)``, a misspelt or unknown key refused with the valid names."""
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {unknown}; valid: {valid}")
    return cls(**values)
