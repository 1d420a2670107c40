"""The `fdrl` command: one verb per pipeline stage, each usable on its own (DESIGN.md sec. 6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fdrl import __version__
from fdrl.errors import FdrlError

# Names only, so that `fdrl --help` and argument errors never wait for torch to import.
TABLE_NAMES = ("table2", "table3", "toy")
FIGURE_NAMES = ("fig2", "fig3", "fig10", "fig11")
TOY_NAMES = ("stale_near", "stale_far", "fdrl_far", "swissroll_lsif-pearson", "swissroll_lr-kl",
             "swissroll_lr-js", "swissroll_lr-logd")


def _table(args: argparse.Namespace) -> None:
    from fdrl.tables import TABLES, write_csv

    write_csv(TABLES[args.name](args.inputs), args.out)


def _figure(args: argparse.Namespace) -> None:
    from fdrl.figures import FIGURES

    FIGURES[args.name](args.inputs, args.out)


def _toy(args: argparse.Namespace) -> None:
    from fdrl.toy import run_toy

    metrics = run_toy(args.experiment, args.out, args.set)
    print(f"{args.experiment}: {metrics['metric']} {metrics['value']:.4f} "
          f"(prior {metrics['prior_value']:.4f}; expected {metrics['expected']}: "
          f"{'met' if metrics['meets'] else 'NOT met'})")


def _shard(args: argparse.Namespace) -> None:
    from fdrl.shards import shard

    m = shard(args.dataset, args.data_root, args.out, args.shard_size, args.workers)
    print(f"{m['dataset']}: {m['count']} images of shape {tuple(m['shape'])} in "
          f"{len(m['shards'])} shards at {args.out}")


def _fit_prior(args: argparse.Namespace) -> None:
    from fdrl.prior_fit import fit_prior

    prior = fit_prior(args.shards, args.out, args.block_rows, args.workers, args.device,
                      args.moments_out)
    if prior is not None:
        print(f"prior of {prior.count} images of shape {prior.shape} written to {args.out}")


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from fdrl.train import load_config, train

    cfg = load_config(args.config, args.set)
    changes = {"steps": args.max_steps, "checkpoint_every": args.checkpoint_every}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    train(cfg, args.out, args.resume, args.device)


def _launch(args: argparse.Namespace) -> int:
    from fdrl.launch import Resources, launch

    res = Resources(args.nodes, args.gpus_per_node, args.nproc, args.cpus_per_task, args.mem_gb,
                    args.time, args.partition, args.account, args.max_requeues)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return launch(argv, res, args.launcher, args.folder, args.cluster, not args.no_wait)


def _profiles(args: argparse.Namespace) -> None:
    from fdrl.profiles import install

    for link in install(args.to):
        print(f"{link} -> {link.resolve()}")


def _toy_epilog() -> str:
    from fdrl.config import help_text
    from fdrl.toy import GaussianToy, SwissRollToy

    return (f"keys of stale_near, stale_far, fdrl_far (defaults: paper scale):\n"
            f"{help_text(GaussianToy())}\nkeys of swissroll_*:\n{help_text(SwissRollToy())}")


def parser(full_help: bool = False) -> argparse.ArgumentParser:
    """The argument parser of every verb (`full_help` adds the toy keys, which import torch)."""
    top = argparse.ArgumentParser(
        prog="fdrl",
        description="Flow-Guided Density Ratio Learning: the paper's pipeline, verb by verb.",
    )
    top.add_argument("--version", action="version", version=f"fdrl {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    table = verbs.add_parser("table", help="write one of the paper's tables as CSV",
                             description="Write a table as CSV: table2 and table3 from the code, "
                                         "toy from the metrics.json files of `fdrl toy`.")
    table.add_argument("name", choices=TABLE_NAMES, help="which table")
    table.add_argument("--out", required=True, metavar="FILE.csv", help="where to write it")
    table.add_argument("inputs", nargs="*", metavar="INPUT", help="files the table is built from")
    table.set_defaults(run=_table)

    figure = verbs.add_parser("figure", help="draw one of the paper's figures",
                              description="Draw a figure from the files its experiments wrote.")
    figure.add_argument("name", choices=FIGURE_NAMES, help="which figure")
    figure.add_argument("--out", required=True, metavar="FILE.png", help="where to write it")
    figure.add_argument("inputs", nargs="+", metavar="INPUT", help="samples.npz files, in panel order")
    figure.set_defaults(run=_figure)

    toy = verbs.add_parser(
        "toy", help="run one of the paper's 2-D experiments (Figs. 2, 3, 10)",
        description="Run a 2-D experiment; write OUT/samples.npz and OUT/metrics.json.",
        epilog=_toy_epilog() if full_help else "`fdrl toy --help` lists the keys of --set.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    toy.add_argument("experiment", choices=TOY_NAMES, help="which experiment")
    toy.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    toy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one hyperparameter (repeatable; lists comma-separated)")
    toy.set_defaults(run=_toy)

    shard = verbs.add_parser(
        "shard", help="convert a dataset to WebDataset shards",
        description="Write a dataset's preprocessed images as WebDataset tar shards (PNG + label) "
                    "with a manifest.json; re-running writes identical bytes.")
    shard.add_argument("--dataset", required=True, metavar="NAME",
                       help="digits, cifar10, celeba, lsun_church, cat2dog_{trainA,trainB,testA,testB}")
    shard.add_argument("--data-root", required=True, type=Path, metavar="DIR",
                       help="where the dataset is staged (unused for digits)")
    shard.add_argument("--out", required=True, type=Path, metavar="DIR", help="shard folder")
    shard.add_argument("--shard-size", type=int, default=10_000, metavar="N",
                       help="images per shard (default: %(default)s)")
    shard.add_argument("--workers", type=int, default=1, metavar="W",
                       help="processes writing shards in parallel (default: %(default)s)")
    shard.set_defaults(run=_shard)

    fit = verbs.add_parser(
        "fit-prior", help="fit the data-dependent prior (Eq. 8); runs under torchrun too",
        description="Fit N(mu_D, Sigma_D + 1e-4 I) to the images of the shards by a distributed "
                    "float64 moment reduction; rank 0 writes prior.pt (plain tensors).")
    fit.add_argument("--shards", required=True, nargs="+", metavar="SHARDS",
                     help="a shard folder (or its manifest.json), or .tar files of one folder")
    fit.add_argument("--out", required=True, type=Path, metavar="prior.pt", help="where to write it")
    fit.add_argument("--block-rows", type=int, default=None, metavar="R",
                     help="accumulate x x^T R rows at a time (default: all at once, in place)")
    fit.add_argument("--workers", type=int, default=0, metavar="W",
                     help="DataLoader workers per rank (default: %(default)s)")
    fit.add_argument("--device", choices=["cpu", "cuda"], default=None,
                     help="default: cuda if available")
    fit.add_argument("--moments-out", type=Path, default=None, metavar="FILE.pt",
                     help="also write the float64 mean and covariance")
    fit.set_defaults(run=_fit_prior)

    train = verbs.add_parser(
        "train", help="train one FDRL run (Algorithm 1); runs under torchrun too",
        description="Train the run RUN.yaml describes into RUN_DIR: config.yaml, metrics.jsonl, "
                    "samples/, checkpoints/step-NNNNNN.pt, final.pt (EMA weights). One process, "
                    "or `torchrun --nproc_per_node N -m fdrl train ...`: the weights do not "
                    "depend on the number of processes. Keys of RUN.yaml: see fdrl.train.TrainConfig.")
    train.add_argument("--config", type=Path, default=None, metavar="RUN.yaml",
                       help="the run's settings (optional with --set)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set or override one key of RUN.yaml (repeatable; VALUE read as YAML)")
    train.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="run folder")
    train.add_argument("--max-steps", type=int, default=None, metavar="N",
                       help="train N steps in all instead of the config's steps (the lr schedule "
                            "stays the config's)")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                       help="checkpoint every N steps (default: the config's)")
    train.add_argument("--resume", choices=["auto", "never"], default="auto",
                       help="auto: continue from the newest checkpoint in RUN_DIR, if any; never: "
                            "start fresh, refusing a RUN_DIR that holds checkpoints "
                            "(default: %(default)s)")
    train.add_argument("--device", choices=["cpu", "cuda"], default=None,
                       help="default: cuda if available")
    train.set_defaults(run=_train)

    launch = verbs.add_parser(
        "launch", help="run a verb on several processes: torchrun here, or a SLURM job",
        description="Run `fdrl VERB ARGS` on several processes: with torchrun on this machine, or "
                    "as one submitit job (one task per GPU on every node) that requeues on "
                    "preemption or time-out and resumes from the newest checkpoint.",
        usage="fdrl launch [options] -- VERB ARGS...")
    launch.add_argument("--launcher", choices=["torchrun", "submitit"], default="torchrun",
                        help="default: %(default)s")
    launch.add_argument("--nodes", type=int, default=1, help="default: %(default)s")
    launch.add_argument("--gpus-per-node", type=int, default=0, metavar="G",
                        help="one process per GPU (default: %(default)s, CPU)")
    launch.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="processes per node without GPUs (default: %(default)s)")
    launch.add_argument("--cpus-per-task", type=int, default=4, help="default: %(default)s")
    launch.add_argument("--mem-gb", type=float, default=32, help="per node (default: %(default)s)")
    launch.add_argument("--time", type=int, default=60, metavar="MIN",
                        help="SLURM time limit in minutes (default: %(default)s)")
    launch.add_argument("--partition", default=None, help="SLURM partition")
    launch.add_argument("--account", default=None, help="SLURM account")
    launch.add_argument("--max-requeues", type=int, default=10, help="default: %(default)s")
    launch.add_argument("--cluster", choices=["slurm", "local"], default=None,
                        help="submitit's cluster (default: SLURM if sbatch is on PATH, else local)")
    launch.add_argument("--folder", type=Path, default=None, metavar="DIR",
                        help="submitit's logs and job files (default: ./submitit)")
    launch.add_argument("--no-wait", action="store_true", help="submit and return at once")
    launch.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- VERB ARGS",
                        help="the fdrl verb to run and its arguments")
    launch.set_defaults(run=_launch)

    profiles = verbs.add_parser(
        "profiles", help="link the Snakemake profiles into ~/.config/snakemake",
        description="Symlink cluster_profiles/local and cluster_profiles/slurm into Snakemake's "
                    "per-user profile folder, so that `snakemake --profile slurm` finds them.")
    profiles.add_argument("action", choices=["install"])
    profiles.add_argument("--to", type=Path, default=None, metavar="DIR",
                          help="profile folder (default: $XDG_CONFIG_HOME/snakemake or "
                               "~/.config/snakemake)")
    profiles.set_defaults(run=_profiles)
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
        return args.run(args) or 0
    except FdrlError as err:
        print(f"fdrl {args.verb}: error: {err}", file=sys.stderr)
        return 1
