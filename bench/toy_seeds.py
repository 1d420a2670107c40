"""How robust a 2-D experiment's finding is: the same experiment over many seeds.

    python bench/toy_seeds.py fdrl_far [--seeds 0-9] [--jobs 2] [--set KEY=VALUE ...]

Runs `fdrl toy NAME --set seed=S` for each seed, one process per seed (`--jobs` at a time, one
thread each), and prints one JSON line: each seed's metric, the largest, and how many seeds meet
the experiment's bar. Fig. 3's bar (`fdrl_far`, mean error below 0.1) must hold for 10 of 10
seeds; this checks it outside CI, where ten runs of a minute each do not belong.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fdrl.sampling import parse_seeds
from fdrl.toy import EXPERIMENTS


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", choices=EXPERIMENTS, help="a 2-D experiment of `fdrl toy`")
    p.add_argument("--seeds", default="0-9", help="default: %(default)s")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (default: %(default)s)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="further settings, as `fdrl toy --set` takes them")
    return p.parse_args()


def run_seed(name: str, seed: int, assignments: list[str], root: Path) -> dict:
    out = root / f"seed{seed}"
    sets = [arg for a in [*assignments, f"seed={seed}"] for arg in ("--set", a)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "fdrl", "toy", name, "--out", str(out), *sets],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    args = parse()
    seeds = parse_seeds(args.seeds)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        metrics = list(pool.map(lambda s: run_seed(args.name, s, args.assignments, Path(tmp)), seeds))
    values = [m["value"] for m in metrics]
    print(json.dumps({
        "experiment": args.name, "metric": metrics[0]["metric"], "expected": metrics[0]["expected"],
        "settings": args.assignments, "seeds": seeds, "values": [round(v, 4) for v in values],
        "max": round(max(values), 4), "met": sum(m["meets"] for m in metrics), "of": len(seeds),
        "seconds_per_seed": round(sum(m["seconds"] for m in metrics) / len(seeds), 1),
    }))


if __name__ == "__main__":
    main()
