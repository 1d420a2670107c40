"""How much quantizing samples to uint8 moves FID: the same samples fed as floats and as uint8.

    python bench/fid_quantization.py --run RUN_DIR --ref fid_ref_B.npz --backend B \\
        [--weights W] [--seeds 0-1999] [--device cpu]

The authors fed their FID network the clamped float samples; sample chunks hold uint8 images
(as PNG files do, and as pytorch-fid's and clean-fid's own pipelines read them). This draws the
seeds' samples once with the run's EMA weights (Algorithm 2) and measures FID against the
reference twice: from the float images (scaled to [0, 255], not rounded) and from the same
images rounded to uint8, as `fdrl sample` stores them. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

from fdrl.distributed import pick_device
from fdrl.features import load_extractor
from fdrl.fid import check_reference, distance_to_reference, load_reference
from fdrl.moments import Moments
from fdrl.names import FID_BACKENDS
from fdrl.sampling import Sampler, parse_seeds


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained run folder (holding final.pt)")
    p.add_argument("--ref", required=True, help="reference statistics of `fdrl fid-ref`")
    p.add_argument("--backend", required=True, choices=FID_BACKENDS)
    p.add_argument("--weights", default=None, help="the backend's weights (as `fdrl fid`)")
    p.add_argument("--seeds", default="0-1999", help="default: %(default)s")
    p.add_argument("--batch", type=int, default=250, help="default: %(default)s")
    p.add_argument("--device", default=None, help="default: cuda if available")
    return p.parse_args()


def main() -> None:
    args = parse()
    device = pick_device(args.device)
    sampler = Sampler.load(args.run, device)
    extractor = load_extractor(args.backend, args.weights, device)
    ref = load_reference(args.ref)
    check_reference(ref, args.ref, args.backend, extractor)
    seeds = parse_seeds(args.seeds)
    floats, rounded = Moments(extractor.dim, device), Moments(extractor.dim, device)
    for start in range(0, len(seeds), args.batch):  # the flow needs autograd: no no_grad here
        x = (sampler.generate(seeds[start:start + args.batch]) + 1) * 127.5  # [0, 255]
        floats.add(extractor(x))
        rounded.add(extractor(x.round()))  # what a sample chunk holds
    fid_float, fid_uint8 = distance_to_reference(floats, ref), distance_to_reference(rounded, ref)
    print(json.dumps({"run": sampler.run_info["run"], "backend": args.backend,
                      "feature_extractor": extractor.name, "n_images": len(seeds),
                      "reference_n_images": ref["count"], "fid_float": fid_float,
                      "fid_uint8": fid_uint8, "relative_change": fid_uint8 / fid_float - 1}))


if __name__ == "__main__":
    main()
