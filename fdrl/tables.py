"""The paper's tables as CSV: Table 2 and Table 3 computed from the code, and toy.csv
collecting the metrics of the 2-D experiments."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable

import torch

from fdrl.divergences import DIVERGENCES, max_abs_error
from fdrl.errors import FdrlError
from fdrl.io import write_text_atomic
from fdrl.nets import RESNETS, build_resnet, count_parameters

# Network outputs at which Table 2's f' is checked against df/dr: r from 2e-9 to 5e8 for LR.
CHECK_OUTPUTS = torch.linspace(-20.0, 20.0, 4001, dtype=torch.float64)


def table2(inputs: list[str]) -> list[dict]:
    """Table 2: f and f' of each divergence, its Bregman loss, and the measured |f' - df/dr|."""
    _no_inputs("table2", inputs)
    return [
        {
            "divergence": d.title,
            "f": d.f_text,
            "f_prime": d.f_prime_text,
            "paired_loss": d.loss.upper(),
            "max_abs_error": f"{max_abs_error(d, CHECK_OUTPUTS):.3e}",
        }
        for d in DIVERGENCES.values()
    ]


def table3(inputs: list[str]) -> list[dict]:
    """Table 3: each network's layer list and the parameter count of the class as built."""
    _no_inputs("table3", inputs)
    rows = []
    for name, spec in RESNETS.items():
        if not spec.in_table3:
            continue
        net = build_resnet(name)
        rows.append({
            "network": name,
            "image_size": spec.image_size,
            "layers": "; ".join(net.describe()),
            "parameters": count_parameters(net),
        })
    return rows


def toy(inputs: list[str]) -> list[dict]:
    """The 2-D experiments' metrics, one row per metrics.json, with the paper's expectation."""
    if not inputs:
        raise FdrlError("the toy table needs the metrics.json files written by `fdrl toy`")
    rows = []
    for path in inputs:
        if not os.path.isfile(path):
            raise FdrlError(f"no metrics file at {path}: run `fdrl toy` for it first")
        m = json.loads(Path(path).read_text())
        rows.append({k: m[k] for k in ("experiment", "figure", "pairing", "metric", "value",
                                       "prior_value", "expected", "meets", "seconds")})
    return rows


def _no_inputs(name: str, inputs: list[str]) -> None:
    if inputs:
        raise FdrlError(f"{name} is computed from the code alone and takes no input files")


TABLES: dict[str, Callable[[list[str]], list[dict]]] = {
    "table2": table2, "table3": table3, "toy": toy,
}


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Writes rows (dicts sharing their keys) as CSV with a header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
