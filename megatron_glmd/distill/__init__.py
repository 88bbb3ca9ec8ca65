"""What is distilled and how: the objectives of both stages, their losses and ablations, the task modes' data,
and vocabulary compression at run time. The engine that runs them lives in :mod:`megatron_glmd.engine`,
checkpoints in :mod:`megatron_glmd.checkpoint`."""
