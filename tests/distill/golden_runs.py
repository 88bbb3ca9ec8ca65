"""The fixed tiny runs behind the golden-loss test; ``python -m tests.distill.golden_runs`` prints
their first losses (how the recorded values in test_golden_losses.py were produced)."""
import os
import sys
import tempfile

from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed

GOLDEN_ITERATIONS = 5
GOLDEN_LAYOUTS = [(1, 1, 1), (2, 2, 1)]  # (TP, PP, DP)


def pretrain_then_distill_losses(rank, world, tp, pp, workdir):
    """First losses of a fixed tiny pretrain run and of a distill run from its checkpoint."""
    teacher_dir = os.path.join(workdir, "teacher")
    teacher = Trainer(run_config("pretrain", tp, pp, teacher_dir, iterations=GOLDEN_ITERATIONS), train_data())
    pretrain = [r["loss"] for r in teacher.train()]
    student = Trainer(run_config("distill", tp, pp, os.path.join(workdir, "student"), teacher=teacher_dir,
                                 iterations=GOLDEN_ITERATIONS), train_data())
    distill = [r["loss"] for r in student.train()]
    return {"pretrain": pretrain, "distill": distill}


def golden_losses(tp, pp, dp):
    with tempfile.TemporaryDirectory() as workdir:
        return run_distributed(tp * pp * dp, pretrain_then_distill_losses, tp, pp, workdir)


if __name__ == "__main__":
    for layout in GOLDEN_LAYOUTS:
        result = golden_losses(*layout)[0]
        for mode, curve in result.items():
            print(layout, mode, "[" + ", ".join(repr(x) for x in curve) + "]")
    sys.exit(0)
