#!/usr/bin/env bash
# GPU benchmark, within 5 minutes: frames/s and p99 per-frame latency at batch 1, 8, 32 for efficientnet_lite0
# K=10 and wide_resnet50_2 K=50, the float32 GEMM rate of the same run and the pixel matching's ratio to it,
# and the map error of tf32 / bfloat16 candidate search. Needs a CUDA device; extra arguments go to
# tools/bench_gpu.py (e.g. --budget-s 4). On CUDA the backbone runs on torch and pixel matching on the torch
# kernel (runtime.backbone_runtime / pixel_kernel "auto"); both are named explicitly below.
#   GPU_BENCH_CPU=1 tools/gpu_bench.sh   also compares, on the GPU host's CPU (about 4 more minutes), both pixel
#                                        kernels (torch, fused) and both backbone runtimes (torch, openvino)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_bench: no CUDA device visible to torch; nothing measured" >&2
    exit 2
fi
"$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
timeout 290 "$PY" tools/bench_gpu.py --device cuda "$@"
timeout 120 "$PY" tools/bench_spade.py --device cuda --kernel torch --backbone-runtime torch \
    --backbones efficientnet_lite0 --batches 1,8 --ks 10 --repeats 3 --budget-s 4
if [ "${GPU_BENCH_CPU:-0}" = "1" ]; then
    grep -m1 'model name' /proc/cpuinfo
    timeout 240 "$PY" tools/bench_spade.py --device cpu --kernel torch,fused --backbone-runtime torch,openvino \
        --backbones efficientnet_lite0 --batches 1,8 --ks 10,50 --repeats 3 --budget-s 4
fi
