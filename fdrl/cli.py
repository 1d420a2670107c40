"""The `fdrl` command: one verb per pipeline stage, each usable on its own (DESIGN.md sec. 6)."""

from __future__ import annotations

import argparse
import sys

from fdrl import __version__
from fdrl.errors import FdrlError


def _table(args: argparse.Namespace) -> None:
    from fdrl.tables import TABLES, write_csv

    write_csv(TABLES[args.name](), args.out)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    from fdrl.tables import TABLES

    top = argparse.ArgumentParser(
        prog="fdrl",
        description="Flow-Guided Density Ratio Learning: the paper's pipeline, verb by verb.",
    )
    top.add_argument("--version", action="version", version=f"fdrl {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    table = verbs.add_parser(
        "table", help="write one of the paper's tables as CSV",
        description="Write one of the paper's tables as CSV, computed from the code.",
    )
    table.add_argument("name", choices=sorted(TABLES), help="which table")
    table.add_argument("--out", required=True, metavar="FILE.csv", help="where to write it")
    table.set_defaults(run=_table)
    return top


def main(argv: list[str] | None = None) -> int:
    """Runs one verb; bad input ends with one sentence on stderr and exit status 1."""
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except FdrlError as err:
        print(f"fdrl {args.verb}: error: {err}", file=sys.stderr)
        return 1
    return 0
