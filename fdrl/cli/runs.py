"""Verbs that train and generate (`train`, `sample`, `translate`) and that run any verb on several
processes (`launch`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl.cli.options import verb
from fdrl.errors import FdrlError


def train_parser(verbs) -> None:
    p = verb(verbs, "train", _train, "train one FDRL run (Algorithm 1); runs under torchrun too",
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
    p.add_argument("--fork-from", type=Path, default=None, metavar="CHECKPOINT",
                   help="start this new run from another run's checkpoint (weights, EMA, Adam "
                        "moments, step) with this config's settings: lr, eta, data or prior may "
                        "change, the network may not. config.yaml records the checkpoint and its "
                        "SHA-256; a resume needs the option no more")


def _train(args: argparse.Namespace) -> None:
    from fdrl.config import load_config
    from fdrl.train import train

    sets = args.set + ([] if args.checkpoint_every is None else
                       [f"checkpoint_every={args.checkpoint_every}"])
    cfg = load_config(args.config, sets, run_dir=args.out, max_steps=args.max_steps)
    train(cfg, args.out, args.resume, args.device, args.fork_from)


# The options of the verbs that flow images with a trained run (sample, translate): the run's
# own precision and layout unless told otherwise, bigger batches than training's.
FLOWING = dict(shared=("batch", "device", "precision", "channels_last"),
               changes={"batch": {"default": 256},
                        "precision": {"default": None, "help": "fp32 or bf16 (default: the run's)"},
                        "channels_last": {"default": None, "help": "default: the run's"}})


def sample_parser(verbs) -> None:
    p = verb(verbs, "sample", _sample,
             "generate images with a trained run (Algorithm 2); runs under torchrun too",
             "Flow prior samples K + kappa steps with the run's EMA weights, clamp to [-1, 1], "
             "and write uint8 NHWC images with their seeds to a .npz chunk. Image i depends on "
             "seed i alone.", out="chunk.npz",
             **FLOWING)
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="a trained run")
    p.add_argument("--seeds", required=True, metavar="SEEDS", help="e.g. 0-999 or 0-9,20")
    p.add_argument("--steps", default=None, metavar="K+kappa",
                   help="flow steps (default: the run's sample_steps); several, e.g. 0,20,40 "
                        "(Fig. 5), write one chunk each from one flow of the longest: put {steps} "
                        "in --out where each chunk's length goes")
    g = p.add_argument_group("class-conditional sampling (Eq. 31; LR-KL runs)")
    g.add_argument("--guide", type=Path, default=None, metavar="CLASSIFIER",
                   help="a robust classifier: `fdrl train-classifier --robust-eps` (digits) or "
                        "the robustness library's cifar_l2_1_0.pt (CIFAR10)")
    g.add_argument("--classes", default=None, metavar="CLASSES",
                   help="seed i is conditioned on the (i mod n)-th of these, e.g. 0-9 or 3 "
                        "(default: all of the guide's)")
    g.add_argument("--phi", type=float, default=0.1, help="weight of log p(y | x) (default: %(default)s)")
    g.add_argument("--step-factor", type=float, default=1.0, choices=(1.0, 2.0),
                   help="c in x - c eta grad(log r - phi log p(y | x)): 1 as Eq. 9 and the released "
                        "code, 2 as Eq. 31 is printed (default: %(default)s)")


def _sample(args: argparse.Namespace) -> None:
    from fdrl.sampling import parse_seeds, sample, sample_lengths

    if args.guide is None and args.classes is not None:
        raise FdrlError("--classes needs --guide, the classifier that conditions the flow")
    seeds = parse_seeds(args.seeds)
    lengths = None if args.steps is None else parse_seeds(args.steps, "--steps")
    if lengths is not None and (len(lengths) > 1 or "{steps}" in str(args.out)):
        if args.guide is not None:
            raise FdrlError("--guide samples at one flow length; give --steps one number")
        sample_lengths(args.run, seeds, args.out, lengths, args.batch, args.device,
                       args.precision, args.channels_last)
        return
    classes = None if args.classes is None else parse_seeds(args.classes, "--classes")
    sample(args.run, seeds, args.out, args.batch, None if lengths is None else lengths[0],
           args.device, args.precision, args.channels_last, args.guide, classes, args.phi,
           args.step_factor)


def translate_parser(verbs) -> None:
    p = verb(verbs, "translate", _translate,
             "translate source images with a run trained on a source-domain prior (Table 4)",
             "Flow the images of a source shard folder (as stored: no flip, no dequantization) "
             "K + kappa steps with the run's EMA weights, clamp to [-1, 1], and write uint8 NHWC "
             "images with their source index as seed and the source label to a .npz chunk. "
             "Image i depends on source image i and seed i alone.", out="chunk.npz",
             **FLOWING)
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR",
                   help="a run trained with `prior: source`")
    p.add_argument("--source", required=True, type=Path, metavar="SHARDS",
                   help="shard folder of source images (the run's source domain or a held-out "
                        "split of it, e.g. cat2dog_testA)")
    p.add_argument("--images", default=None, metavar="INDICES",
                   help="which source images, e.g. 0-49 (default: all)")
    p.add_argument("--steps", type=int, default=None, metavar="K+kappa",
                   help="flow steps (default: the run's sample_steps)")


def _translate(args: argparse.Namespace) -> None:
    from fdrl.sampling import parse_seeds
    from fdrl.translation import translate

    indices = None if args.images is None else parse_seeds(args.images, "--images")
    translate(args.run, args.source, args.out, indices, args.batch, args.steps, args.device,
              args.precision, args.channels_last)


def launch_parser(verbs) -> None:
    p = verb(verbs, "launch", _launch, "run a verb on several processes: torchrun here, or a SLURM job",
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
    from fdrl.cli import main  # the command itself: each submitit task runs main(ARGV)
    from fdrl.launch import Resources, launch

    res = Resources(args.nodes, args.gpus_per_node, args.nproc, args.cpus_per_task, args.mem_gb,
                    args.time, args.partition, args.account, args.max_requeues)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return launch(main, argv, res, args.launcher, args.folder, args.cluster, not args.no_wait)
