#!/usr/bin/env bash
# The device check of a session that has a GPU machine (the `device` tool), in one call:
#   calibrate the GPU (GEMM by shape for bf16/fp16/tf32/fp32, HBM bandwidth, fused attention,
#   launch cost; no communication with one GPU), then train GPT-style models from 125M to
#   2.7B parameters on it and compare each step with parsim's prediction, from the preset and
#   from the fresh profile.
#
#   run: bash benchmarks/gpu_device_check.sh        (repository root; writes to $OUT)
#
# Needs python with torch (CUDA), numpy, scipy, networkx, simpy on the device; parsim runs
# from this checkout (PYTHONPATH), nothing is installed. About 3-5 minutes on an H100 (run it with timeout_s 600).
# Afterwards: copy $OUT/profile.toml to profiles/<card>-<date>.toml and the table into the
# closing note and README.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
           --format=csv | tee "$OUT/nvidia-smi.csv"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/versions.txt"
# both steps together stay under the 600 s a device call may run
timeout 240 python -m parsim.calibrate --ranks 1 -o "$OUT/profile.toml" 2>&1 | tee "$OUT/calibrate.log"
timeout 300 python -m parsim.validate.gpu_step --profile "$OUT/profile.toml" --out "$OUT" 2>&1 \
    | tee "$OUT/gpu_step.log"
