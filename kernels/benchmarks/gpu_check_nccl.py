"""Part 5 of `gpu_check.sh`: every collective and dtype the engine uses, on a one-rank NCCL group.

    python -m kernels.benchmarks.gpu_check_nccl --out OUT_DIR/nccl.json [--backend gloo]

`CHECKS` lists the (operation, dtype) pairs of docs/design.md "Every communication call": the
project's own calls and DeepSpeed's on its behalf (pipeline sends of bf16 hidden states, uint8
teacher bytes and int64 metadata; ZeRO-1's fp32 gradient reduce-scatter and bf16 parameter
all-gather; the tied-embedding and clipping all-reduces). A one-rank group (world 1, loopback
rendezvous) cannot test a reduction across ranks; it proves that NCCL accepts each operation with
that dtype on the engine's device and returns the data bit-exactly (a sum or max over one rank is
the input). Point-to-point runs as a send and a receive to the same rank in one
`batch_isend_irecv` (NCCL's group call; `dist.send` refuses its own rank). Each check is "ok" or
"failed" with the error; the JSON is rewritten after every check, so a hang (the group's 60 s
NCCL timeout aborts the process, or the script's timeout kills it) leaves the checks done so far.
`--backend gloo` runs the same list on CPU tensors (what the unit test does).
"""
from __future__ import annotations

import datetime
import os
import socket
import sys

import torch
import torch.distributed as dist

B16, F32, F64, I64, U8, F16 = torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.uint8, torch.float16
# name: (operation, dtype, shape, where the engine makes this call); point-to-point last, since a
# send to the own rank is the likeliest to hang
CHECKS = {
    "tp_activations_all_reduce_bf16": ("all_reduce_sum", B16, (512, 2048), "parallel/mappings.py reduce_from_tp"),
    "tp_all_gather_list_bf16": ("all_gather", B16, (512, 1024), "parallel/mappings.py gather_from_tp"),
    "kernel_stats_all_gather_fp32": ("all_gather_into_tensor", F32, (5, 512), "kernels/softmax_kl_stats.py"),
    "kernel_stats_all_gather_fp64": ("all_gather_into_tensor", F64, (5, 512), "softmax_kl_stats.py, fp64"),
    "ce_row_max_all_reduce_fp32": ("all_reduce_max", F32, (512,), "parallel/cross_entropy.py"),
    "ce_row_max_all_reduce_fp64": ("all_reduce_max", F64, (512,), "parallel/cross_entropy.py, fp64"),
    "ce_sums_all_reduce_fp32": ("all_reduce_sum", F32, (2, 512), "parallel/cross_entropy.py"),
    "mse_rows_all_reduce_fp32": ("all_reduce_sum", F32, (512,), "distill/losses.py _mse_sum"),
    "token_counts_all_reduce_fp64": ("all_reduce_sum", F64, (3,), "distill/objective.py begin_step"),
    "predictions_all_reduce_max_int64": ("all_reduce_max", I64, (2, 1000), "task_trainer _gather_predictions"),
    "stop_flag_all_reduce_max_fp32": ("all_reduce_max", F32, (1,), "engine/trainer.py _stop_requested"),
    "intermediate_all_reduce_fp32": ("all_reduce_sum", F32, (1,), "distill/objective.py intermediate_loss"),
    "eval_sums_broadcast_fp32": ("broadcast", F32, (6,), "engine/trainer.py evaluate"),
    "teacher_bytes_broadcast_uint8": ("broadcast", U8, (1, 512, 8192), "DeepSpeed p2p fallback (broadcast)"),
    "tied_grad_all_reduce_fp32": ("all_reduce_sum", F32, (1 << 20,), "DeepSpeed _exec_reduce_tied_grads, bf16"),
    "tied_grad_all_reduce_fp16": ("all_reduce_sum", F16, (1 << 20,), "DeepSpeed _exec_reduce_tied_grads, fp16"),
    "zero_grads_reduce_scatter_fp32": ("reduce_scatter_tensor", F32, (1 << 20,), "DeepSpeed ZeRO-1 / bf16 opt"),
    "zero_params_all_gather_bf16": ("all_gather_into_tensor", B16, (1 << 20,), "DeepSpeed ZeRO-1 / bf16 opt"),
    "params_broadcast_bf16": ("broadcast", B16, (1 << 20,), "deepspeed.initialize"),
    "grad_norm_all_reduce_fp32": ("all_reduce_sum", F32, (1,), "DeepSpeed gradient clipping"),
    "loss_all_reduce_fp32": ("all_reduce_sum", F32, (4,), "DeepSpeed _aggregate_total_loss"),
    "barrier": ("barrier", None, (), "checkpoint/checkpointing.py save_checkpoint"),
    "hidden_p2p_bf16": ("p2p", B16, (1, 512, 2048), "DeepSpeed pipe p2p: student hidden and its grad"),
    "teacher_bytes_p2p_uint8": ("p2p", U8, (1, 512, 8192), "DeepSpeed pipe p2p: teacher hidden as bytes"),
    "metadata_p2p_int64": ("p2p", I64, (4,), "DeepSpeed pipe p2p: sep/length, shapes"),
}


def random_tensor(dtype, shape, device, seed):
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype).to(device)
    low, high = (0, 256) if dtype == U8 else (-(1 << 40), 1 << 40)
    return torch.randint(low, high, shape, generator=gen, dtype=dtype).to(device)


def run_op(op: str, x):
    """Run one operation on a one-rank group; returns what should equal `x` bit for bit."""
    if op in ("all_reduce_sum", "all_reduce_max"):
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM if op == "all_reduce_sum" else dist.ReduceOp.MAX)
        return y
    if op == "all_gather":
        out = [torch.empty_like(x)]
        dist.all_gather(out, x)
        return out[0]
    if op == "all_gather_into_tensor":   # under the name the project calls (softmax_kl_stats.gather)
        out = torch.empty_like(x)
        (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, x)
        return out
    if op == "reduce_scatter_tensor":
        out = torch.empty_like(x)
        (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, x)
        return out
    if op == "broadcast":
        y = x.clone()
        dist.broadcast(y, src=0)
        return y
    if op == "p2p":
        y = torch.empty_like(x)
        for work in dist.batch_isend_irecv([dist.P2POp(dist.isend, x, 0), dist.P2POp(dist.irecv, y, 0)]):
            work.wait()
        return y
    raise ValueError(f"unknown operation {op!r}")


def check(name: str, device) -> dict:
    op, dtype, shape, where = CHECKS[name]
    row = {"op": op, "dtype": str(dtype).replace("torch.", "") if dtype else None, "shape": list(shape),
           "where": where}
    try:
        if op == "barrier":
            dist.barrier()
        else:
            x = random_tensor(dtype, shape, device, seed=len(name))
            y = run_op(op, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if not torch.equal(y.cpu(), x.cpu()):
                raise AssertionError(f"{op} on one rank changed the data")
        row["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - every check reports
        row["status"], row["error"] = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
    return row


def init_group(backend: str):
    """A one-rank group over loopback on a free port (the engine's device bound for NCCL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kwargs = {"device_id": torch.device("cuda", 0)} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60), **kwargs)
    return torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")


def run(args, names=None) -> dict:
    from kernels.benchmarks.gpu_check_common import write_json
    if args.backend == "nccl":
        torch.cuda.set_device(0)
    device = init_group(args.backend)
    results = {}
    try:
        for name in names or CHECKS:
            results[name] = check(name, device)
            print(f"{results[name]['status']:6s} {name}: {results[name].get('error', '')}", flush=True)
            write_json(args.out, {"part": "nccl", "status": "running", "backend": args.backend, "checks": results})
    finally:
        dist.destroy_process_group()
    failed = sorted(n for n, r in results.items() if r["status"] != "ok")
    version = ".".join(map(str, torch.cuda.nccl.version())) if args.backend == "nccl" else None
    return {"status": "failed" if failed else "ok", "backend": args.backend, "nccl_version": version,
            "checks": results, "headline": {"checks": len(results), "failed": failed}}


def _options(parser):
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl")


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    from kernels.benchmarks.gpu_check_common import part_main
    sys.exit(part_main("nccl", run, configure=_options))
