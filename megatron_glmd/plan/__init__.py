"""Launch planning: check a run's parallel layout and model its memory and time; starts nothing.

    nodelist   Slurm host lists (standard library only: the Slurm script calls it before torch)
    layout     the checks a layout must pass, the teacher's shape
    hardware   the machine's constants (peak FLOP/s, link bandwidths, memory), one CLI flag each
    memory     per-stage, per-GPU memory (model state, activations)
    cost       the time model: per-stage time per micro-batch, 1F1B step, DP and tie reductions
    build      the plan of one layout (layers, FLOPs, memory, time)
    search     every feasible layout of a GPU count, ranked by modelled step time
    report     the text the CLI prints

``megatron_glmd.cli.launch_plan`` (``glmd-launch-plan``) is the thin command line over these. This
package's ``__init__`` imports nothing, so that ``nodelist`` stays free of torch.
"""


class PlanError(ValueError):
    """The layout cannot run (or does not fit); the message names the value."""
