"""A distill run whose teacher was converted from THUDM's Megatron layout trains (tiny shapes,
two gloo ranks at TP = 2): the engine accepts the converted checkpoint as ``teacher_checkpoint``,
loads it, and the student's loss goes down."""
import math
import os

import torch

from megatron_glmd.convert.glm_import import ImportOptions, convert_glm_checkpoint
from tests.convert.glm_reference import random_glm_state, write_megatron
from tests.distill.engine_cases import VOCAB, run_config, train_data, valid_data
from tests.distributed import run_distributed


def _distill(rank, world, teacher_dir, save_dir):
    from megatron_glmd.engine.trainer import Trainer

    trainer = Trainer(run_config("distill", 2, 1, save_dir, teacher=teacher_dir, iterations=6), train_data(),
                      valid_data())
    before = trainer.evaluate()["kl"]
    losses = [r["loss"] for r in trainer.train()]
    return {"losses": losses, "kl_before": before, "kl_after": trainer.evaluate()["kl"],
            "teacher_gelu": trainer.teacher_config.gelu}


def test_distill_from_a_converted_thudm_teacher(tmp_path):
    rows = -(-VOCAB // 128) * 128
    write_megatron(str(tmp_path / "glm"), random_glm_state(num_layers=3, hidden=32, heads=4, rows=rows), 2,
                   dtype=torch.float16)
    convert_glm_checkpoint(str(tmp_path / "glm"), str(tmp_path / "teacher"), 2, 1,
                           ImportOptions(num_attention_heads=4, vocab_size=VOCAB))
    results = run_distributed(2, _distill, str(tmp_path / "teacher"), str(tmp_path / "student"))
    for result in results:
        assert result["teacher_gelu"] == "tanh"
        assert all(math.isfinite(x) for x in result["losses"])
        assert result["losses"][-1] < result["losses"][0]
        assert result["kl_after"] < result["kl_before"]
    assert os.path.isfile(tmp_path / "student" / "latest")
