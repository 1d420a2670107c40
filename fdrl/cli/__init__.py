"""The `fdrl` command: one verb per pipeline stage, each usable on its own.

Each verb is a parser function beside the handler it calls, grouped by stage: `data` (shard,
fit-prior), `runs` (train, sample, translate, launch), `evaluation` (fid-ref, fid, classify,
fetch-weights, train-classifier) and `results` (table, figure, toy, profiles); the options
several verbs share are defined once in `options`. Building the parser imports only `fdrl.names`, so `fdrl --help`
and argument errors never wait for torch; a handler imports its stage when it runs.
"""

from __future__ import annotations

import argparse
import sys

from fdrl import __version__
from fdrl.cli.data import fit_prior_parser, shard_parser
from fdrl.cli.evaluation import (classify_parser, fetch_weights_parser, fid_parser,
                                 fid_ref_parser, train_classifier_parser)
from fdrl.cli.results import figure_parser, profiles_parser, table_parser, toy_parser
from fdrl.cli.runs import launch_parser, sample_parser, train_parser, translate_parser
from fdrl.errors import FdrlError

VERB_PARSERS = (table_parser, figure_parser, toy_parser, shard_parser, fit_prior_parser,
                train_parser, sample_parser, translate_parser, fid_ref_parser, fid_parser,
                classify_parser, fetch_weights_parser, train_classifier_parser, launch_parser,
                profiles_parser)


def parser(full_help: bool = False) -> argparse.ArgumentParser:
    """The argument parser of every verb (`full_help` adds the toy keys, which import torch)."""
    top = argparse.ArgumentParser(prog="fdrl", description="Flow-Guided Density Ratio Learning: "
                                  "the paper's pipeline, verb by verb.")
    top.add_argument("--version", action="version", version=f"fdrl {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERB_PARSERS:
        add(verbs, full_help) if add is toy_parser else add(verbs)
    return top


def main(argv: list[str] | None = None) -> int:
    """Runs one verb; bad input ends with one sentence on stderr and exit status 1."""
    argv = sys.argv[1:] if argv is None else argv
    top = parser(full_help="toy" in argv[:1] and ("-h" in argv or "--help" in argv))
    args, extra = top.parse_known_args(argv)
    # argparse gives an optional nargs="*" positional its (empty) share before `--out`: input
    # files that follow `--out` come back as extras, and belong to `inputs`.
    if extra:
        if not hasattr(args, "inputs") or any(e.startswith("-") for e in extra):
            top.error(f"unrecognized arguments: {' '.join(extra)}")
        args.inputs += extra
    try:
        return args.handler(args) or 0
    except FdrlError as err:
        print(f"fdrl {args.verb}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an appended log, a folder: writes outside `fdrl.io.atomic_path`
        from fdrl.io import NO_ROOM, no_room

        if err.errno not in NO_ROOM:
            raise
        print(f"fdrl {args.verb}: error: {no_room(err.filename, err)}", file=sys.stderr)
        return 1
    finally:
        # Leave the process group before exit: a rank that exits inside it (gloo's threads still
        # up) can be aborted by std::terminate, failing the whole torchrun job.
        if "fdrl.distributed" in sys.modules:
            sys.modules["fdrl.distributed"].shutdown()
