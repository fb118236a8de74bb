"""What every Hydra app does at its command line, before and around its work.

Before: an unknown key (``foo=1``, ``collect.epsiodes=3``) or a group the app does not have
(``agent=state`` for ``embodied-collect``) fails listing the valid keys or groups; Hydra
itself names only the bad one (and lists the options of a bad group value on its own).
Around: the errors a user can fix (bad input: ValueError; disk full, read-only or missing
paths: OSError; a config target refusing its arguments) print their message instead of a
traceback, and Ctrl-C or SIGTERM says how to carry on. ``HYDRA_FULL_ERROR=1`` shows the
traceback, as it does for Hydra's own errors.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

OTHER_CONFIG = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def unknown_override(config_name: str, args: Sequence[str]) -> str | None:
    """Why an override names a key or group the app's config lacks, or None when all exist.

    Only plain ``key=value`` and ``group=option`` overrides are checked: ``+key`` adds on
    purpose, and anything Hydra cannot parse or compose is left for Hydra to report.
    """
    if any(a.startswith(OTHER_CONFIG) for a in args):
        return None  # another config than the app's own: Hydra alone knows its keys
    lines = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra"))]
    if not lines:
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except Exception:
        return None
    with initialize_config_module("embodied.configs", version_base="1.3"):
        groups = set(GlobalHydra.instance().config_loader().list_groups("")) - {"hydra"}
        defaults = compose(config_name, return_hydra_config=True).hydra.runtime.choices
        have = sorted(g for g in defaults if not g.startswith("hydra/"))
        picks = [o for o in overrides if o.key_or_group in groups]
        for o in picks:
            if o.key_or_group not in have:
                return (
                    f"{config_name} has no config group {o.key_or_group!r}; "
                    f"its groups: {have or 'none'}"
                )
        try:
            cfg = compose(config_name, [str(o.input_line) for o in picks])
        except Exception:
            return None
    for o in overrides:
        if o.key_or_group in groups or "/" in o.key_or_group:
            continue
        parts = o.key_or_group.split(".")
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if i else cfg
            if not isinstance(node, DictConfig):
                break  # a list or a value: Hydra checks what may go into it
            if part not in set(node):  # plain `in` misses keys whose value is ??? (required)
                where = f" of {parent!r}" if parent else ""
                return (
                    f"unknown key {o.key_or_group!r}; valid keys{where}: {sorted(node)} "
                    f"(+{o.input_line} adds a new one)"
                )
    return None


def app(prog: str, config_name: str, work: Callable[[DictConfig], object]) -> Callable[[], None]:
    """The console entry point of a Hydra app that runs ``work(cfg)`` on its config
    (configs/<config_name>.yaml), with the command-line checks and user errors of every app."""

    @hydra.main(version_base="1.3", config_path="pkg://embodied.configs", config_name=config_name)
    def hydra_main(cfg: DictConfig) -> None:
        with user_errors(prog):
            work(cfg)

    return lambda: run(prog, config_name, hydra_main)


def run(prog: str, config_name: str, hydra_main: Callable[[], None]) -> None:
    """Check the command line's keys, then hand over to the Hydra-decorated ``hydra_main``.

    SIGTERM (``kill``, a job scheduler) stops the app as Ctrl-C does, so temporary files are
    removed and worker processes stopped instead of the process vanishing mid-write.
    """
    problem = unknown_override(config_name, sys.argv[1:])
    if problem:
        fail(prog, problem)
    signal.signal(signal.SIGTERM, _interrupt)
    hydra_main()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """One line for the errors a user can fix; exit 130 with a hint on Ctrl-C."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished work is kept: rerun to carry on", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError, InstantiationException, RuntimeError) as err:
        # a cell that failed in a worker arrives wrapped: "<cell id> failed: <its error>"
        fixable = not isinstance(err, RuntimeError) or isinstance(
            err.__cause__, ValueError | OSError
        )
        if not fixable or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(prog, str(err))
