"""The paper's tables as CSV, computed from the code (Table 2, Table 3)."""

from __future__ import annotations

import csv
import io
import os
from typing import Callable

import torch

from fdrl.divergences import DIVERGENCES, max_abs_error
from fdrl.io import write_text_atomic
from fdrl.nets import RESNETS, build_resnet, count_parameters

# Network outputs at which Table 2's f' is checked against df/dr: r from 2e-9 to 5e8 for LR.
CHECK_OUTPUTS = torch.linspace(-20.0, 20.0, 4001, dtype=torch.float64)


def table2() -> list[dict]:
    """Table 2: f and f' of each divergence, its Bregman loss, and the measured |f' - df/dr|."""
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


def table3() -> list[dict]:
    """Table 3: each network's layer list and the parameter count of the class as built."""
    rows = []
    for name, spec in RESNETS.items():
        net = build_resnet(name)
        rows.append({
            "network": name,
            "image_size": spec.image_size,
            "layers": "; ".join(net.describe()),
            "parameters": count_parameters(net),
        })
    return rows


TABLES: dict[str, Callable[[], list[dict]]] = {"table2": table2, "table3": table3}


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Writes rows (dicts sharing their keys) as CSV with a header, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
