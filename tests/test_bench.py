"""bench/compare_reference.py: our training step against the authors' released code.

The comparison needs a checkout of the authors' code (github.com/ajrheng/FDRL), which the project
never ships: FDRL_REFERENCE names one; without it that test is skipped.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fdrl.divergences import pairing
from fdrl.nets import build_network

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "compare_reference.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REFERENCE = Path(os.environ.get("FDRL_REFERENCE", "/nonexistent"))
REFERENCE = REFERENCE if (REFERENCE / "src" / "models.py").is_file() else None


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=600)


@pytest.mark.skipif(REFERENCE is None, reason="no checkout of the authors' FDRL code: set "
                    "FDRL_REFERENCE to one (git clone https://github.com/ajrheng/FDRL)")
@pytest.mark.slow  # ResNet32, the authors' smallest network: ~30 s on 2 busy cores
def test_compare_reference_times_both_and_the_floor(tmp_path):
    # fp32 and channels-last only: a CPU without bf16 units emulates bf16, some 10x slower.
    proc = run_script("--reference", str(REFERENCE), "--device", "cpu", "--batch", "2",
                      "--flow-steps", "1", "--steps", "1", "--warmup", "0", "--rounds", "1",
                      "--precisions", "fp32,fp32+cl", "--sample-images", "2", "--sample-batch",
                      "2", "--sample-steps", "1", "--matmul-size", "256", "--json",
                      str(tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "out.json").read_text()) == record
    assert record["parameters"]["authors"] == record["parameters"]["ours"] > 0
    assert set(record["speedup_authors_over_ours"]) == {"fp32", "fp32+cl"}
    assert all(r > 0 for r in record["speedup_authors_over_ours"].values())
    assert record["fastest_precision"] in ("fp32", "fp32+cl")
    assert record["flops_per_step"] > 0 and record["sampling"]["images"] == 2
    # No step reaches the peak of a plain matmul: it is more than convolutions, and these are
    # smaller and less regular than the matmul that measured the peak.
    assert all(m > 1 for m in record["multiple_of_floor"].values()), record["multiple_of_floor"]


def test_a_wrong_reference_is_one_sentence(tmp_path):
    proc = run_script("--reference", str(tmp_path), "--device", "cpu")
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert str(tmp_path) in line and "must contain src/models.py" in line


def test_each_flow_step_costs_two_forwards_and_input_gradients():
    sys.path.insert(0, str(SCRIPT.parent))  # as running the script puts its folder first
    spec = importlib.util.spec_from_file_location("compare_reference", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net = build_network("resnet8", in_channels=1, spectral_norm=False, self_attention=False)
    x = 2 * torch.rand(2, 1, 8, 8) - 1
    with FlopCounterMode(display=False) as counter:
        net(x[:1])
    forward = counter.get_total_flops()
    flops = [bench.step_flops(net, pairing("lsif-pearson"), x, x, k) for k in (0, 1, 2)]
    # A flow step runs the network forward on both prior samples and takes the gradient with
    # respect to the input: for convolutions and dense layers that costs what the forward does.
    assert flops[2] - flops[1] == flops[1] - flops[0] == 4 * forward > 0


def test_flow_capture_times_the_eager_flow_and_refuses_a_graph_without_cuda(tmp_path):
    """bench/flow_capture.py on the CPU (its compile way takes a minute, its graph way CUDA)."""
    script = REPO / "bench" / "flow_capture.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--network",
                           "mlp_digits", "--channels", "1", "--batch", "4", "--flow-steps", "3",
                           "--rounds", "2", "--ways", "eager", "--json", str(tmp_path / "out.json")],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["flow_steps"] == 3 and len(record["seconds_per_flow"]["eager"]) == 2
    assert record["drift_relative_difference_from_eager"] == {"eager": 0.0}
    assert record["cudnn_benchmark"] is None  # cuDNN's autotuning is CUDA's alone
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--ways", "graph"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "a CUDA graph needs CUDA" in proc.stderr
