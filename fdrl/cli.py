"""The `fdrl` command: one verb per pipeline stage, each usable on its own.

Each verb is a parser function beside the handler it calls; options that several verbs share
(`--device`, `--batch`, `--weights`, `--shards`, `--set`, ...) are defined once below. Building
the parser imports only `fdrl.names`, so `fdrl --help` and argument errors never wait for torch;
a handler imports its stage when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fdrl import __version__, names
from fdrl.errors import FdrlError

# --- options that several verbs share -----------------------------------------------------------

_SHARED = {
    "device": (("--device",), dict(choices=("cpu", "cuda"), default=None,
                                   help="default: cuda if available")),
    "batch": (("--batch",), dict(type=int, default=64, metavar="N",
                                 help="images per forward (default: %(default)s)")),
    "workers": (("--workers",), dict(type=int, default=0, metavar="W",
                                     help="DataLoader workers per rank (default: %(default)s)")),
    "shards": (("--shards",), dict(required=True, nargs="+", metavar="SHARDS", help=(
        "a shard folder (or its manifest.json), or .tar files of one folder"))),
    "set": (("--set",), dict(action="append", default=[], metavar="KEY=VALUE",
                             help="set one key (repeatable; VALUE is read as YAML: lists as [1, 2])")),
    "backend": (("--backend",), dict(required=True, choices=names.FID_BACKENDS, help=(
        "pytorch-fid (Inception pool3), clean-fid (mode clean), or classifier (the digits "
        "classifier's features: a classifier FID, not an Inception FID)"))),
    "weights": (("--weights",), dict(type=Path, default=None, metavar="PATH", help=(
        "pytorch-fid / clean-fid: the Inception weights file, or a folder holding it (as `fdrl "
        "fetch-weights` writes; default: the library's cache); classifier: the file of `fdrl "
        "train-classifier` (required)"))),
}


def _verb(verbs, name: str, handler, help: str, description: str, out: str | None,
          out_help: str = "where to write it", shared: tuple[str, ...] = (),
          changes: dict | None = None, **kwargs) -> argparse.ArgumentParser:
    """A verb's parser: `--out OUT` (unless None), the shared options it takes (`changes` alters
    their settings, e.g. {"batch": {"default": 256}}), and the handler it runs."""
    parser = verbs.add_parser(name, help=help, description=description, **kwargs)
    parser.set_defaults(handler=handler)
    if out is not None:
        parser.add_argument("--out", required=True, type=Path, metavar=out, help=out_help)
    for option in shared:
        flags, settings = _SHARED[option]
        parser.add_argument(*flags, **{**settings, **(changes or {}).get(option, {})})
    return parser


# --- tables, figures and the 2-D experiments -----------------------------------------------------

def _table_parser(verbs) -> None:
    p = _verb(verbs, "table", _table, "write one of the paper's tables as CSV",
              "Write a table as CSV: table1 from the FID results of `fdrl fid` (plus the paper's "
              "cited rows), table2 and table3 from the code, toy from the metrics.json files of "
              "`fdrl toy`.", out="FILE.csv")
    p.add_argument("name", choices=names.TABLES, help="which table")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files the table is built from")


def _table(args: argparse.Namespace) -> None:
    from fdrl.tables import TABLES, write_csv

    write_csv(TABLES[args.name](args.inputs), args.out)


def _figure_parser(verbs) -> None:
    p = _verb(verbs, "figure", _figure, "draw one of the paper's figures",
              "Draw a figure from the files its experiments wrote. Inputs: fig2, fig3, fig10: "
              "`fdrl toy` samples.npz files, in panel order; fig11: prior.pt files; fig4: sample "
              "chunks of one run; fig5: FID results of one run at several flow lengths; fig8, "
              "fig9: a trained run folder; fig12: a sample chunk and the training shard folder "
              "(with --backend).", out="FILE.png",
              shared=("backend", "weights", "device"), changes={
                  "backend": {"required": False, "help": "fig12: the feature space of its panel (a)"},
                  "weights": {"help": "fig12: the backend's weights (as fdrl fid)"},
                  "device": {"help": "fig8, fig9, fig12: default cuda if available"}})
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


def _toy_parser(verbs, full_help: bool) -> None:
    epilog = "`fdrl toy --help` lists the keys of --set."
    if full_help:  # the keys come from the experiments' dataclasses, which import torch
        from fdrl.toy import keys_help

        epilog = keys_help()
    p = _verb(verbs, "toy", _toy, "run one of the paper's 2-D experiments (Figs. 2, 3, 10)",
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


# --- data: shards and the data-dependent prior ---------------------------------------------------

def _shard_parser(verbs) -> None:
    p = _verb(verbs, "shard", _shard, "convert a dataset to WebDataset shards",
              "Write a dataset's preprocessed images as WebDataset tar shards (PNG + label) with a "
              "manifest.json; re-running writes identical bytes.", out="DIR", out_help="shard folder",
              shared=("workers",), changes={"workers": {
                  "default": 1, "help": "processes writing shards in parallel (default: %(default)s)"}})
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="digits, cifar10, celeba, lsun_church, cat2dog_{trainA,trainB,testA,testB}")
    p.add_argument("--data-root", required=True, type=Path, metavar="DIR",
                   help="where the dataset is staged (unused for digits)")
    p.add_argument("--shard-size", type=int, default=10_000, metavar="N",
                   help="images per shard (default: %(default)s)")


def _shard(args: argparse.Namespace) -> None:
    from fdrl.shards import shard

    m = shard(args.dataset, args.data_root, args.out, args.shard_size, args.workers)
    print(f"{m['dataset']}: {m['count']} images of shape {tuple(m['shape'])} in "
          f"{len(m['shards'])} shards at {args.out}")


def _fit_prior_parser(verbs) -> None:
    p = _verb(verbs, "fit-prior", _fit_prior,
              "fit the data-dependent prior (Eq. 8); runs under torchrun too",
              "Fit N(mu_D, Sigma_D + 1e-4 I) to the images of the shards by a distributed float64 "
              "moment reduction; rank 0 writes prior.pt (plain tensors).",
              out="prior.pt", shared=("shards", "workers", "device"))
    p.add_argument("--block-rows", type=int, default=None, metavar="R",
                   help="accumulate x x^T R rows at a time (default: all at once, in place)")
    p.add_argument("--moments-out", type=Path, default=None, metavar="FILE.pt",
                   help="also write the float64 mean and covariance")


def _fit_prior(args: argparse.Namespace) -> None:
    from fdrl.prior_fit import fit_prior

    prior = fit_prior(args.shards, args.out, args.block_rows, args.workers, args.device,
                      args.moments_out)
    if prior is not None:
        print(f"prior of {prior.count} images of shape {prior.shape} written to {args.out}")


# --- training, generation and launching ----------------------------------------------------------

def _train_parser(verbs) -> None:
    p = _verb(verbs, "train", _train, "train one FDRL run (Algorithm 1); runs under torchrun too",
              "Train the run RUN.yaml describes into RUN_DIR: config.yaml, metrics.jsonl, "
              "samples/, checkpoints/step-NNNNNN.pt, final.pt (EMA weights). One process, or "
              "`torchrun --nproc_per_node N -m fdrl train ...`: the weights do not depend on the "
              "number of processes. Keys of RUN.yaml: see fdrl.config.TrainConfig.",
              out="RUN_DIR", out_help="run folder", shared=("set", "device"))
    p.add_argument("--config", type=Path, default=None, metavar="RUN.yaml",
                   help="the run's settings (optional with --set)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N steps in all instead of the config's steps; the lr "
                        "schedule stays that of the config's steps")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="checkpoint every N steps (default: the config's)")
    p.add_argument("--resume", choices=["auto", "never"], default="auto",
                   help="auto: continue from the newest checkpoint in RUN_DIR, if any; never: "
                        "start fresh, refusing a RUN_DIR that holds checkpoints (default: %(default)s)")


def _train(args: argparse.Namespace) -> None:
    from fdrl.config import load_config
    from fdrl.train import train

    sets = args.set + ([] if args.checkpoint_every is None else
                       [f"checkpoint_every={args.checkpoint_every}"])
    cfg = load_config(args.config, sets, run_dir=args.out, max_steps=args.max_steps)
    train(cfg, args.out, args.resume, args.device)


def _sample_parser(verbs) -> None:
    p = _verb(verbs, "sample", _sample,
              "generate images with a trained run (Algorithm 2); runs under torchrun too",
              "Flow prior samples K + kappa steps with the run's EMA weights, clamp to [-1, 1], "
              "and write uint8 NHWC images with their seeds to a .npz chunk. Image i depends on "
              "seed i alone.", out="chunk.npz", shared=("batch", "device"),
              changes={"batch": {"default": 256}})
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="a trained run")
    p.add_argument("--seeds", required=True, metavar="SEEDS", help="e.g. 0-999 or 0-9,20")
    p.add_argument("--steps", type=int, default=None, metavar="K+kappa",
                   help="flow steps (default: the run's sample_steps)")


def _sample(args: argparse.Namespace) -> None:
    from fdrl.sampling import parse_seeds, sample

    sample(args.run, parse_seeds(args.seeds), args.out, args.batch, args.steps, args.device)


def _launch_parser(verbs) -> None:
    p = _verb(verbs, "launch", _launch, "run a verb on several processes: torchrun here, or a SLURM job",
              "Run `fdrl VERB ARGS` on several processes: with torchrun on this machine, or as one "
              "submitit job (one task per GPU on every node) that requeues on preemption or "
              "time-out and resumes from the newest checkpoint.", out=None,
              usage="fdrl launch [options] -- VERB ARGS...")
    p.add_argument("--launcher", choices=["torchrun", "submitit"], default="torchrun",
                   help="default: %(default)s")
    d = "default: %(default)s"
    for flag, kind, default, metavar, help in (  # what the job asks for (fdrl.launch.Resources)
            ("--nodes", int, 1, "N", d), ("--gpus-per-node", int, 0, "G", f"one process per GPU; {d}"),
            ("--nproc", int, 1, "N", f"processes per node without GPUs; {d}"),
            ("--cpus-per-task", int, 4, "C", d), ("--mem-gb", float, 32, "GB", f"per node; {d}"),
            ("--time", int, 60, "MIN", f"SLURM time limit in minutes; {d}"),
            ("--partition", str, None, "P", "SLURM partition (default: the cluster's)"),
            ("--account", str, None, "A", "SLURM account (default: the cluster's)"),
            ("--max-requeues", int, 10, "N", d)):
        p.add_argument(flag, type=kind, default=default, metavar=metavar, help=help)
    p.add_argument("--cluster", choices=["slurm", "local"], default=None,
                   help="submitit's cluster (default: SLURM if sbatch is on PATH, else local)")
    p.add_argument("--folder", type=Path, default=None, metavar="DIR",
                   help="submitit's logs and job files (default: ./submitit)")
    p.add_argument("--no-wait", action="store_true", help="submit and return at once")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- VERB ARGS",
                   help="the fdrl verb to run and its arguments")


def _launch(args: argparse.Namespace) -> int:
    from fdrl.launch import Resources, launch

    res = Resources(args.nodes, args.gpus_per_node, args.nproc, args.cpus_per_task, args.mem_gb,
                    args.time, args.partition, args.account, args.max_requeues)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return launch(main, argv, res, args.launcher, args.folder, args.cluster, not args.no_wait)


# --- FID ----------------------------------------------------------------------------------------

def _fid_ref_parser(verbs) -> None:
    _verb(verbs, "fid-ref", _fid_ref,
          "FID reference statistics of a dataset's shards; runs under torchrun too",
          "Features of every image of the shards (each once, split over ranks), their mean and "
          "covariance (float64); rank 0 writes an .npz with mu, sigma, count and the backend, "
          "feature extractor and weights' SHA-256 that made them.",
          out="ref.npz",
          shared=("shards", "backend", "weights", "batch", "workers", "device"))


def _fid_ref(args: argparse.Namespace) -> None:
    from fdrl.fid import fid_ref

    meta = fid_ref(args.shards, args.backend, args.out, args.weights, args.batch, args.workers,
                   args.device)
    if meta is not None:
        print(f"{args.backend} reference statistics of {meta['n_images']} images "
              f"({meta['feature_extractor']}) written to {args.out}")


def _fid_parser(verbs) -> None:
    p = _verb(verbs, "fid", _fid,
              "FID of sample chunks against reference statistics; runs under torchrun too",
              "Features of the images of the .npz chunks, their Frechet distance to the reference "
              "(float64); rank 0 writes JSON: fid, backend, feature extractor, weights and SHA-256, "
              "n_images, reference. A reference made by another backend, extractor or weights "
              "file is refused.", out="fid.json",
              shared=("backend", "weights", "batch", "device"))
    p.add_argument("--samples", required=True, nargs="+", metavar="CHUNK.npz",
                   help="chunks of `fdrl sample` (uint8 NHWC images, seeds)")
    p.add_argument("--ref", required=True, type=Path, metavar="ref.npz", help="of `fdrl fid-ref`")


def _fid(args: argparse.Namespace) -> None:
    from fdrl.fid import fid

    result = fid(args.samples, args.ref, args.backend, args.out, args.weights, args.batch, args.device)
    if result is not None:
        print(f"FID {result['fid']:.4f} ({result['feature_extractor']}; {result['n_images']} "
              f"images against {args.ref}) written to {args.out}")


def _fetch_weights_parser(verbs) -> None:
    p = _verb(verbs, "fetch-weights", _fetch_weights,
              "download both Inception weight files (on a machine with internet)",
              "Download pytorch-fid's pt_inception-2015-12-05-6726825d.pth and clean-fid's "
              "inception-2015-12-05.pt into DIR; copy DIR to offline compute nodes and pass "
              "--weights DIR. With --random-seed, write seeded RANDOM weights under the same names "
              "instead (tests and the smoke scale; every result says so).", out=None)
    p.add_argument("--to", required=True, type=Path, metavar="DIR", help="where to put them")
    p.add_argument("--random-seed", type=int, default=None, metavar="S",
                   help="write random weights of seed S instead of downloading")


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


def _train_classifier_parser(verbs) -> None:
    p = _verb(verbs, "train-classifier", _train_classifier,
              "train the digits classifier of the demo's classifier FID",
              "Train a small CNN on a stratified 75% split of scikit-learn's 8x8 digits (seconds "
              "on a CPU), report its test accuracy, and write its state_dict and config; its "
              "penultimate layer is the `classifier` FID backend's features.",
              out="classifier.pt")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")


def _train_classifier(args: argparse.Namespace) -> None:
    from fdrl.classifier import train_classifier

    c = train_classifier(args.out, args.seed, args.epochs)
    print(f"digits classifier: test accuracy {c['test_accuracy']:.4f} on {c['test_size']} held-out "
          f"images ({c['train_size']} for training), written to {args.out}")


# --- the Snakemake profiles ---------------------------------------------------------------------

def _profiles_parser(verbs) -> None:
    p = _verb(verbs, "profiles", _profiles, "link the Snakemake profiles into ~/.config/snakemake",
              "Symlink cluster_profiles/local and cluster_profiles/slurm into Snakemake's per-user "
              "profile folder, so that `snakemake --profile slurm` finds them.", out=None)
    p.add_argument("action", choices=["install"])
    p.add_argument("--to", type=Path, default=None, metavar="DIR",
                   help="profile folder (default: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake)")


def _profiles(args: argparse.Namespace) -> None:
    from fdrl.profiles import install

    for link in install(args.to):
        print(f"{link} -> {link.resolve()}")


# --- the command --------------------------------------------------------------------------------

VERB_PARSERS = (_table_parser, _figure_parser, _toy_parser, _shard_parser, _fit_prior_parser,
                _train_parser, _sample_parser, _fid_ref_parser, _fid_parser, _fetch_weights_parser,
                _train_classifier_parser, _launch_parser, _profiles_parser)


def parser(full_help: bool = False) -> argparse.ArgumentParser:
    """The argument parser of every verb (`full_help` adds the toy keys, which import torch)."""
    top = argparse.ArgumentParser(prog="fdrl", description="Flow-Guided Density Ratio Learning: "
                                  "the paper's pipeline, verb by verb.")
    top.add_argument("--version", action="version", version=f"fdrl {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERB_PARSERS:
        add(verbs, full_help) if add is _toy_parser else add(verbs)
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
