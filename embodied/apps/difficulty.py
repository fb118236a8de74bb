"""embodied-difficulty: the references on every work split, then which splits bite.

    embodied-difficulty                        # Reach, CupPush, CupCarry, CupPickPlace
    embodied-difficulty env=cup_carry publish=true

The cells are embodied-eval's (resumable, executor=local|ray); the table goes to
<run_dir>/difficulty.json and difficulty.md, and with publish=true to the package's
embodied/shifts/difficulty.json (what the report reads) and docs/difficulty.md.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from embodied.apps import cli
from embodied.apps.eval import evaluate
from embodied.report.difficulty import (
    TABLE_PATH,
    difficulty_rows,
    markdown,
    merged,
    write_table,
)
from embodied.report.load import load_run
from embodied.results import ResultsStore

DOCS = Path(__file__).resolve().parents[2] / "docs" / "difficulty.md"


def difficulty(cfg: DictConfig) -> Path:
    """Run (or resume) the references' cells and write the table; returns its markdown path."""
    start = time.perf_counter()
    before = len(ResultsStore(cfg.run_dir).done_ids())
    evaluate(cfg)
    run = load_run(cfg.run_dir)
    ran = len(run.cells) - before
    rows = difficulty_rows(run.cells)
    core_s = sum(c.wall_s for c in run.cells)
    meta = {
        "command": "embodied-difficulty " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "episodes": int(cfg.episodes),
        "seeds": [int(s) for s in cfg.seeds],
        "cost": f"{core_s / 3600:.2f} core-hours of cells"
        + (f" ({ran} run in {time.perf_counter() - start:.0f} s wall)" if ran else ""),
    }
    runs = {task: meta for task in sorted({r.task for r in rows})}
    out = Path(cfg.run_dir)
    write_table(rows, runs, out / "difficulty.json")
    (out / "difficulty.md").write_text(markdown(rows, runs))
    if cfg.publish:  # the tasks measured here replace theirs in the published table
        table, every = merged(TABLE_PATH, rows, runs)
        write_table(table, every, TABLE_PATH)
        print(f"embodied-difficulty: published {TABLE_PATH}")
        if DOCS.parent.is_dir():  # a source checkout: the docs page beside it
            DOCS.write_text(markdown(table, every))
            print(f"embodied-difficulty: published {DOCS}")
    biting = sum(bool(r.bites) for r in rows if r.split != "id")
    print(
        f"embodied-difficulty: {biting} of {sum(r.split != 'id' for r in rows)} splits bite; "
        f"table: {out / 'difficulty.md'}"
    )
    return out / "difficulty.md"


main = cli.app("embodied-difficulty", "difficulty", difficulty)


if __name__ == "__main__":
    main()
