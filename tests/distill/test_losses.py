"""L'_sp, its ablations and the vocab-parallel cross-entropy against naive full-vocabulary formulas."""
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.parallel.cross_entropy import vocab_parallel_cross_entropy
from megatron_glmd.config import DistillLossConfig
from megatron_glmd.distill.losses import (distill_loss_sums, distill_normalizer,
                                          distill_token_mask)
from megatron_glmd.parallel import ParallelGrid, pad_vocab_size, vocab_shard_real_columns
from tests.distributed import run_distributed

B, S, V = 2, 6, 37


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, S, V, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(B, S, V, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, V, (B, S), generator=g)
    length = torch.tensor([6, 4])
    loss_mask = torch.zeros(B, S)
    loss_mask[0, 3:6] = 1
    loss_mask[1, 2:4] = 1
    return student, teacher, target, loss_mask, length


def _naive_kl(student, teacher, tau):
    p_t = F.softmax(teacher / tau, -1)
    return (p_t * (F.log_softmax(teacher / tau, -1) - F.log_softmax(student / tau, -1))).sum(-1) * tau ** 2


@pytest.mark.parametrize("tokens", ["valid", "all", "infilled"])
def test_distill_sum_matches_naive_kl_on_selected_tokens(tokens):
    student, teacher, target, loss_mask, length = _inputs()
    cfg = DistillLossConfig(temperature=15.0, distill_tokens=tokens)
    student = student.requires_grad_()
    sums = distill_loss_sums(cfg, student, teacher, target, loss_mask, length, tp_group=None, vocab_end=V,
                             vocab_size=V)
    positions = torch.arange(S).unsqueeze(0)
    expected_mask = {"valid": positions < length.unsqueeze(1), "all": torch.ones(B, S, dtype=torch.bool),
                     "infilled": loss_mask > 0}[tokens]
    assert torch.equal(distill_token_mask(cfg, length, loss_mask), expected_mask)
    naive = (_naive_kl(student, teacher, 15.0) * expected_mask).sum()
    torch.testing.assert_close(sums["distill"].double(), naive, rtol=1e-7, atol=1e-9)
    assert set(sums) == {"distill"}
    grad, = torch.autograd.grad(sums["distill"], student)
    ref, = torch.autograd.grad(naive, student)
    torch.testing.assert_close(grad, ref, rtol=1e-7, atol=1e-9)


def test_normalisers():
    _, _, _, loss_mask, length = _inputs()
    assert distill_normalizer(DistillLossConfig(), length, loss_mask).item() == 10  # 6 + 4 non-pad tokens
    assert distill_normalizer(DistillLossConfig(normalize_by="positions"), length, loss_mask).item() == B * S
    assert distill_normalizer(DistillLossConfig(distill_tokens="infilled"), length, loss_mask).item() == 5


def test_mse_ablation_and_hard_label_term():
    student, teacher, target, loss_mask, length = _inputs(1)
    cfg = DistillLossConfig(divergence="mse", hard_label_weight=0.5)
    sums = distill_loss_sums(cfg, student, teacher, target, loss_mask, length, tp_group=None, vocab_end=V,
                             vocab_size=V)
    valid = (torch.arange(S).unsqueeze(0) < length.unsqueeze(1)).double()
    mse = ((student - teacher) ** 2).mean(-1)
    torch.testing.assert_close(sums["distill"].double(), (mse * valid).sum())
    ce = F.cross_entropy(student.reshape(-1, V), target.reshape(-1), reduction="none").reshape(B, S)
    torch.testing.assert_close(sums["hard_label"].double(), (ce * loss_mask.double()).sum())


def test_bad_loss_options_are_named():
    with pytest.raises(ValueError, match="loss.distill_tokens must be one of valid, all, infilled, got 'pads'"):
        DistillLossConfig(distill_tokens="pads").validate()
    with pytest.raises(ValueError, match="loss.temperature must be a finite number > 0"):
        DistillLossConfig(temperature=-1).validate()


def test_cross_entropy_excludes_padding_columns():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 12, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 9, 1, 9])
    loss = vocab_parallel_cross_entropy(logits, target, vocab_end=10)
    ref = F.cross_entropy(logits[:, :10], target, reduction="none")
    torch.testing.assert_close(loss.double(), ref)
    grad, = torch.autograd.grad(loss.sum(), logits)
    ref_grad, = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(grad[:, :10], ref_grad[:, :10])
    assert torch.all(grad[:, 10:] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_leaves_the_logits_alone_and_returns_their_dtype(dtype):
    """One working buffer of its own: the caller's logits (which other losses read too) are unchanged
    after forward and backward, and the gradient comes back in their dtype."""
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(6, 16, generator=g) * 3).to(dtype).requires_grad_()
    before = logits.detach().clone()
    target = torch.tensor([0, 1, 7, 11, 3, 11])
    loss = vocab_parallel_cross_entropy(logits, target, vocab_end=12)
    loss.sum().backward()
    assert torch.equal(logits.detach(), before) and logits.grad.dtype == dtype and loss.dtype == torch.float32
    # fp32 arithmetic on logits of size <= 12: a few ulp of 12, about 4e-6 at most
    ref = F.cross_entropy(before[:, :12].double(), target, reduction="none")
    torch.testing.assert_close(loss.double(), ref, rtol=0, atol=1e-5)


def _sharded(rank, world, divergence):
    """Each TP rank holds a vocabulary shard (the last one partly padding) of the same logits."""
    grid = ParallelGrid.build(tp_size=world)
    vocab = 250
    padded = pad_vocab_size(vocab, world)
    g = torch.Generator().manual_seed(11)
    student = torch.randn(B, S, padded, generator=g) * 4
    teacher = torch.randn(B, S, padded, generator=g) * 4
    target = torch.randint(0, vocab, (B, S), generator=g)
    _, _, _, loss_mask, length = _inputs()
    shard = padded // world
    local = student[..., rank * shard:(rank + 1) * shard].clone().requires_grad_()
    cfg = DistillLossConfig(temperature=2.0, divergence=divergence, hard_label_weight=1.0)
    end = vocab_shard_real_columns(vocab, padded, rank, world)
    sums = distill_loss_sums(cfg, local, teacher[..., rank * shard:(rank + 1) * shard], target, loss_mask, length,
                             tp_group=grid.tp_group, vocab_end=end, vocab_size=vocab)
    total = sums["distill"] + sums["hard_label"]
    total.backward()
    return {k: v.item() for k, v in sums.items()}, local.grad


@pytest.mark.parametrize("divergence", ["kl", "mse"])
def test_sharded_losses_equal_full_vocabulary(divergence):
    world, vocab = 2, 250
    results = run_distributed(world, _sharded, divergence)
    padded = pad_vocab_size(vocab, world)
    g = torch.Generator().manual_seed(11)
    student = (torch.randn(B, S, padded, generator=g) * 4)[..., :vocab].double().requires_grad_()
    teacher = (torch.randn(B, S, padded, generator=g) * 4)[..., :vocab].double()
    target = torch.randint(0, vocab, (B, S), generator=g)
    _, _, _, loss_mask, length = _inputs()
    valid = (torch.arange(S).unsqueeze(0) < length.unsqueeze(1)).double()
    if divergence == "kl":
        distill = (_naive_kl(student, teacher, 2.0) * valid).sum()
    else:
        distill = (((student - teacher) ** 2).mean(-1) * valid).sum()
    ce = (F.cross_entropy(student.reshape(-1, vocab), target.reshape(-1), reduction="none").reshape(B, S)
          * loss_mask.double()).sum()
    (distill + ce).backward()
    full_grad = torch.cat([r[1] for r in results], dim=-1)
    for sums, _ in results:
        assert sums["distill"] == pytest.approx(distill.item(), rel=1e-5)
        assert sums["hard_label"] == pytest.approx(ce.item(), rel=1e-5)
    torch.testing.assert_close(full_grad[..., :vocab].double(), student.grad, rtol=1e-4, atol=1e-6)
    assert torch.all(full_grad[..., vocab:] == 0)
