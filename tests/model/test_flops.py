"""FLOP counts against hand computation from the published shapes (no call into the formulas under test
for the expected values)."""
import pytest

from megatron_glmd.config import preset
from megatron_glmd.model.flops import (forward_flops_per_token, layer_forward_flops, logits_flops, stage_flops,
                                       training_flops_per_token)

SEQ = 512
# glm-2b: h 2048, f 8192, 36 layers; glm-10b: h 4096, f 16384, 48 layers; GPT-2 vocabulary 50257.
# Per token and layer, forward: QKV 2*3h^2, attention output 2*h^2, MLP 2*2*h*f, scores and
# weighted values 2*s*h each.
L2B = 2 * 3 * 2048**2 + 2 * 2048**2 + 2 * 2 * 2048 * 8192 + 2 * 2 * SEQ * 2048      # 104,857,600
L10B = 2 * 3 * 4096**2 + 2 * 4096**2 + 2 * 2 * 4096 * 16384 + 2 * 2 * SEQ * 4096    # 411,041,792
V1, V2, V4 = 50304, 50432, 50688          # 50257 padded to a multiple of 128, 256, 512


def test_layer_and_logits_by_hand():
    assert L2B == 104_857_600 and L10B == 411_041_792
    assert layer_forward_flops(preset("glm-2b"), SEQ) == L2B
    assert layer_forward_flops(preset("glm-10b"), SEQ) == L10B
    assert logits_flops(preset("glm-2b")) == 2 * 2048 * V1
    assert logits_flops(preset("glm-2b"), tp=4) == 2 * 2048 * V4     # the padded columns are computed too
    assert forward_flops_per_token(preset("glm-10b"), SEQ) == 48 * L10B + 2 * 4096 * V1


def test_training_flops_model_and_hardware():
    student, teacher = preset("glm-2b"), preset("glm-10b")
    student_fwd = 36 * L2B + 2 * 2048 * V1
    teacher_fwd = 48 * L10B + 2 * 4096 * V1
    model = 3 * student_fwd + teacher_fwd                 # forward + backward (2x), teacher forward
    assert training_flops_per_token(student, teacher, SEQ, recompute=False) == model
    # Recompute reruns each layer's forward, not the logits.
    assert training_flops_per_token(student, teacher, SEQ, recompute=True) == model + 36 * L2B
    assert training_flops_per_token(student, None, SEQ, recompute=False) == 3 * student_fwd
    # docs/design.md: ~36 GFLOP per token with recompute (35.86 G), ~32 G without.
    assert model + 36 * L2B == pytest.approx(35.86e9, rel=1e-3)


@pytest.mark.parametrize("recompute", [False, True])
def test_stage_flops_by_hand(recompute):
    student, teacher = preset("glm-2b"), preset("glm-10b")
    per_student_layer = (4 if recompute else 3) * L2B
    middle = stage_flops(student, teacher, (3, 10), (5, 14), last=False, seq_length=SEQ, recompute=recompute, tp=2)
    assert middle.student == 7 * per_student_layer and middle.teacher == 9 * L10B
    assert middle.recompute == (7 * L2B if recompute else 0)
    assert middle.model == 7 * 3 * L2B + 9 * L10B
    last = stage_flops(student, teacher, (30, 36), (40, 48), last=True, seq_length=SEQ, recompute=recompute, tp=2)
    assert last.student == 6 * per_student_layer + 3 * 2 * 2048 * V2
    assert last.teacher == 8 * L10B + 2 * 4096 * V2
    alone = stage_flops(student, None, (30, 36), None, last=True, seq_length=SEQ, recompute=recompute, tp=1)
    assert alone.teacher == 0 and alone.student == 6 * per_student_layer + 3 * 2 * 2048 * V1


def test_factorised_embedding_by_hand():
    """+al: logits through h -> E -> V, and the first stage's E -> h projection."""
    student = preset("glm-2b", embedding_size=256)
    logits = 2 * 2048 * 256 + 2 * 256 * V2
    assert logits_flops(student, tp=2) == logits
    first = stage_flops(student, None, (0, 4), None, first=True, last=False, seq_length=SEQ, recompute=False, tp=2)
    assert first.student == 4 * 3 * L2B + 3 * 2 * 256 * 2048
    assert training_flops_per_token(student, None, SEQ, recompute=False, tp=2) == \
        3 * (2 * 256 * 2048 + 36 * L2B + logits)
