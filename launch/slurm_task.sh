#!/bin/bash
# One training rank under srun: translate Slurm's per-task variables into the torch.distributed
# ones glmd-train reads, then replace this shell with the command given as arguments.
# MASTER_ADDR and MASTER_PORT come from the batch script's environment (srun exports it).
#
# LOCAL_RANK is the CUDA device this rank uses (glmd-train calls torch.cuda.set_device on it), so
# it follows the GPUs the task actually sees: a site that binds one GPU per task (gres binding,
# --gpus-per-task=1) leaves one entry in CUDA_VISIBLE_DEVICES, and that GPU is device 0; a task
# that sees the node's GPUs takes GPU SLURM_LOCALID (its index on the node).
set -euo pipefail
export RANK="$SLURM_PROCID"          # global rank: srun numbers tasks node by node, 0..NTASKS-1
export WORLD_SIZE="$SLURM_NTASKS"
visible="${CUDA_VISIBLE_DEVICES:-}"
IFS=, read -r -a devices <<< "$visible"
if ((${#devices[@]} == 1)); then
    export LOCAL_RANK=0
elif ((${#devices[@]} > 1 && SLURM_LOCALID >= ${#devices[@]})); then
    echo "error: rank $RANK: SLURM_LOCALID=$SLURM_LOCALID but this task sees only ${#devices[@]} GPUs" \
         "(CUDA_VISIBLE_DEVICES=$visible)" >&2
    exit 2
else
    export LOCAL_RANK="$SLURM_LOCALID"
fi
exec "$@"
