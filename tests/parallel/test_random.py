"""RNG tracker: per-TP-rank streams inside TP regions, shared stream elsewhere, replay on recompute."""
import torch
import torch.nn.functional as F

from megatron_glmd.model import GLMStage
from megatron_glmd.parallel import checkpoint, get_rng_tracker, model_parallel_seed
from tests.model.helpers import glm_batch, tiny_config


def _draws(tp_rank):
    model_parallel_seed(42, tp_rank=tp_rank)
    with get_rng_tracker().fork():
        tp_stream = torch.rand(8)
    shared = torch.rand(8)
    return tp_stream, shared


def test_tp_stream_differs_per_rank_and_shared_stream_does_not():
    tp0, shared0 = _draws(0)
    tp1, shared1 = _draws(1)
    assert not torch.equal(tp0, tp1)
    assert torch.equal(shared0, shared1)
    # fork() leaves the shared stream where it was: same as seeding without forking.
    torch.manual_seed(42)
    assert torch.equal(torch.rand(8), shared0)


def test_fork_advances_its_own_stream():
    model_parallel_seed(3)
    tracker = get_rng_tracker()
    with tracker.fork():
        a = torch.rand(4)
    with tracker.fork():
        b = torch.rand(4)
    assert not torch.equal(a, b)


def test_checkpoint_replays_dropout_masks():
    """A checkpointed block with dropout gives the same output and gradients as an unchecked one."""
    def run(checkpointed):
        model_parallel_seed(11)
        x = torch.randn(4, 16, requires_grad=True, generator=torch.Generator().manual_seed(0))

        def block(t):
            with get_rng_tracker().fork():
                t = F.dropout(t, 0.5)
            return F.dropout(t * 2, 0.5).tanh()

        y = checkpoint(block, x) if checkpointed else block(x)
        after = torch.rand(3)  # the shared stream must be where an unchecked run leaves it
        y.sum().backward()
        return y.detach(), x.grad, after

    y0, g0, r0 = run(False)
    y1, g1, r1 = run(True)
    assert torch.equal(y0, y1) and torch.equal(g0, g1) and torch.equal(r0, r1)


def test_activation_checkpointing_matches_plain_training_step_with_dropout():
    config = tiny_config(hidden_dropout=0.2, attention_dropout=0.2)
    results = []
    for recompute in (False, True):
        model_parallel_seed(5)
        model = GLMStage(config.replace(checkpoint_activations=recompute)).init_weights(5).train()
        ids, pos, sep, length = glm_batch(config.vocab_size)
        logits = model(ids, pos, sep, length)
        logits.float().logsumexp(-1).mean().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for name in results[0][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], rtol=1e-6, atol=1e-7, msg=name)
