"""Readers of the JSON results the stages write, for the tables and figures built from them.

`fdrl fid` writes a FID result (of a run's samples, or of held-out real images), `fdrl classify`
a classification result, `fdrl toy` a metrics.json. Table and figure jobs are many and short, so
nothing here imports torch: its import (about 2 s) would be most of such a job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fdrl.errors import FdrlError


def read_result(path: str | os.PathLike, verb: str) -> dict:
    """The JSON object at `path`, which `verb` (e.g. `fdrl fid`) writes."""
    if not os.path.isfile(path):
        raise FdrlError(f"no result at {path}: run `{verb}` for it first")
    try:
        result = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise FdrlError(f"{path} is not a JSON result of `{verb}` ({err})") from None
    if not isinstance(result, dict):
        raise FdrlError(f"{path} is not a result of `{verb}`: it holds no JSON object")
    return result


def load_fid_result(path: str | os.PathLike) -> dict:
    """A result of `fdrl fid`: of samples made by `fdrl sample` (its `run` names them), or of
    held-out real images (its `held_out` names them)."""
    result = read_result(path, "fdrl fid")
    if not (result.get("run") or result.get("held_out")):
        raise FdrlError(f"{path} names neither a run nor held-out images: its samples were not "
                        "written by `fdrl sample`")
    _require(result, path, "fdrl fid", ("fid", "backend", "feature_extractor", "n_images"))
    return result


def load_classification(path: str | os.PathLike) -> dict:
    """A result of `fdrl classify`."""
    result = read_result(path, "fdrl classify")
    _require(result, path, "fdrl classify", ("classes", "n_images"))
    return result


# What toy.csv shows of each 2-D experiment's metrics.json.
TOY_METRICS = ("experiment", "figure", "pairing", "metric", "value", "prior_value", "expected",
               "meets", "seconds")


def load_toy_metrics(path: str | os.PathLike) -> dict:
    """The metrics.json of a 2-D experiment run by `fdrl toy`."""
    result = read_result(path, "fdrl toy")
    _require(result, path, "fdrl toy", TOY_METRICS)
    return result


def _require(result: dict, path, verb: str, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in result]
    if missing:
        raise FdrlError(f"{path} lacks {', '.join(missing)}: not a result of `{verb}`")
