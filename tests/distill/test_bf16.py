"""bf16 training: the teacher's bf16 hidden state crosses a stage boundary as uint8 bytes (a type
NCCL carries) and comes back intact, and the bf16 curve tracks the fp32 one."""
import torch

from megatron_glmd.config import run_config_from_dict
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


def _pretrain_teacher(rank, world, teacher_dir):
    Trainer(run_config("pretrain", 1, 1, teacher_dir, iterations=2), train_data()).train()


def _distill(rank, world, pp, precision, teacher_dir, save_dir):
    values = run_config("distill", 1, pp, save_dir, teacher=teacher_dir, iterations=3).to_dict()
    values["train"]["precision"] = precision
    trainer = Trainer(run_config_from_dict(values), train_data())
    teacher_dtypes = {p.dtype for p in trainer.stage.teacher.parameters()}
    # Gradients are accumulated in fp32 and must be reduced over DP in fp32, not in bf16.
    assert trainer.engine.communication_data_type == torch.float32
    return [r["loss"] for r in trainer.train()], teacher_dtypes


def test_bf16_pipeline_matches_bf16_single_stage_and_tracks_fp32(tmp_path):
    teacher = str(tmp_path / "teacher")
    run_distributed(1, _pretrain_teacher, teacher)
    fp32, _ = run_distributed(1, _distill, 1, "fp32", teacher, str(tmp_path / "fp32"))[0]
    bf16, dtypes = run_distributed(1, _distill, 1, "bf16", teacher, str(tmp_path / "bf16"))[0]
    piped = run_distributed(2, _distill, 2, "bf16", teacher, str(tmp_path / "bf16pp2"))
    assert dtypes == {torch.bfloat16}
    for curve, stage_dtypes in piped:
        assert stage_dtypes == {torch.bfloat16}
        torch.testing.assert_close(torch.tensor(curve), torch.tensor(bf16), rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=5e-2, atol=1e-3)
