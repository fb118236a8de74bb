"""``embodied-check-submission results.jsonl``: was a run made elsewhere made by the protocol?

    embodied-check-submission runs/theirs/results.jsonl                 # the quick preset's grid
    embodied-check-submission runs/theirs/results.jsonl --preset standard

Exit 0 when every cell is the protocol's (tasks x splits x seeds, the episode count, the
episode seeds each cell's seed fixes, this package's version, each task's version, the
splits' shift fields); else exit 1, naming every difference (report/leaderboard.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from embodied.report.leaderboard import check_submission, protocol, read_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="embodied-check-submission", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", help="the results.jsonl of the submitted run")
    parser.add_argument("--preset", default="quick", help="the protocol's preset (default quick)")
    args = parser.parse_args(argv)
    try:
        lines = read_lines(args.results)
        expected = protocol(args.preset)
    except (OSError, json.JSONDecodeError, ValueError) as err:
        parser.exit(2, f"embodied-check-submission: error: {err}\n")
    problems = check_submission(lines, expected)
    grid = (
        f"{len(expected['tasks'])} tasks x {len(expected['splits'])} splits x "
        f"{len(expected['seeds'])} seeds x {expected['episodes']} episodes, "
        f"embodied-ood {expected['version']}"
    )
    if problems:
        print(f"REFUSED: {args.results} is not the {args.preset} protocol ({grid}):")
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    agents = sorted({line["agent"] for line in lines})
    print(f"OK: {len(lines)} cells of {agents} follow the {args.preset} protocol ({grid})")


if __name__ == "__main__":
    main()
