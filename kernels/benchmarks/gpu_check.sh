#!/usr/bin/env bash
# The GPU check (issue 15 item 6): one command, at most 8 minutes on one GPU, that answers what
# the CPU cannot. Usage, from anywhere:   bash kernels/benchmarks/gpu_check.sh OUT_DIR
#   env            refuse in one line, exit 2, before any work, unless torch.cuda.is_available()
#                  and triton imports; else record device, versions, the HBM peak assumed
#   kernel         the compiled softmax_kl against fp64 at the real shard shapes, every autotune
#                  config forced in turn, 10% of rows masked (gpu_check_kernel.py)
#   bandwidth      kernel-only bandwidth (triton.testing.do_bench) as a fraction of HBM peak,
#                  vocab_end a multiple of 16 and not (gpu_check_bandwidth.py)
#   nccl           every collective and dtype the engine uses on a one-rank NCCL group (gpu_check_nccl.py)
#   stage_eager    stage 0 of the 40-GPU run at real size (9 GLM-2B layers with recompute, 8 GLM-10B
#                  layers forward, bf16, micro-batch 1, seq 512) under the profiler
#                  (tools/benchmarks/gpu_check_stage.py)
#   engine_smoke   bf16 teacher pre-training then GLMD distillation through glmd-train (tests/distill/engine_smoke.py)
#   stage_compiled the stage-0 slice with model.compile (torch.compile per layer)
# Every part runs in its own process under its own timeout (the budget below: 440 s of parts plus at
# most 5 s of kill grace each stays under 8 minutes), whether or not an earlier part failed. Writes
# OUT_DIR/<part>.json and <part>.log per part, nvidia_smi.txt and summary.json (each part's status
# and headline numbers); exits non-zero if any part failed or timed out.
# PYTHON=/path/to/python picks the interpreter (default: python on PATH).
set -uo pipefail
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "error: OUT_DIR: missing (usage: bash kernels/benchmarks/gpu_check.sh OUT_DIR)" >&2
  exit 2
fi
out="$(realpath -m -- "$1")"
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # compiled kernels, not the interpreter
py="${PYTHON:-python}"

# part name -> timeout in seconds (sum 440; tests/kernels/test_gpu_check_script.py holds it to the 8 minutes)
declare -A budget=([env]=25 [kernel]=100 [bandwidth]=40 [nccl]=30 [stage_eager]=65 [engine_smoke]=100
                   [stage_compiled]=80)

# refuses (one line on stderr, exit 2) before creating anything
timeout -k 5 "${budget[env]}" "$py" -m kernels.benchmarks.gpu_check_env --out "$out/env.json"
rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && echo "error: gpu_check: the environment check did not finish in ${budget[env]} s" >&2
  exit "$rc"
fi
nvidia-smi > "$out/nvidia_smi.txt" 2>&1 || true
statuses=("env=0")
run_part() {
  local name="$1"
  shift
  echo "== $name (timeout ${budget[$name]} s)"
  timeout -k 5 "${budget[$name]}" "$@" 2>&1 | tee "$out/$name.log"
  statuses+=("$name=${PIPESTATUS[0]}")
}
smoke_dir="$(mktemp -d)"
trap 'rm -rf "$smoke_dir"' EXIT

run_part kernel "$py" -m kernels.benchmarks.gpu_check_kernel --out "$out/kernel.json"
run_part bandwidth "$py" -m kernels.benchmarks.gpu_check_bandwidth --out "$out/bandwidth.json"
run_part nccl "$py" -m kernels.benchmarks.gpu_check_nccl --out "$out/nccl.json"
run_part stage_eager "$py" -m tools.benchmarks.gpu_check_stage --mode eager --out "$out/stage_eager.json"
run_part engine_smoke "$py" -m tests.distill.engine_smoke --workdir "$smoke_dir" --iterations 30 \
  --json "$out/engine_smoke.json"
run_part stage_compiled "$py" -m tools.benchmarks.gpu_check_stage --mode compiled --out "$out/stage_compiled.json"

"$py" -m kernels.benchmarks.gpu_check_summary "$out" "${statuses[@]}"
