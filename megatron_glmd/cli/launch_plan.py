"""glmd-launch-plan: check a run's parallel layout and print its memory and time plan; starts nothing.

    glmd-launch-plan --config launch/configs/distill_10b_2b.yaml --nodes 5 --gpus-per-node 8 \\
        --teacher-model glm-10b [--set section.key=value ...] [--rank [--top N]]

Prints the layout, per-stage layer ranges of student and teacher (balanced by FLOPs), per-stage
FLOPs and their spread, per-GPU memory per stage (DeepSpeed's optimizer state, activations, the DP
reduction's transient) and whether the peak fits the GPU, the modelled step time (1F1B bubble,
slowest stage, TP, pipeline and DP communication, host kernel launches: ``--launch-us``), hours, MFU
and HFU; ``train.checkpoint_activations: auto`` is decided for the layout. ``--rank`` instead lists
the feasible layouts of the same GPU count, each with checkpointing off and on, fastest first, and
says why the first beats the second. A layout that cannot run prints one ``error: ...`` line and exits 2.
The library is :mod:`megatron_glmd.plan`; the launch scripts in ``launch/`` call this first.
"""
from __future__ import annotations

import argparse
import sys

# Only the standard library at import time (the plan package's __init__, its node-list parser and
# its hardware flags import nothing else): ``--expand-nodelist`` (used by the Slurm script) must
# not pay for importing torch. The rest is imported in main().
from ..plan import PlanError
from ..plan.hardware import add_hardware_arguments
from ..plan.nodelist import expand_nodelist


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glmd-launch-plan", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="run configuration YAML (as for glmd-train)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable), as glmd-train does")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (ranks) per node (default 8)")
    p.add_argument("--nodelist", help="Slurm node list, e.g. gpu[01-05]; names the hosts of each stage")
    p.add_argument("--teacher-model", help="teacher shape (preset or model YAML) when the teacher checkpoint "
                                           "is not readable here; checked against it when it is")
    p.add_argument("--cpu", action="store_true",
                   help="ranks are CPU processes: no memory budget, no time model")
    p.add_argument("--rank", "--search", dest="rank", action="store_true",
                   help="rank every feasible TP x PP x DP x micro-batch layout of the GPUs by modelled step time")
    p.add_argument("--top", type=int, default=5, help="layouts --rank prints (default 5)")
    p.add_argument("--expand-nodelist", metavar="NODELIST",
                   help="only print the hosts of a Slurm node list, one per line, and exit")
    add_hardware_arguments(p)
    return p


def _report_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.expand_nodelist is not None:
        try:
            print("\n".join(expand_nodelist(args.expand_nodelist)))
        except PlanError as e:
            return _report_error(e)
        return 0
    if not args.config:
        parser.error("--config is required (or --expand-nodelist)")
    from ..config import ConfigError, load_run_config
    from ..plan.build import build_plan
    from ..plan.hardware import hardware_from_args
    from ..plan.layout import check_layout, resolve_teacher
    from ..plan.report import format_plan, format_ranking
    from ..plan.search import rank_layouts

    try:
        hardware = hardware_from_args(args, cpu=args.cpu)
        cfg = load_run_config(args.config, args.set)
        hosts = expand_nodelist(args.nodelist) if args.nodelist else None
        if args.rank:
            ranking = rank_layouts(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                   teacher=resolve_teacher(cfg, args.teacher_model), hosts=hosts, hardware=hardware)
            if not ranking.plans:
                raise PlanError(f"no layout of {args.nodes} x {args.gpus_per_node} GPUs passes every check and "
                                f"fits ({len(ranking.over_memory)} over memory, {len(ranking.refused)} refused)")
            configured = (cfg.parallel.tp, cfg.parallel.pp, cfg.train.micro_batch_size,
                          cfg.train.checkpoint_activations)
            print(format_ranking(ranking, args.nodes, args.gpus_per_node, args.top, configured), flush=True)
            return 0
        check_layout(cfg, args.nodes, args.gpus_per_node)   # layout errors before the teacher's
        plan = build_plan(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                          teacher=resolve_teacher(cfg, args.teacher_model), hosts=hosts, hardware=hardware)
    except (ConfigError, PlanError, ValueError) as e:
        return _report_error(e)
    print(format_plan(plan, cpu=args.cpu), flush=True)
    if not plan.fits:
        peak = plan.peak_stage
        return _report_error(PlanError(
            f"memory over budget: stage {peak.pp_rank} needs {peak.memory.total_bytes / 2**30:.2f} GiB per GPU + "
            f"{hardware.reserve_gib:.2f} GiB reserve = {plan.needed_gib:.2f} GiB > {hardware.gpu_memory_gib:g} GiB "
            "(--gpu-memory-gib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
