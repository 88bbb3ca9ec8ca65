"""Hugging Face Llama / Qwen2 / Mistral checkpoints (random tiny models built and saved with
``transformers``, one of them sharded) convert and give transformers' logits within 1e-5 in fp32 at
TP 1, 2, 4 and PP 1, 2 on a padded batch: GQA with KV heads sharded (Mistral, 4 KV heads) and
replicated (TP above Llama's 2 and Qwen2's 1 KV heads), llama3 rope scaling, Q/K/V biases, tied and
untied heads. The converted weights are read by the engine's own loader (load_stage_weights), at
PP 1 the gradients of every layout equal TP 1's (a replicated KV head's gradient is summed over the
ranks whose query heads use it), and model/size.py counts each built stage's parameters."""
import pytest
import torch
import torch.distributed as dist

from megatron_glmd.convert.glmd_checkpoint import read_model_config
from megatron_glmd.convert.hf_import import convert_hf_checkpoint
from megatron_glmd.checkpoint.checkpointing import load_stage_weights
from megatron_glmd.model import build_stage
from megatron_glmd.model.size import stage_parameter_count
from tests.convert.hf_reference import MODELS, batch, hf_logits, hf_model
from tests.distributed import run_distributed
from tests.model.helpers import full_gradients

LAYOUTS = [(tp, pp) for tp in (1, 2, 4) for pp in (1, 2)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    ids, _, length = batch()
    out = {}
    for seed, name in enumerate(MODELS):
        model = hf_model(name, seed)
        shard = {"max_shard_size": "20KB"} if name.startswith("qwen2") else {}
        model.save_pretrained(str(root / name), safe_serialization=True, **shard)
        dirs = {}
        for tp, pp in LAYOUTS:
            dirs[tp, pp] = str(root / f"{name}-tp{tp}-pp{pp}")
            convert_hf_checkpoint(str(root / name), dirs[tp, pp], tp, pp)
        out[name] = (hf_logits(model, ids, length), dirs)
    return out


def loss_weights(shape, vocab, rank, world):
    """This rank's columns of fixed weights over the real vocabulary (zero on padded columns): the
    same function of the logits in every layout."""
    b, s, local = shape
    full = torch.zeros(b, s, local * world)
    full[..., :vocab] = torch.randn(b, s, vocab, generator=torch.Generator().manual_seed(1))
    return full.chunk(world, dim=-1)[rank]


def project_logits(rank, world, save_dirs, batch_tensors):
    """Each checkpoint's logits (stages chained, vocabulary gathered) and, at PP 1, the full gradients
    of a fixed weighting of its valid logits."""
    group = dist.group.WORLD if world > 1 else None
    ids, positions, length = batch_tensors
    valid = (torch.arange(ids.shape[1]) < length.unsqueeze(1)).unsqueeze(-1).float()
    results = {}
    for key, save_dir in save_dirs.items():
        config, _, pp = read_model_config(save_dir)
        hidden, grads, counts = ids, None, []
        for stage in range(pp):
            part = build_stage(config, tp_group=group, pp_rank=stage, pp_size=pp).eval()
            counts.append(sum(p.numel() for p in part.parameters()))
            load_stage_weights(part, save_dir, "student.", rank)
            with torch.set_grad_enabled(pp == 1):
                hidden = part(hidden, positions, length)
        if pp == 1:
            (hidden * loss_weights(hidden.shape, config.vocab_size, rank, world) * valid).sum().backward()
            grads = full_gradients(part, group)
            grads = {n: g[:config.vocab_size] if n in ("word_embeddings.weight", "lm_head") else g
                     for n, g in grads.items()}
        hidden = hidden.detach()
        if world > 1:
            shards = [torch.empty_like(hidden) for _ in range(world)]
            dist.all_gather(shards, hidden.contiguous(), group=group)
            hidden = torch.cat(shards, dim=-1)
        results[key] = (hidden[..., :config.vocab_size], grads, counts)
    return results


@pytest.fixture(scope="module")
def logits(converted):
    out = {}
    for tp in (1, 2, 4):
        dirs = {(name, pp): d[tp, pp] for name, (_, d) in converted.items() for pp in (1, 2)}
        per_rank = [project_logits(0, 1, dirs, batch())] if tp == 1 else run_distributed(tp, project_logits, dirs,
                                                                                          batch())
        for other in per_rank[1:]:
            assert all(torch.equal(other[k][0], per_rank[0][k][0]) for k in dirs)
        out.update({(name, tp, pp): value for (name, pp), value in per_rank[0].items()})
    return out


@pytest.mark.parametrize("tp,pp", LAYOUTS)
@pytest.mark.parametrize("name", MODELS)
def test_converted_logits_equal_transformers(converted, logits, name, tp, pp):
    reference = converted[name][0]
    got = logits[name, tp, pp][0]
    _, _, length = batch()
    for b, n in enumerate(length.tolist()):        # padding positions are unused
        torch.testing.assert_close(got[b, :n], reference[b, :n], rtol=1e-5, atol=1e-5,
                                   msg=f"{name} at TP={tp}, PP={pp}, sample {b}")


@pytest.mark.parametrize("tp,pp", LAYOUTS)
@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_of_the_formulas_equal_built_stages(converted, logits, name, tp, pp):
    config, _, _ = read_model_config(converted[name][1][tp, pp])
    assert logits[name, tp, pp][2] == [stage_parameter_count(config, tp, pp, k) for k in range(pp)]


@pytest.mark.parametrize("tp", (2, 4))
@pytest.mark.parametrize("name", MODELS)
def test_tensor_parallel_gradients_equal_tp1(logits, name, tp):
    serial = logits[name, 1, 1][1]
    parallel = logits[name, tp, 1][1]
    assert set(parallel) == set(serial)
    for pname, grad in serial.items():
        scale = grad.abs().max().item()
        assert scale > 0, pname
        # fp32 sums of <= 48 tokens (or h, ffn terms) in another order per layout: |error| <~ 48·2^-24·scale
        # ≈ 3e-6·scale; measured at most 6e-7·scale.
        torch.testing.assert_close(parallel[pname], grad, rtol=1e-5, atol=1e-5 * scale,
                                   msg=lambda m, p=pname: f"{name} TP={tp}: {p}: {m}")
