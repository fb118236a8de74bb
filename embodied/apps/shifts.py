"""``embodied-shifts``: print the shift catalogue, the valid splits, or one split's draw."""

import argparse
import json
from collections.abc import Sequence

from embodied.shifts import SHIFTS, Param, resolve_physics, valid_splits

COLUMNS = ("shift", "kind", "parameter", "nominal", "ID range", "OOD 1..5 / look", "fields")


def _num(x: float) -> str:
    return f"{x:g}"


def _ood(p: Param) -> str:
    if p.severities is not None:
        return " ".join(_num(v) for v in p.severities)
    if p.look_range is not None:
        lo, hi = p.look_range
        return f"look: {'+-' if p.signed else ''}[{_num(lo)}, {_num(hi)}]"
    return "(ID draw)"


def catalogue_rows() -> list[tuple[str, ...]]:
    """One row per parameter; the shift's name, kind and fields on its first row."""
    rows = []
    for shift in SHIFTS.values():
        for i, p in enumerate(shift.params):
            lo, hi = p.id_range
            rows.append(
                (
                    shift.name if i == 0 else "",
                    shift.kind if i == 0 else "",
                    p.name + (f" [{p.unit}]" if p.unit else ""),
                    _num(p.nominal),
                    _num(lo) if lo == hi else f"[{_num(lo)}, {_num(hi)}]",
                    _ood(p),
                    ", ".join(shift.fields) if i == 0 else "",
                )
            )
    return rows


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = [("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip() for r in rows]
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, line, *fmt])


def catalogue_table() -> str:
    """The catalogue as a text table, then each shift's description."""
    notes = "\n".join(f"  {s.name}: {s.description}" for s in SHIFTS.values())
    return f"{format_table(catalogue_rows(), COLUMNS)}\n\nDescriptions:\n{notes}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="embodied-shifts",
        description="List the shift catalogue (default), the valid splits, or one split's values.",
    )
    parser.add_argument("--splits", action="store_true", help="list every valid split name")
    parser.add_argument("--resolve", metavar="SPLIT", help="print the physics a split draws")
    parser.add_argument("--seed", type=int, default=0, help="episode seed for --resolve")
    args = parser.parse_args(argv)
    if args.splits:
        print("\n".join(valid_splits()))
    elif args.resolve:
        try:
            physics = resolve_physics(args.resolve, args.seed)
        except ValueError as err:
            parser.error(str(err))
        print(json.dumps(physics, indent=2))
    else:
        print(catalogue_table())


if __name__ == "__main__":
    main()
