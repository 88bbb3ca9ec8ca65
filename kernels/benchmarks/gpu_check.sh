#!/usr/bin/env bash
# The GPU check, prepared to run as one command on a CUDA machine:
#   1. every Triton test case of softmax_kl compiled on the GPU (tests/kernels/triton_cases.py),
#   2. the engine end to end on the GPU: a bf16 teacher pre-training then a bf16 GLMD distillation
#      of tiny models through glmd-train at TP = PP = DP = 1 (tests/distill/engine_smoke.py),
#   3. the kernel benchmark's GPU shape set in bf16 (kernels/benchmarks/bench_softmax_kl.py).
# Usage, from the repository root:  bash kernels/benchmarks/gpu_check.sh [OUT_DIR]
# Writes into OUT_DIR (default kernels/benchmarks/results): gpu_info.txt, triton_cases_cuda.json
# and .log, engine_smoke_cuda.json and .log, softmax_kl_cuda.json and .png, bench_cuda.log.
# Exits non-zero if a case or the engine run failed; every step runs either way.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-kernels/benchmarks/results}"
mkdir -p "$out"
unset TRITON_INTERPRET  # compiled kernels, not the interpreter
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/gpu_info.txt"

status=0
python -m tests.kernels.triton_cases --device cuda --json "$out/triton_cases_cuda.json" \
  2>&1 | tee "$out/triton_cases_cuda.log" || status=1

python -m tests.distill.engine_smoke --workdir "$(mktemp -d)" --iterations 30 \
  --json "$out/engine_smoke_cuda.json" 2>&1 | tee "$out/engine_smoke_cuda.log" || status=1

python -m kernels.benchmarks.bench_softmax_kl --device cuda --out-dir "$out" \
  2>&1 | tee "$out/bench_cuda.log" || status=1
exit $status
