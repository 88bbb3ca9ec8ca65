"""The CPU-testable pieces of gpu_check.sh's stage-0 slice (tools/benchmarks/gpu_check_stage.py): the
model code it runs, the planner figure it compares against and its summary of the profiled kernels."""
import torch

from tools.benchmarks import gpu_check_stage as stage


def test_stage_slice_steps_on_tiny_models():
    from megatron_glmd.config import preset
    from megatron_glmd.model.partition import StageLayers
    student_cfg = preset("tiny-student", checkpoint_activations=True)
    teacher_cfg = preset("tiny-teacher", hidden_dropout=0.0, attention_dropout=0.0)
    student, teacher = stage.build_slice(student_cfg, teacher_cfg, StageLayers((0, 1), (0, 2)), 2, "cpu")
    batch = stage.make_batch(student_cfg.vocab_size, 32, "cpu")
    assert batch[1][0, :, 15:18].tolist() == [[15, 16, 16], [0, 1, 2]]   # Part A positions, then Part B blocks
    out = stage.train_step(student, teacher, batch, torch.randn(1, 32, student_cfg.hidden_size))
    assert out.shape == (1, 32, teacher_cfg.hidden_size) and not out.requires_grad
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_planner_figure_counts_the_parameters_the_slice_builds():
    from megatron_glmd.model import GLMStage
    cfg, student_cfg, teacher_cfg, layers, dp = stage.slice_setup()
    assert (layers.student, layers.teacher, dp) == ((0, 9), (0, 8), 8)   # 40 GPUs at TP=1, PP=5
    plan = stage.planned_bytes(cfg, student_cfg, teacher_cfg, layers, dp)
    for config, span, key in ((student_cfg, layers.student, "student_params"),
                              (teacher_cfg, layers.teacher, "teacher_params")):
        built = GLMStage(config, pp_rank=0, pp_size=5, layer_range=span, device="meta")
        assert sum(p.numel() for p in built.parameters()) == plan[key]
    weights = 2 * plan["teacher_params"] + 4 * plan["student_params"]   # bf16 weights, student's bf16 grads
    assert weights < plan["slice"] < plan["stage_total"]


def test_kernel_summary_unions_intervals_and_spots_fused_attention():
    events = [("gemm", 0, 10), ("pytorch_flash::flash_fwd_kernel", 5, 20), ("gemm", 30, 31)] * 1
    got = stage.kernel_summary(events + [(n, a + 100, b + 100) for n, a, b in events], steps=2)
    assert got["busy_us_per_step"] == 21.0 and got["kernels_per_step"] == 3.0
    assert got["fused_attention"] and got["attention_kernels"] == ["pytorch_flash::flash_fwd_kernel"]
    assert got["top_kernels_us_per_step"] == {"pytorch_flash::flash_fwd_kernel": 15.0, "gemm": 11.0}
    math_path = stage.kernel_summary([("cunn_SoftMaxForward<bf16>", 0, 4), ("gemm", 4, 9)], steps=1)
    assert not math_path["fused_attention"] and math_path["attention_kernels"] == ["cunn_SoftMaxForward<bf16>"]
