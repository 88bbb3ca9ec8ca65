#!/bin/bash
# GLMD stage 1: GLM-10B teacher -> GLM-2B student on 40 A100-40GB (5 nodes x 8 GPUs) under Slurm.
#
#   sbatch launch/distill_10b_2b.sh [--set section.key=value ...]     # submit from the repository root
#   bash launch/distill_10b_2b.sh --dry-run [--set ...]               # print the plan, start nothing
#
# --dry-run works inside an allocation (uses its Slurm variables) and outside one (assumes the
# allocation the #SBATCH lines below request). It prints the layout, per-stage layer ranges and
# per-GPU memory, whether that fits an A100-40GB, the modelled cost, and the exact srun command.
#
# Layout: TP=4, PP=5, DP=2. Why:
#   * 40 = TP x PP x DP. TP <= 8 keeps tensor parallelism inside a node (NVLink), and TP must divide
#     both models' heads (64 and 32): TP in {1, 2, 4, 8}. DP must divide the global batch 64, so DP
#     is a power of two too. The factor 5 of 40 can therefore only go into PP: PP in {5, 10, 20}.
#     PP = 5, the smallest, gives the smallest pipeline bubble and one stage per node.
#   * That leaves TP x DP = 8 inside each node. TP=4, DP=2 keeps every TP all-reduce and every DP
#     gradient reduction on the node's NVLink; only the pipeline's point-to-point activations
#     (student and teacher hidden states, 2 x 512 x (2048 + 4096) bf16 values per micro-batch)
#     cross InfiniBand between consecutive nodes.
#   * Micro-batch 1 with 64 / 2 = 32 micro-batches per DP replica keeps the 1F1B bubble at
#     (p-1)/(m+p-1) = 4/36 = 11%. TP=2/DP=4 would give 16 micro-batches (bubble 20%), TP=1/DP=8
#     8 (33%); TP=8/DP=1 (bubble 6%) splits the 2048-wide student into 256-wide shards whose
#     matmuls are too small to hide two all-reduces per layer. The one-node run of the paper's code
#     used the same TP=4, DP=2.
#   * Memory is not the constraint at this layout (about 2.7 GiB of model state and activations
#     per GPU; --dry-run prints the table), so micro-batch 1 costs nothing.
#
# Requeue: Slurm sends USR1 to this shell 180 s before the time limit; the trap forwards it to
# the srun step (srun passes it to every rank), glmd-train saves a checkpoint at the end of the
# current iteration and exits, then the trap requeues the job (same job id) and exits cleanly.
# The requeued job resumes from checkpoint.save_dir/latest with nothing repeated. A failing
# training step is not requeued (a crash should be looked at, not looped); node failures are,
# through --requeue (they resume from the last periodic checkpoint).
#
# Paths come from the environment when set (else from the run config):
#   GLMD_TEACHER_CKPT  GLM-10B pretrain checkpoint at TP=4      -> teacher_checkpoint
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
#SBATCH --time=12:00:00                # the modelled run is ~9 h; requeue covers anything longer
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
# the submit directory first, then from the script's own location.
if [[ -z "${GLMD_ROOT:-}" ]]; then
    if [[ -n "${SLURM_SUBMIT_DIR:-}" && -f "$SLURM_SUBMIT_DIR/launch/distill_10b_2b.sh" ]]; then
        GLMD_ROOT="$SLURM_SUBMIT_DIR"
    else
        GLMD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    fi
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

# srun starts one task per GPU; every task sees the node's 8 GPUs and takes GPU LOCAL_RANK
# (no --gpus-per-task, which would hide all but one GPU from each task on some clusters).
# --kill-on-bad-exit: one failed rank ends the whole step rather than leaving the others in NCCL.
LAUNCH=(srun --nodes="$NNODES" --ntasks="$NTASKS" --ntasks-per-node="$GPUS_PER_NODE" --kill-on-bad-exit=1)
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
requeue() {
    echo "$(date -u +%FT%TZ) USR1: time limit near; asking the ranks to save and stop"
    kill -USR1 "$STEP_PID" 2>/dev/null || true   # srun forwards the signal to every task
    wait "$STEP_PID" || true                     # the ranks save a checkpoint and exit
    echo "$(date -u +%FT%TZ) requeueing job $JOB_ID (training resumes from its latest checkpoint)"
    scontrol requeue "$JOB_ID"
    exit 0
}
trap requeue USR1
# srun in the background and `wait`: bash runs a trap only between commands, and `wait`
# returns as soon as a trapped signal arrives.
"${LAUNCH[@]}" &
STEP_PID=$!
rc=0
wait "$STEP_PID" || rc=$?
echo "$(date -u +%FT%TZ) training step exited with status $rc"
exit "$rc"
