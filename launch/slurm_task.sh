#!/bin/bash
# One training rank under srun: translate Slurm's per-task variables into the torch.distributed
# ones glmd-train reads, then replace this shell with the command given as arguments.
# MASTER_ADDR and MASTER_PORT come from the batch script's environment (srun exports it).
set -euo pipefail
export RANK="$SLURM_PROCID"          # global rank: srun numbers tasks node by node, 0..NTASKS-1
export LOCAL_RANK="$SLURM_LOCALID"   # index on this node = the GPU this rank uses
export WORLD_SIZE="$SLURM_NTASKS"
exec "$@"
