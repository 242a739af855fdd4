#!/usr/bin/env bash
# One short GPU check (issue: fused backends, speed on GPU), for a machine with CUDA,
# torch and triton already installed (the device tool's H200 image has them):
#   1. the CUDA equality tests (compile and triton against eager, bit for bit);
#   2. python -m fastneuron.bench --device cuda (triton at M = 2**24, T = 3000, against
#      the eager reference and the other peers on the same GPU);
#   3. the FMA ablation: triton with enable_fp_fusion on, to measure what exactness costs.
# Output goes to $OUT (the device tool's folder) or bench/results/, named by date.
# Usage: bash bench/gpu_check.sh   (about 5 minutes on an H200)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-$stamp-nvidia-smi.txt"
# Install without dependencies,
# using the image's torch and triton.
python3 -m pip install --no-deps --no-build-isolation -q -e . || exit 1
python3 -m pytest -q -x tests/test_compile.py tests/test_triton.py -k "cuda" 2>&1 | tee "$out/gpu-$stamp-tests.txt"
python3 -m fastneuron.bench --device cuda --json "$out/gpu-$stamp.json" --csv "$out/gpu-$stamp.csv" \
    --plot "$out/gpu-$stamp.png" 2>&1 | tee "$out/gpu-$stamp-bench.txt"
python3 - <<'PY' 2>&1 | tee "$out/gpu-$stamp-fma.txt"
# What SPEC's "no FMA" costs: the Triton kernel with and without enable_fp_fusion.
import time, torch
import fastneuron.kernels.triton_sgd as K
import fastneuron as fn
m, t = 2**24, 3000
for fusion in (False, True):
    K.ENABLE_FP_FUSION = fusion
    fn.train(range(4096), 0.01, 64, backend="triton", device="cuda")
    times = []
    for _ in range(3):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        fn.train(torch.arange(m), 0.01, t, backend="triton", device="cuda")
        torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    print(f"enable_fp_fusion={fusion}: {m * t / sorted(times)[1]:.3e} neuron-steps/s (median of 3)")
PY
