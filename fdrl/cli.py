"""The `fdrl` command: one verb per pipeline stage, each usable on its own (DESIGN.md sec. 6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fdrl import __version__
from fdrl.errors import FdrlError

# Names only, so that `fdrl --help` and argument errors never wait for torch to import.
TABLE_NAMES = ("table1", "table2", "table3", "toy")
FIGURE_NAMES = ("fig2", "fig3", "fig4", "fig5", "fig8", "fig9", "fig10", "fig11", "fig12")
FID_BACKENDS = ("pytorch-fid", "clean-fid", "classifier")
TOY_NAMES = ("stale_near", "stale_far", "fdrl_far", "swissroll_lsif-pearson", "swissroll_lr-kl",
             "swissroll_lr-js", "swissroll_lr-logd")


def _table(args: argparse.Namespace) -> None:
    from fdrl.tables import TABLES, write_csv

    write_csv(TABLES[args.name](args.inputs), args.out)


def _figure(args: argparse.Namespace) -> None:
    import inspect

    from fdrl.figures import FIGURES

    draw = FIGURES[args.name]
    options = {k: getattr(args, k) for k in ("backend", "weights", "device") if getattr(args, k)}
    refused = [k for k in options if k not in inspect.signature(draw).parameters]
    if refused:
        raise FdrlError(f"{args.name} takes no --{' or --'.join(refused)}; drop it")
    draw(args.inputs, args.out, **options)


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


def _sample(args: argparse.Namespace) -> None:
    from fdrl.sampling import parse_seeds, sample

    sample(args.run, parse_seeds(args.seeds), args.out, args.batch, args.steps, args.device)


def _fid_ref(args: argparse.Namespace) -> None:
    from fdrl.fid import fid_ref

    meta = fid_ref(args.shards, args.backend, args.out, args.weights, args.batch, args.workers,
                   args.device)
    if meta is not None:
        print(f"{args.backend} reference statistics of {meta['n_images']} images "
              f"({meta['feature_extractor']}) written to {args.out}")


def _fid(args: argparse.Namespace) -> None:
    from fdrl.fid import fid

    result = fid(args.samples, args.ref, args.backend, args.out, args.weights, args.batch, args.device)
    if result is not None:
        print(f"FID {result['fid']:.4f} ({result['feature_extractor']}; {result['n_images']} "
              f"images against {args.ref}) written to {args.out}")


def _fetch_weights(args: argparse.Namespace) -> None:
    from fdrl.features import fetch_weights, write_random_weights
    from fdrl.io import sha256

    if args.random_seed is None:
        paths = fetch_weights(args.to)
    else:
        paths = write_random_weights(args.to, args.random_seed)
        print(f"RANDOM Inception weights (seed {args.random_seed}), for tests only:")
    for path in paths:
        print(f"{path}  sha256 {sha256(path)}")
    print(f"pass --weights {args.to} to `fdrl fid-ref` and `fdrl fid`")


def _train_classifier(args: argparse.Namespace) -> None:
    from fdrl.classifier import train_classifier

    c = train_classifier(args.out, args.seed, args.epochs)
    print(f"digits classifier: test accuracy {c['test_accuracy']:.4f} on {c['test_size']} held-out "
          f"images ({c['train_size']} for training), written to {args.out}")


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
                             description="Write a table as CSV: table1 from the FID results of "
                                         "`fdrl fid` (plus the paper's cited rows), table2 and "
                                         "table3 from the code, toy from the metrics.json files "
                                         "of `fdrl toy`.")
    table.add_argument("name", choices=TABLE_NAMES, help="which table")
    table.add_argument("--out", required=True, metavar="FILE.csv", help="where to write it")
    table.add_argument("inputs", nargs="*", metavar="INPUT", help="files the table is built from")
    table.set_defaults(handler=_table)

    figure = verbs.add_parser(
        "figure", help="draw one of the paper's figures",
        description="Draw a figure from the files its experiments wrote. Inputs: fig2, fig3, "
                    "fig10: `fdrl toy` samples.npz files, in panel order; fig11: prior.pt files; "
                    "fig4: sample chunks of one run; fig5: FID results of one run at several "
                    "flow lengths; fig8, fig9: a trained run folder; fig12: a sample chunk and "
                    "the training shard folder (with --backend).")
    figure.add_argument("name", choices=FIGURE_NAMES, help="which figure")
    figure.add_argument("--out", required=True, metavar="FILE.png", help="where to write it")
    figure.add_argument("inputs", nargs="+", metavar="INPUT", help="the files it is drawn from")
    figure.add_argument("--backend", choices=FID_BACKENDS,
                        help="fig12: the feature space of its panel (a)")
    figure.add_argument("--weights", metavar="PATH", help="fig12: the backend's weights (as fdrl fid)")
    figure.add_argument("--device", choices=("cpu", "cuda"),
                        help="fig8, fig9, fig12: default cuda if available")
    figure.set_defaults(handler=_figure)

    toy = verbs.add_parser(
        "toy", help="run one of the paper's 2-D experiments (Figs. 2, 3, 10)",
        description="Run a 2-D experiment; write OUT/samples.npz and OUT/metrics.json.",
        epilog=_toy_epilog() if full_help else "`fdrl toy --help` lists the keys of --set.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    toy.add_argument("experiment", choices=TOY_NAMES, help="which experiment")
    toy.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    toy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one hyperparameter (repeatable; lists comma-separated)")
    toy.set_defaults(handler=_toy)

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
    shard.set_defaults(handler=_shard)

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
    fit.set_defaults(handler=_fit_prior)

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
    train.set_defaults(handler=_train)

    smp = verbs.add_parser(
        "sample", help="generate images with a trained run (Algorithm 2); runs under torchrun too",
        description="Flow prior samples K + kappa steps with the run's EMA weights, clamp to "
                    "[-1, 1], and write uint8 NHWC images with their seeds to a .npz chunk. "
                    "Image i depends on seed i alone.")
    smp.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="a trained run")
    smp.add_argument("--seeds", required=True, metavar="SEEDS", help="e.g. 0-999 or 0-9,20")
    smp.add_argument("--out", required=True, type=Path, metavar="chunk.npz", help="where to write")
    smp.add_argument("--steps", type=int, default=None, metavar="K+kappa",
                     help="flow steps (default: the run's sample_steps)")
    smp.add_argument("--batch", type=int, default=256, help="images per forward (default: %(default)s)")
    smp.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    smp.set_defaults(handler=_sample)

    backend_help = ("pytorch-fid (Inception pool3), clean-fid (mode clean), or classifier (the "
                    "digits classifier's features: a classifier FID, not an Inception FID)")
    weights_help = ("pytorch-fid / clean-fid: the Inception weights file, or a folder holding it "
                    "(as `fdrl fetch-weights` writes; default: the library's cache); classifier: "
                    "the file of `fdrl train-classifier` (required)")
    ref = verbs.add_parser(
        "fid-ref", help="FID reference statistics of a dataset's shards; runs under torchrun too",
        description="Features of every image of the shards (each once, split over ranks), their "
                    "mean and covariance (float64); rank 0 writes an .npz with mu, sigma, count "
                    "and the backend, feature extractor and weights' SHA-256 that made them.")
    ref.add_argument("--shards", required=True, nargs="+", metavar="SHARDS",
                     help="a shard folder (or its manifest.json), or .tar files of one folder")
    ref.add_argument("--backend", required=True, choices=FID_BACKENDS, help=backend_help)
    ref.add_argument("--out", required=True, type=Path, metavar="ref.npz", help="where to write it")
    ref.add_argument("--weights", type=Path, default=None, metavar="PATH", help=weights_help)
    ref.add_argument("--batch", type=int, default=64, metavar="N",
                     help="images per forward (default: %(default)s)")
    ref.add_argument("--workers", type=int, default=0, metavar="W",
                     help="DataLoader workers per rank (default: %(default)s)")
    ref.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    ref.set_defaults(handler=_fid_ref)

    fidp = verbs.add_parser(
        "fid", help="FID of sample chunks against reference statistics; runs under torchrun too",
        description="Features of the images of the .npz chunks, their Frechet distance to the "
                    "reference (float64); rank 0 writes JSON: fid, backend, feature extractor, "
                    "weights and SHA-256, n_images, reference. A reference made by another "
                    "backend, extractor or weights file is refused.")
    fidp.add_argument("--samples", required=True, nargs="+", metavar="CHUNK.npz",
                      help="chunks of `fdrl sample` (uint8 NHWC images, seeds)")
    fidp.add_argument("--ref", required=True, type=Path, metavar="ref.npz", help="of `fdrl fid-ref`")
    fidp.add_argument("--backend", required=True, choices=FID_BACKENDS, help=backend_help)
    fidp.add_argument("--out", required=True, type=Path, metavar="fid.json", help="where to write it")
    fidp.add_argument("--weights", type=Path, default=None, metavar="PATH", help=weights_help)
    fidp.add_argument("--batch", type=int, default=64, metavar="N",
                      help="images per forward (default: %(default)s)")
    fidp.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    fidp.set_defaults(handler=_fid)

    fetch = verbs.add_parser(
        "fetch-weights", help="download both Inception weight files (on a machine with internet)",
        description="Download pytorch-fid's pt_inception-2015-12-05-6726825d.pth and clean-fid's "
                    "inception-2015-12-05.pt into DIR; copy DIR to offline compute nodes and pass "
                    "--weights DIR. With --random-seed, write seeded RANDOM weights under the same "
                    "names instead (tests and the smoke scale; every result says so).")
    fetch.add_argument("--to", required=True, type=Path, metavar="DIR", help="where to put them")
    fetch.add_argument("--random-seed", type=int, default=None, metavar="S",
                       help="write random weights of seed S instead of downloading")
    fetch.set_defaults(handler=_fetch_weights)

    clf = verbs.add_parser(
        "train-classifier", help="train the digits classifier of the demo's classifier FID",
        description="Train a small CNN on a stratified 75% split of scikit-learn's 8x8 digits "
                    "(seconds on a CPU), report its test accuracy, and write its state_dict and "
                    "config; its penultimate layer is the `classifier` FID backend's features.")
    clf.add_argument("--out", required=True, type=Path, metavar="classifier.pt", help="where to write it")
    clf.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    clf.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    clf.set_defaults(handler=_train_classifier)

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
    launch.set_defaults(handler=_launch)

    profiles = verbs.add_parser(
        "profiles", help="link the Snakemake profiles into ~/.config/snakemake",
        description="Symlink cluster_profiles/local and cluster_profiles/slurm into Snakemake's "
                    "per-user profile folder, so that `snakemake --profile slurm` finds them.")
    profiles.add_argument("action", choices=["install"])
    profiles.add_argument("--to", type=Path, default=None, metavar="DIR",
                          help="profile folder (default: $XDG_CONFIG_HOME/snakemake or "
                               "~/.config/snakemake)")
    profiles.set_defaults(handler=_profiles)
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
    finally:
        # Leave the process group before exit: a rank that exits inside it (gloo's threads still
        # up) can be aborted by std::terminate, failing the whole torchrun job.
        if "fdrl.distributed" in sys.modules:
            sys.modules["fdrl.distributed"].shutdown()
