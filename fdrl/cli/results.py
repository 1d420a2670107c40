"""Verbs that make the paper's results from the files the stages wrote: `table`, `figure`, and
the 2-D experiments (`toy`); and `profiles`, which links the Snakemake profiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl import names
from fdrl.cli.options import verb
from fdrl.errors import FdrlError


def table_parser(verbs) -> None:
    p = verb(verbs, "table", _table, "write one of the paper's tables as CSV",
             "Write a table as CSV: table1 from the FID results of `fdrl fid` (plus the paper's "
             "cited rows), table2 and table3 from the code, table4 from the FID results of "
             "translated and untranslated images (and `fdrl classify` results), toy from the "
             "metrics.json files of `fdrl toy`, class_conditional from `fdrl classify` results "
             "of unguided and class-conditional samples.", out="FILE.csv")
    p.add_argument("name", choices=names.TABLES, help="which table")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files the table is built from")


def _table(args: argparse.Namespace) -> None:
    from fdrl.tables import TABLES, write_csv

    write_csv(TABLES[args.name](args.inputs), args.out)


def figure_parser(verbs) -> None:
    p = verb(verbs, "figure", _figure, "draw one of the paper's figures",
             "Draw a figure from the files its experiments wrote. Inputs: fig2, fig3, fig10: "
             "`fdrl toy` samples.npz files, in panel order; fig11: prior.pt files; fig4: sample "
             "chunks of one run; fig5: FID results of one run at several flow lengths; fig6: "
             "class-conditional chunks; fig6_tradeoff: `fdrl classify` results (unguided and "
             "guided); fig7: a run trained with a source prior and the source shard folder; "
             "fig8, fig9: a trained run folder; fig12: a sample chunk and the training shard "
             "folder (with --backend).", out="FILE.png",
             shared=("backend", "weights", "device"), changes={
                 "backend": {"required": False, "help": "fig12: the feature space of its panel (a)"},
                 "weights": {"help": "fig12: the backend's weights (as fdrl fid)"},
                 "device": {"help": "fig7, fig8, fig9, fig12: default cuda if available"}})
    p.add_argument("name", choices=names.FIGURES, help="which figure")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="the files it is drawn from")


def _figure(args: argparse.Namespace) -> None:
    import inspect

    from fdrl.figures import FIGURES

    draw = FIGURES[args.name]
    options = {k: getattr(args, k) for k in ("backend", "weights", "device") if getattr(args, k)}
    refused = [k for k in options if k not in inspect.signature(draw).parameters]
    if refused:
        raise FdrlError(f"{args.name} takes no --{' or --'.join(refused)}; drop it")
    draw(args.inputs, args.out, **options)


def toy_parser(verbs, full_help: bool) -> None:
    epilog = "`fdrl toy --help` lists the keys of --set."
    if full_help:  # the keys come from the experiments' dataclasses, which import torch
        from fdrl.toy import keys_help

        epilog = keys_help()
    p = verb(verbs, "toy", _toy, "run one of the paper's 2-D experiments (Figs. 2, 3, 10)",
             "Run a 2-D experiment; write OUT/samples.npz and OUT/metrics.json.",
             out="DIR", out_help="output folder", shared=("set",), epilog=epilog,
             formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=names.TOYS, help="which experiment")


def _toy(args: argparse.Namespace) -> None:
    from fdrl.toy import run_toy

    metrics = run_toy(args.experiment, args.out, args.set)
    print(f"{args.experiment}: {metrics['metric']} {metrics['value']:.4f} "
          f"(prior {metrics['prior_value']:.4f}; expected {metrics['expected']}: "
          f"{'met' if metrics['meets'] else 'NOT met'})")


# --- the Snakemake profiles ---------------------------------------------------------------------

def profiles_parser(verbs) -> None:
    p = verb(verbs, "profiles", _profiles, "link the Snakemake profiles into ~/.config/snakemake",
             "Symlink cluster_profiles/local and cluster_profiles/slurm into Snakemake's per-user "
             "profile folder, so that `snakemake --profile slurm` finds them.", out=None)
    p.add_argument("action", choices=["install"])
    p.add_argument("--to", type=Path, default=None, metavar="DIR",
                   help="profile folder (default: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake)")


def _profiles(args: argparse.Namespace) -> None:
    from fdrl.profiles import install

    for link in install(args.to):
        print(f"{link} -> {link.resolve()}")
