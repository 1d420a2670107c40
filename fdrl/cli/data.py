"""Verbs of the data stage: `shard` (a dataset to WebDataset shards) and `fit-prior` (Eq. 8)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl.cli.options import verb


def shard_parser(verbs) -> None:
    p = verb(verbs, "shard", _shard, "convert a dataset to WebDataset shards",
             "Write a dataset's preprocessed images as WebDataset tar shards (PNG + label) with a "
             "manifest.json; re-running writes identical bytes.", out="DIR", out_help="shard folder",
             shared=("workers",), changes={"workers": {
                 "default": 1, "help": "processes writing shards in parallel (default: %(default)s)"}})
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help="digits, digits_blur, cifar10, celeba, lsun_church, cat2dog_{trainA,trainB}, or a "
                        "held-out split: digits_test, digits_blur_test, cifar10_test, "
                        "cat2dog_{testA,testB}")
    p.add_argument("--data-root", required=True, type=Path, metavar="DIR",
                   help="where the dataset is staged (unused for digits)")
    p.add_argument("--shard-size", type=int, default=10_000, metavar="N",
                   help="images per shard (default: %(default)s)")


def _shard(args: argparse.Namespace) -> None:
    from fdrl.shards import shard

    m = shard(args.dataset, args.data_root, args.out, args.shard_size, args.workers)
    print(f"{m['dataset']}: {m['count']} images of shape {tuple(m['shape'])} in "
          f"{len(m['shards'])} shards at {args.out}")


def fit_prior_parser(verbs) -> None:
    p = verb(verbs, "fit-prior", _fit_prior,
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
