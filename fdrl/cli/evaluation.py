"""Verbs of the evaluation stage: `fid-ref`, `fid`, `classify`, `fetch-weights` and
`train-classifier`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl.cli.options import verb


def fid_ref_parser(verbs) -> None:
    verb(verbs, "fid-ref", _fid_ref,
         "FID reference statistics of a dataset's shards; runs under torchrun too",
         "Features of every image of the shards (each once, split over ranks, through every "
         "backend), their mean and covariance (float64); rank 0 writes an .npz per backend with "
         "mu, sigma, count and the backend, feature extractor and weights' SHA-256 that made them.",
         out="ref.npz", per_backend=True,
         shared=("shards", "backend", "weights", "batch", "workers", "device", "precision",
                 "channels_last"))


def _fid_ref(args: argparse.Namespace) -> None:
    from fdrl.features import weights_by_backend
    from fdrl.fid import fid_ref
    from fdrl.precision import Precision

    metas = fid_ref(args.shards, args.backend, args.out,
                    weights_by_backend(args.backend, args.weights or ()), args.batch, args.workers,
                    args.device, Precision(args.precision, args.channels_last))
    for backend, meta, out in zip(args.backend, metas or (), args.out):
        print(f"{backend} reference statistics of {meta['n_images']} images "
              f"({meta['feature_extractor']}) written to {out}")


def fid_parser(verbs) -> None:
    p = verb(verbs, "fid", _fid,
             "FID of sample chunks (or held-out real images) against reference statistics; runs "
             "under torchrun too",
             "Features of the images of the .npz chunks, or of a held-out split's shards (what "
             "real images score: the metric's floor), through every backend (each image read "
             "once), their Frechet distance to the backend's reference (float64); rank 0 writes "
             "JSON per backend: fid, backend, feature extractor, weights and SHA-256, n_images, "
             "reference. A reference made by another backend, extractor or weights file, or in "
             "another precision, is refused. Features are float32 by default, as the FID "
             "protocol computes them.", out="fid.json", per_backend=True,
             shared=("backend", "weights", "batch", "device", "precision", "channels_last"))
    images = p.add_mutually_exclusive_group(required=True)
    images.add_argument("--samples", nargs="+", metavar="CHUNK.npz",
                        help="chunks of `fdrl sample` (uint8 NHWC images, seeds)")
    images.add_argument("--shards", nargs="+", metavar="SHARDS",
                        help="a held-out split's shard folder (digits_test, cifar10_test, ...), "
                             "or .tar files of it")
    p.add_argument("--ref", required=True, nargs="+", type=Path, metavar="ref.npz",
                   help="of `fdrl fid-ref`: one per --backend, in the same order")


def _fid(args: argparse.Namespace) -> None:
    from fdrl.features import weights_by_backend
    from fdrl.fid import fid
    from fdrl.precision import Precision

    results = fid(args.ref, args.backend, args.out, args.samples or (), args.shards or (),
                  weights_by_backend(args.backend, args.weights or ()), args.batch, args.device,
                  Precision(args.precision, args.channels_last))
    for result, ref, out in zip(results or (), args.ref, args.out):
        print(f"FID {result['fid']:.4f} ({result['feature_extractor']}; {result['n_images']} "
              f"images against {ref}) written to {out}")


def classify_parser(verbs) -> None:
    p = verb(verbs, "classify", _classify,
             "the digits classifier's accuracy and per-class classifier FID of labelled images",
             "Classify the images of sample chunks (conditional samples and translations carry "
             "labels) or of a labelled shard folder with a `fdrl train-classifier` file: accuracy "
             "against the labels and the fraction assigned to each class; with --real, each "
             "class's classifier FID against the real images of that class. Writes JSON.",
             out="result.json")
    images = p.add_mutually_exclusive_group(required=True)
    images.add_argument("--samples", nargs="+", metavar="CHUNK.npz", help="chunks of one setting")
    images.add_argument("--shards", type=Path, metavar="SHARDS", help="a labelled shard folder")
    p.add_argument("--classifier", required=True, type=Path, metavar="FILE",
                   help="of `fdrl train-classifier` (the ordinary one: the measure, not a guide)")
    p.add_argument("--real", type=Path, default=None, metavar="SHARDS",
                   help="real images whose classes the per-class FID compares with")
    p.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="per-class FID of the first N images of each class by seed (default: all)")


def _classify(args: argparse.Namespace) -> None:
    from fdrl.class_metrics import classify

    r = classify(args.classifier, args.out, args.samples or (), args.shards, args.real,
                 args.per_class)
    accuracy = "unlabelled" if r["accuracy"] is None else f"accuracy {r['accuracy']:.4f}"
    print(f"{r['n_images']} images, {accuracy}, written to {args.out}")


def fetch_weights_parser(verbs) -> None:
    p = verb(verbs, "fetch-weights", _fetch_weights,
             "download the Inception weight files (on a machine with internet)",
             "Download pytorch-fid's pt_inception-2015-12-05-6726825d.pth, clean-fid's "
             "inception-2015-12-05.pt and torchvision's inception_v3_google-0cc3c7bd.pth into "
             "DIR; copy DIR to offline compute nodes and pass "
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


def train_classifier_parser(verbs) -> None:
    p = verb(verbs, "train-classifier", _train_classifier,
             "train the digits classifier of the demo's classifier FID",
             "Train a small CNN on the training split of scikit-learn's 8x8 digits (seconds on a "
             "CPU), report its accuracy on the held-out digits_test, and write its state_dict and config; its "
             "penultimate layer is the `classifier` FID backend's features.",
             out="classifier.pt")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    p.add_argument("--robust-eps", type=float, default=0.0, metavar="EPS",
                   help="train adversarially against L2 PGD of this radius in [-1, 1] pixel units: "
                        "a guide for class-conditional sampling (default: %(default)s, standard)")
    p.add_argument("--pgd-steps", type=int, default=7, metavar="N",
                   help="PGD steps per training batch (default: %(default)s)")


def _train_classifier(args: argparse.Namespace) -> None:
    from fdrl.classifier import train_classifier

    c = train_classifier(args.out, args.seed, args.epochs, robust_eps=args.robust_eps,
                         pgd_steps=args.pgd_steps)
    robust = (f", {c['robust_test_accuracy']:.4f} under L2 PGD of radius {c['robust_eps']:g}"
              if c["robust_eps"] else "")
    print(f"digits classifier: test accuracy {c['test_accuracy']:.4f}{robust} on {c['test_size']} "
          f"held-out images ({c['train_size']} for training), written to {args.out}")
