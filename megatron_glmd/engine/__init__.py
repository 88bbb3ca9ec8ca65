"""The training engine: DeepSpeed set-up, the pipeline of co-located teacher and student stages, the
stage-1 and task trainers, optimizer and schedule, metrics and logging."""
