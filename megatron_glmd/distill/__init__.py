"""GLMD distillation: losses, the training engine (teacher pre-training and distillation), checkpoints."""
