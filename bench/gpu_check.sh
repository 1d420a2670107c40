#!/usr/bin/env bash
# The checks that need a CUDA device, in one run, on one GPU of a node where fdrl is installed:
#
#   bash bench/gpu_check.sh PATH/TO/FDRL [OUT_DIR] [compare_reference options...]
#
# 1. the tests marked `gpu` (tests/test_cuda.py, and the CUDA half of every test that takes the
#    `device` fixture): the flow, training, resuming, sampling and the Inception features on CUDA
#    against the CPU;
# 2. bench/compare_reference.py on CUDA: our training step in fp32, fp32 + channels-last, bf16 and
#    bf16 + channels-last against the authors' code (PATH/TO/FDRL, a checkout of
#    github.com/ajrheng/FDRL) at the paper's CIFAR-10 settings (ResNet32, batch 64, K = 100), the
#    multiple of the bf16 FLOP floor, and the sampling throughput at K + kappa = 120 (10,000
#    images, with the time 50,000 take);
# 3. bench/flow_capture.py: the K = 100 flow of that network in bf16 + channels-last at the
#    training batch (64), eager and as one CUDA graph, with cuDNN's autotuning (as the trainer
#    captures its flow) and without; and eagerly at the sampling batch (500, K = 20), with and
#    without (whether sampling would gain by it). torch.compile, measured once (0.95x), is not
#    rerun: `--ways eager,compile,graph` does;
# 4. where the node's CPU lists AMX-bf16 (GPU nodes' Xeons often do): compare_reference.py on two
#    of its physical cores (not two hyperthreads of one, which share its AMX unit), ResNet32 at
#    batch 64 with K = 2, the authors' step against ours in bf16 + channels-last: the CPU target
#    (5x the authors' step on two AMX cores), which needs such a CPU (about 3 minutes on an H200
#    node's Xeon, whose cores ran the authors' step in 18 s).
#
# Everything printed also goes to OUT_DIR (default gpu-check/): tests.log, compare.log,
# compare_cuda.json, capture.log, capture_*.json (and compare_cpu.log, compare_cpu.json
# with step 4). Options after OUT_DIR go to
# compare_reference.py (e.g. --sample-images 50000). Exits non-zero if torch sees no CUDA device
# or a step fails; runs every step either way.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! -f "$1/src/models.py" ]]; then
    echo "gpu_check: error: give a checkout of the authors' code as the first argument" \
         "(git clone https://github.com/ajrheng/FDRL), e.g. bash bench/gpu_check.sh ~/src/FDRL" >&2
    exit 2
fi
reference=$1 out=${2:-gpu-check}
shift $(( $# < 2 ? $# : 2 ))
if ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: error: torch sees no CUDA device here; run it on a GPU node" >&2
    exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

status=0
# In one process, without the suite's pytest-xdist options (pyproject.toml), which an image with
# its own pytest may not know: the GPU tests share one device anyway.
python -m pytest -o addopts="-ra --durations=10" -m gpu -p no:cacheprovider 2>&1 \
    | tee "$out/tests.log" || status=1
python bench/compare_reference.py --reference "$reference" --device cuda \
    --precisions fp32,fp32+cl,bf16,bf16+cl --sample-batch 500 --sample-images 10000 \
    --json "$out/compare_cuda.json" "$@" 2>&1 | tee "$out/compare.log" || status=1
for tuning in cudnn-benchmark no-cudnn-benchmark; do
    for shape in "64 100 eager,graph" "500 20 eager"; do
        read -r batch steps ways <<< "$shape"
        python bench/flow_capture.py --device cuda --network resnet32 --spectral-norm \
            --batch "$batch" --flow-steps "$steps" --precision bf16 --channels-last --ways "$ways" \
            --"$tuning" --json "$out/capture_${batch}_$tuning.json" 2>&1 \
            | tee -a "$out/capture.log" || status=1
    done
done
if grep -qw amx_bf16 /proc/cpuinfo 2>/dev/null; then
    # The first logical CPU of each of the first two physical cores.
    cores=$(lscpu -p=CPU,CORE 2>/dev/null | grep -v '^#' | sort -t, -k2,2n -u | head -2 \
            | cut -d, -f1 | paste -sd, -)
    pin=(); command -v taskset >/dev/null && [[ $cores == *,* ]] && pin=(taskset -c "$cores")
    echo "gpu_check: the CPU benchmark on logical CPUs ${cores:-(not pinned)}" \
        | tee "$out/compare_cpu.log"
    OMP_NUM_THREADS=2 "${pin[@]}" python bench/compare_reference.py --reference "$reference" \
        --device cpu --flow-steps 2 --rounds 2 --steps 1 --precisions bf16+cl \
        --sample-batch 64 --sample-images 64 --sample-steps 2 --json "$out/compare_cpu.json" 2>&1 \
        | tee -a "$out/compare_cpu.log" || status=1
fi
exit $status
