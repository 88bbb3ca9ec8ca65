"""Launch planning: check a run's parallel layout and model its memory and time; starts nothing.

    nodelist   Slurm host lists (standard library only: the Slurm script calls it before torch)
    layout     the checks a layout must pass, the teacher's shape
    hardware   the machine's constants (peak FLOP/s, link bandwidths, memory), one CLI flag each
    deepspeed_state  what DeepSpeed's ZeRO-1 optimizers keep per parameter and move over DP (cited)
    memory     per-stage, per-GPU memory (model state, activations, the DP reduction's transient)
    launches   kernel launches per layer (the host side of a stage's time)
    cost       the time model: per-stage time per micro-batch, 1F1B step, DP and tie reductions
    checkpointing  ``train.checkpoint_activations: auto``, decided per layout (planner and engine)
    build      the plan of one layout (layers, FLOPs, memory, time)
    search     every feasible layout of a GPU count, ranked by modelled step time
    report     the text the CLI prints

``megatron_glmd.cli.launch_plan`` (``glmd-launch-plan``) is the thin command line over these. This
package's ``__init__`` imports nothing, so that ``nodelist`` stays free of torch.
"""


class PlanError(ValueError):
    """The layout cannot run (or does not fit); the message names the value."""
