"""Options that several verbs of the `fdrl` command share, defined once, and the helper that
builds a verb's parser from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from fdrl import names

def positive_int(text: str) -> int:
    """An argparse type: a positive integer (a batch of 0 images never ends)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


SHARED = {
    "device": (("--device",), dict(choices=("cpu", "cuda"), default=None,
                                   help="default: cuda if available")),
    "batch": (("--batch",), dict(type=positive_int, default=64, metavar="N",
                                 help="images per forward (default: %(default)s)")),
    "workers": (("--workers",), dict(type=int, default=0, metavar="W",
                                     help="DataLoader workers per rank (default: %(default)s)")),
    "shards": (("--shards",), dict(required=True, nargs="+", metavar="SHARDS", help=(
        "a shard folder (or its manifest.json), or .tar files of one folder"))),
    "set": (("--set",), dict(action="append", default=[], metavar="KEY=VALUE",
                             help="set one key (repeatable; VALUE is read as YAML: lists as [1, 2])")),
    "backend": (("--backend",), dict(required=True, choices=names.FID_BACKENDS, help=(
        "torchvision-inception (the authors' protocol: torchvision's ImageNet Inception), "
        "pytorch-fid (TF-FID Inception pool3), clean-fid (mode clean), or classifier (the digits "
        "classifier's features: a classifier FID, not an Inception FID)"))),
    "precision": (("--precision",), dict(choices=names.PRECISIONS, default="fp32", help=(
        "the network's arithmetic: fp32, or bf16 autocast (fast on GPUs and on CPUs with AMX or "
        "AVX-512 bf16, slow elsewhere; default: %(default)s)"))),
    "channels_last": (("--channels-last",), dict(action=argparse.BooleanOptionalAction,
                                                 default=False, help=(
        "NHWC memory order for the network's weights and images (default: %(default)s)"))),
    "weights": (("--weights",), dict(type=Path, default=None, metavar="PATH", help=(
        "an Inception backend: its weights file, or a folder holding it (as `fdrl fetch-weights` "
        "writes; default: the library's cache); classifier: the file of `fdrl train-classifier` "
        "(required)"))),
}

# What `per_backend` verbs change in the shared options.
PER_BACKEND = {
    "backend": {"nargs": "+", "metavar": "BACKEND", "help": (
        "one or more of: " + SHARED["backend"][1]["help"] + "; each image is read once for all")},
    "weights": {"type": str, "action": "append", "metavar": "[BACKEND=]PATH", "help": (
        "BACKEND=PATH: that backend's weights (repeatable); a plain PATH: every other backend's. "
        "An Inception backend's: its weights file, or a folder holding it (as `fdrl "
        "fetch-weights` writes; default: the library's cache); classifier's: the file of `fdrl "
        "train-classifier` (required)")},
}


def verb(verbs, name: str, handler, help: str, description: str, out: str | None,
         out_help: str = "where to write it", shared: tuple[str, ...] = (),
         changes: dict | None = None, per_backend: bool = False,
         **kwargs) -> argparse.ArgumentParser:
    """A verb's parser: `--out OUT` (unless None), the shared options it takes (`changes` alters
    their settings, e.g. {"batch": {"default": 256}}), and the handler it runs. `per_backend`:
    the verb serves several FID backends at once (`fid`, `fid-ref`): --backend takes several,
    --out one file each, --weights one per backend (BACKEND=PATH) or one for all."""
    parser = verbs.add_parser(name, help=help, description=description, **kwargs)
    parser.set_defaults(handler=handler)
    if per_backend:
        changes = {**PER_BACKEND, **(changes or {})}
    if out is not None:
        many = {"nargs": "+", "help": "one file per --backend, in the same order"} if per_backend else {}
        parser.add_argument("--out", required=True, type=Path, metavar=out,
                            **{"help": out_help, **many})
    for option in shared:
        flags, settings = SHARED[option]
        parser.add_argument(*flags, **{**settings, **(changes or {}).get(option, {})})
    return parser
