#!/bin/bash
# GLMD stage 1: GLM-10B teacher -> GLM-2B student on 40 A100-40GB (5 nodes x 8 GPUs) under Slurm.
#
#   sbatch launch/distill_10b_2b.sh [--set section.key=value ...]     # submit from the repository root
#   bash launch/distill_10b_2b.sh --dry-run [--set ...]               # print the plan, start nothing
#
# --dry-run works inside an allocation (uses its Slurm variables) and outside one (assumes the
# allocation the #SBATCH lines below request). It prints the layout, per-stage layer ranges,
# FLOPs and time per micro-batch, per-GPU memory and whether it fits an A100-40GB, the modelled
# step time, hours, MFU and HFU, and the exact srun command.
#
# Layout: TP=2, PP=5, DP=4, micro-batch 1, activation checkpointing off (the config's
# train.checkpoint_activations: auto; glmd-train decides the same from its GPUs' memory and logs it).
# Why (glmd-launch-plan --rank, the planner's memory and time model):
#   * 40 = TP x PP x DP. TP <= 8 keeps tensor parallelism inside a node (NVLink), and TP must divide
#     both models' heads (64 and 32): TP in {1, 2, 4, 8}. DP must divide the global batch 64, so DP
#     is a power of two too. The factor 5 of 40 can therefore only go into PP: PP in {5, 10, 20}.
#   * Among the 106 plans (53 layouts x micro-batch sizes, each with checkpointing off and on) that
#     fit an A100-40GB, the planner models each step as (m + p - 1) x the slowest stage (per
#     micro-batch the larger of GPU time - compute at 60% of peak plus TP all-reduces on NVLink - and
#     the host's kernel launches at 8 us each, plus pipeline sends on InfiniBand), then the tied-
#     embedding all-reduce and DeepSpeed's DP reduction (an fp32 all-reduce of the gradients and a
#     bf16 all-gather of the weights, as BF16_Optimizer does it):
#       rank  layout                          auto  bubble  spread   step s   hours    MFU    HFU  peak GiB  launch
#          1  TP=2 PP=5 DP=4 mb=1 ckpt=off       *   20.0%   +0.3%    0.236     9.8  35.8%  35.8%      9.83     0/5
#          2  TP=2 PP=10 DP=2 mb=1 ckpt=off      *   22.0%   +0.3%    0.239    10.0  35.2%  35.2%      9.55    0/10
#          3  TP=4 PP=5 DP=2 mb=1 ckpt=off       *   11.1%   +0.2%    0.252    10.5  33.4%  33.4%      7.49     0/5
#          5  TP=2 PP=5 DP=4 mb=1 ckpt=on            20.0%   +3.3%    0.260    10.8  32.4%  36.2%      9.66     0/5
#     Checkpointing costs 24.7 ms/step here (compute -21.3 ms without it) and memory does not need it
#     (9.83 GiB of 40 with the reserve), so auto turns it off. TP=4 halves TP=2's bubble but loses
#     16 ms/step: its TP all-reduces grow with TP - 1 while a stage's GPU time halves, so the host's
#     kernel launches weigh more (with model.compile off, eager layers, its stage 1 turns launch-bound).
#     TP=1 (bubble 33%) pays more in bubble than TP=2 pays in all-reduces. PP=5 (one stage per node)
#     beats PP=10 by 3.6 ms: a smaller bubble. The first place holds with the latency at 5 or 20 us,
#     NVLink at 150-400 GB/s, InfiniBand at 10-40 GB/s, 45-75% sustained matmul efficiency and up to
#     16 us per launch (compiled layers, model.compile auto on CUDA; from 17 us TP=1 PP=5 DP=8 leads;
#     kernels per layer measured by megatron_glmd/model/op_count.py, megatron_glmd/plan/launches.py).
#     The model leaves out that smaller TP shards run their GEMMs less efficiently,
#     which favours TP=2 over TP=4 further. (The paper's one-node run used MP=4, DP=2.) The teacher
#     checkpoint must be at the run's TP: tools/convert_glm_checkpoint.py --tp 2.
#   * Memory is not the constraint (5.83 GiB of model state and activations on the fullest stage,
#     9.83 GiB with the 4 GiB reserve; --dry-run prints the table), so micro-batch 1 costs nothing.
#   * Layers are balanced by FLOPs (megatron_glmd/model/partition.py): +0.26% spread (max/mean - 1)
#     at PP=5 without recompute; with it whole layers allow no less than +3.27%, see --dry-run.
#
# Requeue: Slurm sends USR1 to this shell 180 s before the time limit; the trap forwards it to
# the srun step (srun passes it to every rank), glmd-train saves a checkpoint at the end of the
# current iteration and exits with status 75 (EX_TEMPFAIL: saved, stopped on request). Only that
# status requeues the job (same job id); it resumes from checkpoint.save_dir/latest with nothing
# repeated. Status 0 means the run finished. Any other status is a failure: it is logged and not
# requeued (a crash should be looked at, not looped); node failures are requeued by Slurm itself
# (--requeue) and resume from the last periodic checkpoint.
#
# Paths come from the environment when set (else from the run config):
#   GLMD_TEACHER_CKPT  GLM-10B pretrain checkpoint at TP=2      -> teacher_checkpoint
#   GLMD_TRAIN_PREFIX / GLMD_VALID_PREFIX  dataset prefixes      -> data.train_prefix / data.valid_prefix
#   GLMD_TOKENIZER     SentencePiece model                       -> data.tokenizer_model
#   GLMD_SAVE_DIR      checkpoints, config, TensorBoard          -> checkpoint.save_dir, logging.tensorboard_dir
#   GLMD_CONFIG (run config), GLMD_TEACHER_MODEL (teacher shape for the plan, default glm-10b),
#   GLMD_ROOT (repository), PYTHON (interpreter).
#
#SBATCH --job-name=glmd-10b-2b
#SBATCH --nodes=5
#SBATCH --ntasks-per-node=8            # one task per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --exclusive                    # whole nodes: NVLink and the IB adapters are not shared
#SBATCH --mem=0                        # all of each node's host memory
#SBATCH --time=12:00:00                # the modelled run is ~11 h; requeue covers anything longer
#SBATCH --requeue                      # also requeue (and so resume) after a node failure
#SBATCH --signal=B:USR1@180            # USR1 to this batch shell (B:) 180 s before the time limit
#SBATCH --open-mode=append             # a requeued job appends to the same log
#SBATCH --output=%x-%j.out             # in the submit directory: Slurm does not create folders
set -euo pipefail

# What the #SBATCH lines request; the dry run assumes it outside an allocation. Keep in sync.
DEFAULT_NODES=5
DEFAULT_GPUS_PER_NODE=8

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

DRY_RUN=0
USER_SETS=()
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --set) (($# >= 2)) || { echo "error: --set needs section.key=value" >&2; exit 2; }
               USER_SETS+=("$2"); shift ;;
        --set=*) USER_SETS+=("${1#--set=}") ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1' (expected --dry-run or --set section.key=value)" >&2; exit 2 ;;
    esac
    shift
done

# Under sbatch this file runs from a copy in Slurm's spool directory, so find the repository from
# GLMD_ROOT, else the submit directory, else the script's own location (a run outside sbatch).
is_repo() { [[ -n "$1" && -f "$1/launch/distill_10b_2b.sh" ]]; }
if [[ -n "${GLMD_ROOT:-}" ]]; then
    if ! is_repo "$GLMD_ROOT"; then
        echo "error: GLMD_ROOT=$GLMD_ROOT holds no launch/distill_10b_2b.sh: point it at the repository" >&2
        exit 2
    fi
elif is_repo "${SLURM_SUBMIT_DIR:-}"; then
    GLMD_ROOT="$SLURM_SUBMIT_DIR"
elif is_repo "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; then
    GLMD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
else
    echo "error: cannot find the repository: no launch/distill_10b_2b.sh under" \
         "SLURM_SUBMIT_DIR=${SLURM_SUBMIT_DIR:-<unset>} or GLMD_ROOT; submit from the repository root" \
         "or set GLMD_ROOT" >&2
    exit 2
fi
cd "$GLMD_ROOT"
export PYTHONPATH="$GLMD_ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
CONFIG="${GLMD_CONFIG:-launch/configs/distill_10b_2b.yaml}"
TEACHER_MODEL="${GLMD_TEACHER_MODEL:-glm-10b}"

# ---------------------------------------------------------------- hosts and ranks from Slurm
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    JOB_ID="$SLURM_JOB_ID"
    NNODES="${SLURM_NNODES:?SLURM_NNODES is not set}"
    NTASKS="${SLURM_NTASKS:-$((NNODES * ${SLURM_NTASKS_PER_NODE:-$DEFAULT_GPUS_PER_NODE}))}"
    NODELIST="${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is not set}"
elif ((DRY_RUN)); then
    echo "note: not inside a Slurm allocation; assuming the one requested: $DEFAULT_NODES nodes x $DEFAULT_GPUS_PER_NODE tasks"
    JOB_ID=0
    NNODES=$DEFAULT_NODES
    NTASKS=$((DEFAULT_NODES * DEFAULT_GPUS_PER_NODE))
    printf -v NODELIST 'node[01-%02d]' "$DEFAULT_NODES"
else
    echo "error: not inside a Slurm job: submit with 'sbatch launch/distill_10b_2b.sh' (or use --dry-run)" >&2
    exit 2
fi
if ((NTASKS % NNODES)); then
    echo "error: SLURM_NTASKS=$NTASKS is not a multiple of SLURM_NNODES=$NNODES: need the same number of ranks per node" >&2
    exit 2
fi
GPUS_PER_NODE=$((NTASKS / NNODES))   # one rank per GPU

# Real Slurm expands the node list with scontrol. Where scontrol is absent (a laptop, the tests),
# the planner's own parser handles the same syntax (gpu[01-05], a[1-2]b[3,5], comma lists).
if command -v scontrol >/dev/null 2>&1; then
    mapfile -t HOSTS < <(scontrol show hostnames "$NODELIST")
else
    mapfile -t HOSTS < <("$PYTHON" -m megatron_glmd.cli.launch_plan --expand-nodelist "$NODELIST")
fi
if ((${#HOSTS[@]} != NNODES)); then
    echo "error: node list '$NODELIST' names ${#HOSTS[@]} hosts, but SLURM_NNODES=$NNODES" >&2
    exit 2
fi
export MASTER_ADDR="${HOSTS[0]}"                  # rank 0 runs on the first node
export MASTER_PORT=$((10000 + JOB_ID % 20000))    # per job, below Linux's ephemeral range (32768+)

# ---------------------------------------------------------------- communication settings
# Each may be overridden from the submitting shell (sbatch exports the environment).
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}"                 # pipeline traffic between nodes uses InfiniBand
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker0}"  # bootstrap on any interface but loopback/docker; set e.g. ib0 or eth0 per cluster
if [[ -n "${NCCL_IB_HCA:-}" ]]; then export NCCL_IB_HCA; fi    # which HCAs (e.g. mlx5); NCCL picks all when unset
# A rank that hits a NCCL error or timeout aborts (and srun ends the step) instead of hanging.
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
export NCCL_ASYNC_ERROR_HANDLING="${NCCL_ASYNC_ERROR_HANDLING:-1}"   # the same for older torch releases
# One hardware queue per GPU: kernels run in issue order, so a TP all-reduce issued before a
# matmul is scheduled before it (what Megatron-style communication overlap relies on).
export CUDA_DEVICE_MAX_CONNECTIONS=1
# 8 ranks per node: keep each rank's CPU thread pools within its own cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-8}}"

# ---------------------------------------------------------------- run configuration
source "$GLMD_ROOT/launch/config_overrides.sh"   # not BASH_SOURCE: sbatch runs a spooled copy
glmd_set_args -- ${USER_SETS[@]+"${USER_SETS[@]}"}

# srun starts one task per GPU. launch/slurm_task.sh picks the task's GPU from what it sees: device
# 0 where the site binds one GPU per task, else GPU SLURM_LOCALID of the node's GPUs.
# --distribution=block: consecutive ranks on the same node (ranks 8k..8k+7 on node k), which the
# layout relies on: TP and DP groups inside a node, one pipeline stage per node.
# --kill-on-bad-exit: one failed rank ends the whole step rather than leaving the others in NCCL.
LAUNCH=(srun --nodes="$NNODES" --ntasks="$NTASKS" --ntasks-per-node="$GPUS_PER_NODE" --distribution=block
        --kill-on-bad-exit=1)
[[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && LAUNCH+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")  # srun does not inherit it
LAUNCH+=(bash launch/slurm_task.sh "$PYTHON" -m megatron_glmd.cli.train --config "$CONFIG"
         ${SET_ARGS[@]+"${SET_ARGS[@]}"})

# ---------------------------------------------------------------- plan (refuses bad layouts)
echo "job $JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $NNODES nodes [$NODELIST], $NTASKS ranks, master $MASTER_ADDR:$MASTER_PORT"
echo "env: NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME NCCL_IB_DISABLE=$NCCL_IB_DISABLE NCCL_IB_HCA=${NCCL_IB_HCA:-<all>}" \
     "TORCH_NCCL_ASYNC_ERROR_HANDLING=$TORCH_NCCL_ASYNC_ERROR_HANDLING CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS=$OMP_NUM_THREADS"
"$PYTHON" -m megatron_glmd.cli.launch_plan --config "$CONFIG" --nodes "$NNODES" --gpus-per-node "$GPUS_PER_NODE" \
    --nodelist "$(IFS=,; echo "${HOSTS[*]}")" --teacher-model "$TEACHER_MODEL" ${SET_ARGS[@]+"${SET_ARGS[@]}"}
CMD=$(printf '%q ' "${LAUNCH[@]}")
echo "launch command (in $GLMD_ROOT): ${CMD% }"
if ((DRY_RUN)); then
    echo "dry run: nothing started"
    exit 0
fi

# ---------------------------------------------------------------- run, requeue on USR1
EX_TEMPFAIL=75   # glmd-train: saved a checkpoint and stopped because a signal asked it to
finish() {       # $1: the training step's exit status
    local rc=$1
    case "$rc" in
        0) echo "$(date -u +%FT%TZ) training finished (status 0)"
           exit 0 ;;
        "$EX_TEMPFAIL")
           echo "$(date -u +%FT%TZ) the ranks saved a checkpoint and stopped (status $rc):" \
                "requeueing job $JOB_ID (training resumes from its latest checkpoint)"
           scontrol requeue "$JOB_ID" || { echo "error: scontrol requeue $JOB_ID failed" >&2; exit 1; }
           exit 0 ;;
        *) echo "$(date -u +%FT%TZ) training step failed with status $rc: not requeued (a failure is for" \
                "a person to look at; the last checkpoint is in the run's save_dir)"
           exit "$rc" ;;
    esac
}
on_usr1() {
    echo "$(date -u +%FT%TZ) USR1: time limit near; asking the ranks to save and stop"
    kill -USR1 "$STEP_PID" 2>/dev/null || true   # srun forwards the signal to every task
    local rc=0
    wait "$STEP_PID" || rc=$?                    # the ranks save a checkpoint and exit
    finish "$rc"
}
trap on_usr1 USR1
# srun in the background and `wait`: bash runs a trap only between commands, and `wait`
# returns as soon as a trapped signal arrives.
"${LAUNCH[@]}" &
STEP_PID=$!
rc=0
wait "$STEP_PID" || rc=$?
finish "$rc"
