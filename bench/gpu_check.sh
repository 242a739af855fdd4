#!/usr/bin/env bash
# One short GPU check (issue 11), for a machine with torch and triton already installed
# (the device tool's H200 image: torch 2.11, triton 3.6). Nothing is installed: when
# `import fastneuron` fails, the checkout goes on PYTHONPATH (fastneuron/__init__.py then finds the
# top-level kernels/ as fastneuron.kernels). Phases, in order, each under `timeout`:
#   0. (CPU) python -m fastneuron.kernels.sass: the kernel's SASS budget for sm_90
#      (instructions per neuron-step, registers, issue-bound estimate), about 20-60 s;
#   1. kernel-only headline: bench/kernel_only.py, the Triton kernel at M = 2**24,
#      T = 3000 with the state on the device, CUDA events, median of 5;
#   2. python -m fastneuron.bench --device cuda --contestants triton,compile,eager,jax;
#   3. the CUDA equality tests (compile and triton against eager, bit for bit);
#   4. the FMA ablation: the kernel with enable_fp_fusion on and off (what SPEC §3's
#      no-FMA rule costs), bench/kernel_only.py --fusion both.
# Without a CUDA device it stops cleanly before phase 1 ("no CUDA device", exit 0).
# Output goes to $OUT (the device tool's folder) or bench/results/, named by date; a
# summary is printed last. Time limits 45 + 60 + 120 + 90 + 45 s: at most about 6 minutes
# (plus start-up). Always exits 0; the summary says which phase failed or timed out.
# Usage: bash bench/gpu_check.sh   or   OUT=/tmp/x bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="${OUT:-bench/results}"
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%d)
py=$(command -v python3 || command -v python)
summary=()
note() { summary+=("$1"); echo "== $1"; }

# phase NAME SECONDS LOG CMD...: run CMD under timeout, its output to LOG and the screen.
phase() {
    local name=$1 limit=$2 log=$3; shift 3
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local how="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then how="TIMED OUT"; elif [ "$rc" -ne 0 ]; then how="FAILED (rc=$rc)"; fi
    note "$name: $how in $((SECONDS - t0)) s, log $log"
    return 0
}

finish() {
    echo
    echo "== summary ($out)"
    for line in "${summary[@]}"; do echo "  $line"; done
    # The numbers, from the logs that exist.
    grep -hE '^(variant|base|momentum|batch3|batch3 all\+history) +[0-9i]' "$out/gpu-$stamp-sass.txt" 2>/dev/null | sed 's/^/  sass: /'
    grep -h 'neuron-steps/s' "$out/gpu-$stamp-kernel.txt" "$out/gpu-$stamp-fma.txt" 2>/dev/null | sed 's/^/  /'
    tail -n 1 "$out/gpu-$stamp-tests.txt" 2>/dev/null | sed 's/^/  tests: /'
    exit 0
}

if ! "$py" -c "import fastneuron" 2>/dev/null; then
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
    note "fastneuron not installed: using the checkout on PYTHONPATH"
fi
if ! "$py" -c "import fastneuron, torch, triton" 2>"$out/gpu-$stamp-import.txt"; then
    note "cannot import fastneuron, torch and triton: see $out/gpu-$stamp-import.txt"
    finish
fi
note "$("$py" -c 'import sys, torch, triton; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}")' 2>&1)"

# 0. CPU only: the SASS budget with this machine's triton.
phase "sass report (CPU)" 45 "$out/gpu-$stamp-sass.txt" \
    "$py" -m fastneuron.kernels.sass --json "$out/gpu-$stamp-sass.json"

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    note "no CUDA device: stopping before the CUDA phases"
    finish
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    | tee "$out/gpu-$stamp-nvidia-smi.txt"

# 1. The headline: the kernel alone.
phase "kernel only (M=2**24, T=3000)" 60 "$out/gpu-$stamp-kernel.txt" \
    "$py" bench/kernel_only.py --members $((2**24)) --steps 3000 --repeats 5 --json "$out/gpu-$stamp-kernel.json"
# 2. train() against its peers on the same GPU.
phase "bench (triton, compile, eager, jax)" 120 "$out/gpu-$stamp-bench.txt" \
    env XLA_PYTHON_CLIENT_PREALLOCATE=false "$py" -m fastneuron.bench --device cuda \
    --contestants triton,compile,eager,jax --repeats 3 --json "$out/gpu-$stamp.json" --csv "$out/gpu-$stamp.csv"
# 3. Bit for bit on the GPU (addopts replaced: the image may lack pytest-xdist).
phase "CUDA equality tests" 90 "$out/gpu-$stamp-tests.txt" \
    "$py" -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_compile.py tests/test_triton.py -k cuda
# 4. What exactness costs.
phase "FMA ablation (enable_fp_fusion off/on)" 60 "$out/gpu-$stamp-fma.txt" \
    "$py" bench/kernel_only.py --members $((2**24)) --steps 3000 --repeats 3 --fusion both \
    --json "$out/gpu-$stamp-fma.json"

finish
