#!/bin/bash
# GLMD stage 2 for one task (docs/design.md, "The two stages"): teacher fine-tune -> 2a -> 2b -> evaluate.
#
#   launch/task_distill.sh TASK [--cpu] [--nproc N] [--dry-run] [--set k=v] [--teacher-set k=v] [--student-set k=v]
#   sbatch [--nodes N ...] launch/task_distill.sh TASK [...]     # each phase one srun step of the allocation
#
#   TASK             a SuperGLUE task (boolq cb copa rte wic wsc multirc record; its train.jsonl, val.jsonl
#                    in GLMD_TASK_DATA) or the YAML file of a task of your own
#   --cpu            CPU processes (gloo, fp32); --nproc N ranks (default: the visible GPUs; with --cpu, 1)
#   --dry-run        print each phase's command (or why it is skipped); start nothing
#   --set            a run-config override for every phase; --teacher-set only the teacher's fine-tuning,
#                    --student-set only 2a and 2b (e.g. a student learning rate)
#
# Environment: GLMD_TEACHER_INIT (the run the teacher starts from: a pretrain/converted GLM checkpoint),
# GLMD_STUDENT_INIT (the stage-1 GLMD student), GLMD_TASK_DATA (SuperGLUE: the task's folder),
# GLMD_TOKENIZER, GLMD_TASK_OUT (default runs/stage2/TASK), GLMD_TASK_CONFIG (default
# launch/configs/task_stage2.yaml), PYTHON. Phases, each skipped when its run is complete:
#   OUT/teacher       finetune      from GLMD_TEACHER_INIT
#   OUT/student_2a    task_distill  from GLMD_STUDENT_INIT, teacher OUT/teacher (L'_sp, tau 15)
#   OUT/student_2b    task_logits   from OUT/student_2a, teacher OUT/teacher (soft CE, tau 1)
#   OUT/eval_teacher, OUT/eval_student   evaluate (eval_<split>.json), then both side by side.
# A phase stopped part-way resumes from its latest checkpoint when the script runs again (or is requeued).
#SBATCH --job-name=glmd-stage2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { (($1 >= 2)) || { echo "error: $2 needs a value" >&2; exit 2; }; }
TASK="" CPU=0 NPROC="" DRY_RUN=0 SETS=() TEACHER_SETS=() STUDENT_SETS=()
while (($#)); do
    case "$1" in
        --cpu) CPU=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --nproc) need_value $# "$1"; NPROC="$2"; shift ;;
        --set) need_value $# "$1"; SETS+=("$2"); shift ;;
        --teacher-set) need_value $# "$1"; TEACHER_SETS+=("$2"); shift ;;
        --student-set) need_value $# "$1"; STUDENT_SETS+=("$2"); shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
        *) [[ -z "$TASK" ]] || { echo "error: one TASK only, got '$TASK' and '$1'" >&2; exit 2; }; TASK="$1" ;;
    esac
    shift
done
[[ -n "$TASK" ]] || { echo "error: name a TASK (a SuperGLUE task or a task YAML file; see --help)" >&2; exit 2; }

GLMD_ROOT="${GLMD_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}"
[[ -f "$GLMD_ROOT/launch/task_distill.sh" ]] || { echo "error: GLMD_ROOT=$GLMD_ROOT is not the repository" >&2; exit 2; }
cd "$GLMD_ROOT"
export PYTHONPATH="$GLMD_ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
CONFIG="${GLMD_TASK_CONFIG:-launch/configs/task_stage2.yaml}"
for var in GLMD_TEACHER_INIT GLMD_STUDENT_INIT; do
    [[ -n "${!var:-}" ]] || { echo "error: set $var (see --help)" >&2; exit 2; }
done

TASK_SETS=()
if [[ "$TASK" == *.yaml || "$TASK" == *.yml ]]; then
    [[ -f "$TASK" ]] || { echo "error: task file $TASK does not exist" >&2; exit 2; }
    NAME=$(basename "$TASK"); NAME="${NAME%.*}"
    TASK_SETS+=("task.file=$TASK")
else
    NAME="${TASK,,}"
    [[ -n "${GLMD_TASK_DATA:-}" ]] || { echo "error: set GLMD_TASK_DATA to the SuperGLUE task's folder" >&2; exit 2; }
    TASK_SETS+=("task.name=$NAME" "task.data_dir=$GLMD_TASK_DATA")
    EPOCHS=$("$PYTHON" -m megatron_glmd.cli.task_chain epochs "$NAME")
    [[ -n "$EPOCHS" ]] && TASK_SETS+=("train.epochs=$EPOCHS")      # GLMD's epochs for the task
fi
[[ -n "${GLMD_TOKENIZER:-}" ]] && TASK_SETS+=("data.tokenizer_model=$GLMD_TOKENIZER")
OUT="${GLMD_TASK_OUT:-runs/stage2/$NAME}"

# ---------------------------------------------------------------- how a phase runs
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    NNODES="${SLURM_NNODES:-1}"
    NTASKS="${SLURM_NTASKS:-$((NNODES * ${SLURM_NTASKS_PER_NODE:-8}))}"
    export MASTER_ADDR=$( (scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null || hostname) | head -n 1)
    export MASTER_PORT=$((10000 + SLURM_JOB_ID % 20000))
    export CUDA_DEVICE_MAX_CONNECTIONS=1 TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
    LAUNCH=(srun --nodes="$NNODES" --ntasks="$NTASKS" --ntasks-per-node=$((NTASKS / NNODES)) --distribution=block
            --kill-on-bad-exit=1 bash launch/slurm_task.sh "$PYTHON")
elif ((CPU)); then
    export CUDA_VISIBLE_DEVICES=""
    NPROC="${NPROC:-1}"
    SETS=("train.precision=fp32" ${SETS[@]+"${SETS[@]}"})
    LAUNCH=(torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC")
else
    if [[ -z "$NPROC" ]]; then
        NPROC=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
        ((NPROC > 0)) || ((DRY_RUN)) || { echo "error: no GPU visible: pass --cpu, or --nproc N" >&2; exit 2; }
        ((NPROC > 0)) || NPROC=8
    fi
    export CUDA_DEVICE_MAX_CONNECTIONS=1
    LAUNCH=(torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC")
fi

# phase NAME SETS...: run glmd-train with the base config and these overrides, unless the run is complete
phase() {
    local name="$1"; shift
    local args=() s
    for s in ${TASK_SETS[@]+"${TASK_SETS[@]}"} "$@" ${SETS[@]+"${SETS[@]}"}; do args+=(--set "$s"); done
    local cmd=("${LAUNCH[@]}" -m megatron_glmd.cli.train --config "$CONFIG" ${args[@]+"${args[@]}"})
    if [[ "$name" != eval_* ]] && "$PYTHON" -m megatron_glmd.cli.task_chain done "$OUT/$name"; then
        echo "== $name: complete in $OUT/$name, skipped"
        return 0
    fi
    echo "== $name: $(printf '%q ' "${cmd[@]}")"
    ((DRY_RUN)) || "${cmd[@]}"
}

phase teacher mode=finetune "init_checkpoint=$GLMD_TEACHER_INIT" "checkpoint.save_dir=$OUT/teacher" \
    ${TEACHER_SETS[@]+"${TEACHER_SETS[@]}"}
phase student_2a mode=task_distill "init_checkpoint=$GLMD_STUDENT_INIT" "teacher_checkpoint=$OUT/teacher" \
    "checkpoint.save_dir=$OUT/student_2a" ${STUDENT_SETS[@]+"${STUDENT_SETS[@]}"}
phase student_2b mode=task_logits "init_checkpoint=$OUT/student_2a" "teacher_checkpoint=$OUT/teacher" \
    "checkpoint.save_dir=$OUT/student_2b" ${STUDENT_SETS[@]+"${STUDENT_SETS[@]}"}
phase eval_teacher mode=evaluate "init_checkpoint=$OUT/teacher" "task.results=$OUT/eval_teacher.json" \
    "checkpoint.save_dir=$OUT/eval_teacher"
phase eval_student mode=evaluate "init_checkpoint=$OUT/student_2b" "task.results=$OUT/eval_student.json" \
    "checkpoint.save_dir=$OUT/eval_student"
if ((DRY_RUN)); then
    echo "dry run: nothing started"
    exit 0
fi
"$PYTHON" -m megatron_glmd.cli.task_chain report "$OUT/eval_teacher.json" "$OUT/eval_student.json"
