#!/bin/bash
# GLMD training on one machine: N GPUs, or N CPU processes (gloo), through torchrun.
#
#   launch/distill_local.sh [--dry-run] [--nproc N] [--cpu] [--config RUN.yaml]
#                           [--teacher-model PRESET|MODEL.yaml] [--set section.key=value ...]
#
#   --dry-run        print the plan (layout, per-stage layers and memory, cost) and the exact
#                    torchrun command; start nothing. A layout that cannot run prints
#                    "error: ..." and exits 2, with or without --dry-run.
#   --nproc N        ranks (default: the number of visible GPUs; with --cpu, 2)
#   --cpu            CPU processes: no GPU is used, no GPU-memory check, fp32 (DeepSpeed picks gloo)
#   --config         run configuration (default launch/configs/distill_local.yaml: GLM-10B -> GLM-2B
#                    on one 8-GPU node at TP=4, DP=2), the same format as for glmd-train
#   --teacher-model  the teacher's shape for the plan when the teacher checkpoint is not readable
#                    here (default glm-10b for the default config)
#   --set            override a run-config value, as glmd-train --set (repeatable)
#
# The same environment variables as launch/distill_10b_2b.sh set paths: GLMD_TEACHER_CKPT,
# GLMD_TRAIN_PREFIX, GLMD_VALID_PREFIX, GLMD_TOKENIZER, GLMD_SAVE_DIR; PYTHON picks the interpreter.
# Resuming needs nothing: glmd-train continues from checkpoint.save_dir/latest when it exists.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

DEFAULT_CONFIG=launch/configs/distill_local.yaml
DRY_RUN=0
CPU=0
NPROC=""
CONFIG="${GLMD_CONFIG:-$DEFAULT_CONFIG}"
TEACHER_MODEL="${GLMD_TEACHER_MODEL:-}"
USER_SETS=()
need_value() { (($1 >= 2)) || { echo "error: $2 needs a value" >&2; exit 2; }; }
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --cpu) CPU=1 ;;
        --nproc) need_value $# "$1"; NPROC="$2"; shift ;;
        --config) need_value $# "$1"; CONFIG="$2"; shift ;;
        --teacher-model) need_value $# "$1"; TEACHER_MODEL="$2"; shift ;;
        --set) need_value $# "$1"; USER_SETS+=("$2"); shift ;;
        --set=*) USER_SETS+=("${1#--set=}") ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ -n "$NPROC" ]] && ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --nproc must be a positive integer, got '$NPROC'" >&2
    exit 2
fi
GLMD_ROOT="${GLMD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# Paths given relative to where the script was called from, before it moves to the repository.
abspath_if_here() {
    if [[ -e "$1" && "$1" != /* && "$PWD" != "$GLMD_ROOT" ]]; then echo "$PWD/$1"; else echo "$1"; fi
}
CONFIG=$(abspath_if_here "$CONFIG")
[[ -n "$TEACHER_MODEL" ]] && TEACHER_MODEL=$(abspath_if_here "$TEACHER_MODEL")
cd "$GLMD_ROOT"
if [[ ! -f "$CONFIG" ]]; then
    echo "error: --config: $CONFIG does not exist" >&2
    exit 2
fi
export PYTHONPATH="$GLMD_ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
if [[ "$CONFIG" == "$DEFAULT_CONFIG" && -z "$TEACHER_MODEL" ]]; then
    TEACHER_MODEL=glm-10b    # the default config's teacher; a real checkpoint's saved shape is checked against it
fi

PLAN_ARGS=()
if ((CPU)); then
    NPROC="${NPROC:-2}"
    export CUDA_VISIBLE_DEVICES=""                 # even on a GPU machine: CPU ranks only
    # Split the cores between the ranks instead of letting each one start a thread per core.
    CORES=$(nproc 2>/dev/null || echo 1)
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((CORES / NPROC > 0 ? CORES / NPROC : 1))}"
    PLAN_ARGS+=(--cpu)
    CPU_SETS=("train.precision=fp32")              # bf16/fp16 are GPU settings
else
    if [[ -z "$NPROC" ]]; then
        NPROC=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
        if ((NPROC == 0)); then
            if ((DRY_RUN)); then
                NPROC=8
                echo "note: no GPU visible here; planning for $NPROC GPUs (set --nproc, or --cpu for CPU processes)"
            else
                echo "error: no GPU visible: pass --cpu to run CPU processes, or --nproc N" >&2
                exit 2
            fi
        fi
    fi
    export CUDA_DEVICE_MAX_CONNECTIONS=1              # kernels in issue order (see distill_10b_2b.sh)
    export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"  # abort, don't hang, on NCCL errors
    CPU_SETS=()
fi
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --nproc must be a positive integer, got '$NPROC'" >&2
    exit 2
fi
[[ -n "$TEACHER_MODEL" ]] && PLAN_ARGS+=(--teacher-model "$TEACHER_MODEL")

source "$GLMD_ROOT/launch/config_overrides.sh"
glmd_set_args ${CPU_SETS[@]+"${CPU_SETS[@]}"} -- ${USER_SETS[@]+"${USER_SETS[@]}"}

# torchrun --standalone: single-node rendezvous on a free local port; it sets RANK, LOCAL_RANK,
# WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which glmd-train reads.
LAUNCH=(torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC"
        -m megatron_glmd.cli.train --config "$CONFIG" ${SET_ARGS[@]+"${SET_ARGS[@]}"})

"$PYTHON" -m megatron_glmd.cli.launch_plan --config "$CONFIG" --nodes 1 --gpus-per-node "$NPROC" \
    --nodelist "$(hostname)" ${PLAN_ARGS[@]+"${PLAN_ARGS[@]}"} ${SET_ARGS[@]+"${SET_ARGS[@]}"}
CMD=$(printf '%q ' "${LAUNCH[@]}")
echo "launch command (in $GLMD_ROOT): ${CMD% }"
if ((DRY_RUN)); then
    echo "dry run: nothing started"
    exit 0
fi
exec "${LAUNCH[@]}"
