"""glmd-model-info: parameter counts and weight/optimizer memory of a GLM layout.

    glmd-model-info --preset glm-10b --tp 8 --pp 2 --dp 2 [--seq-length 512] [--recompute]
    glmd-model-info --config my_model.yaml --tp 2

Stages hold the layers the pretraining engine gives them: balanced by FLOPs
(:func:`megatron_glmd.model.partition.partition_layers`, the model alone, at ``--seq-length`` and
with or without per-layer recompute), so the rows match what a ``pretrain`` run builds.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..config import PRESETS, ConfigError, load_config, preset
from ..model.partition import partition_layers
from ..model.size import GiB, total_parameter_count, training_memory


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glmd-model-info", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS), help="a built-in model shape (GLM or decoder)")
    src.add_argument("--config", help="a model YAML file")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (default 1)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel size for ZeRO-1 sharding (default 1)")
    p.add_argument("--seq-length", type=int, help="sequence length the layers are balanced for "
                                                  "(default the model's max_sequence_length)")
    p.add_argument("--recompute", action="store_true", help="balance for per-layer activation recompute")
    return p


def report(config, name: str, tp: int, pp: int, dp: int, seq_length: Optional[int] = None,
           recompute: bool = False) -> str:
    config.validate(tp_size=tp, pp_size=pp)
    seq = seq_length or config.max_sequence_length
    ranges = [p.student for p in partition_layers(config, None, pp, seq_length=seq, recompute=recompute, tp=tp)]
    stages = training_memory(config, tp, pp, dp, ranges)
    total = total_parameter_count(config)
    lines = [
        f"model {name}: {config.architecture}, {config.num_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads"
        f"{f' ({config.num_key_value_heads} KV heads)' if config.is_decoder else ''}, ffn {config.ffn_size}, vocab {config.vocab_size} "
        f"(padded {config.padded_vocab_size(tp)} at TP={tp}), {config.max_sequence_length} positions",
        f"total parameters: {total:,} ({total / 1e9:.2f} B)",
        f"layout: TP={tp} PP={pp} DP={dp} ({tp * pp * dp} GPUs); memory per GPU for bf16 weights and grads, "
        f"fp32 master weights + Adam states sharded by ZeRO-1 over DP={dp} (activations not included); "
        f"layers balanced by FLOPs at seq {seq}, recompute {'on' if recompute else 'off'}",
        f"{'stage':>5} {'layers':>9} {'tp_rank':>7} {'params':>15} {'weights GiB':>11} {'grads GiB':>9} "
        f"{'optim GiB':>9} {'total GiB':>9}",
    ]
    for s in stages:
        for r in range(tp):
            lines.append(f"{s.pp_rank:>5} {f'{s.layers[0]}-{s.layers[1] - 1}':>9} {r:>7} {s.params:>15,} "
                         f"{s.weights_bytes / GiB:>11.2f} {s.grads_bytes / GiB:>9.2f} "
                         f"{s.optimizer_bytes / GiB:>9.2f} {s.total_bytes / GiB:>9.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else preset(args.preset)
        print(report(config, args.config or args.preset, args.tp, args.pp, args.dp, args.seq_length, args.recompute))
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
