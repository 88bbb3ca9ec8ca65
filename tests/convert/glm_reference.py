"""An independent GLM forward and GLM's checkpoint layouts, written for the tests from THUDM/GLM's
source (``model/modeling_glm.py``, ``mpu/transformer.py``, ``change_mp.py``) and its hub port.

Nothing here imports megatron_glmd: this is what the converted model must agree with.

* forward: word + position + block-position embeddings; per layer pre-LN, fused QKV read as
  ``[Q; K; V]`` (each head's rows contiguous in each block), scores ``q·kᵀ/√d``, masked as
  ``scores·m − 65504·(1 − m)`` with ``m`` built from ``sep`` (columns < sep visible to every row,
  causal after), softmax, dense, residual; pre-LN MLP with GeLU (tanh approximation as THUDM's
  ``gelu_impl``, or erf as the hub port); final LayerNorm; logits ``h · Eᵀ`` (tied, no bias).
* checkpoints: THUDM's ``DIR/latest_checkpointed_iteration.txt`` + ``DIR/<it>/mp_rank_XX_model_states.pt``
  with ``{"module": ...}`` split as ``change_mp.py`` splits (QKV with stride 3); the hub's
  ``pytorch_model.bin`` / ``model.safetensors`` (+ sharded index), optionally under ``glm.``.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F


def random_glm_state(num_layers=3, hidden=32, heads=4, rows=384, max_seq=40, seed=0):
    """Random weights under THUDM's keys, scaled so that logits are O(1)."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    state = {"word_embeddings.weight": normal(rows, hidden, std=0.3),
             "transformer.position_embeddings.weight": normal(max_seq + 1, hidden, std=0.3),
             "transformer.block_position_embeddings.weight": normal(max_seq + 1, hidden, std=0.3),
             "transformer.final_layernorm.weight": normal(hidden, std=0.1, mean=1.0),
             "transformer.final_layernorm.bias": normal(hidden, std=0.1)}
    for i in range(num_layers):
        p = f"transformer.layers.{i}."
        state.update({
            p + "input_layernorm.weight": normal(hidden, std=0.1, mean=1.0), p + "input_layernorm.bias": normal(hidden),
            p + "attention.query_key_value.weight": normal(3 * hidden, hidden, std=0.2),
            p + "attention.query_key_value.bias": normal(3 * hidden),
            p + "attention.dense.weight": normal(hidden, hidden, std=0.1), p + "attention.dense.bias": normal(hidden),
            p + "post_attention_layernorm.weight": normal(hidden, std=0.1, mean=1.0),
            p + "post_attention_layernorm.bias": normal(hidden),
            p + "mlp.dense_h_to_4h.weight": normal(4 * hidden, hidden, std=0.1),
            p + "mlp.dense_h_to_4h.bias": normal(4 * hidden),
            p + "mlp.dense_4h_to_h.weight": normal(hidden, 4 * hidden, std=0.1),
            p + "mlp.dense_4h_to_h.bias": normal(hidden)})
    return state


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


def sep_mask(sep, seq_len, dtype):
    """THUDM's ``build_mask_matrix``: lower-triangular ones, columns < sep set to one; [b, 1, s, s]."""
    m = torch.ones(1, seq_len, seq_len, dtype=dtype).tril().expand(sep.shape[0], -1, -1)
    before_sep = torch.arange(seq_len).view(1, -1) < sep.view(-1, 1)
    return m.masked_fill(before_sep.unsqueeze(1).expand_as(m), 1.0).unsqueeze(1)


def reference_logits(state, heads, input_ids, position_ids, sep, gelu="tanh", eps=1e-5):
    """GLM's logits over all embedding rows, computed in fp64."""
    w = {k: v.double() for k, v in state.items()}
    b, s = input_ids.shape
    h = (w["word_embeddings.weight"][input_ids] + w["transformer.position_embeddings.weight"][position_ids[:, 0]]
         + w["transformer.block_position_embeddings.weight"][position_ids[:, 1]])
    hidden = h.shape[-1]
    d = hidden // heads
    m = sep_mask(sep, s, torch.float64)
    num_layers = len({k.split(".")[2] for k in w if k.startswith("transformer.layers.")})
    for i in range(num_layers):
        p = f"transformer.layers.{i}."
        x = F.layer_norm(h, (hidden,), w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        mixed = F.linear(x, w[p + "attention.query_key_value.weight"], w[p + "attention.query_key_value.bias"])
        q, k, v = (t.reshape(b, s, heads, d).permute(0, 2, 1, 3) for t in mixed.chunk(3, dim=-1))
        scores = torch.matmul(q, k.transpose(-1, -2) / math.sqrt(d))
        scores = scores * m + (-65504.0) * (1.0 - m)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, s, hidden)
        h = h + F.linear(ctx, w[p + "attention.dense.weight"], w[p + "attention.dense.bias"])
        x = F.layer_norm(h, (hidden,), w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"],
                         eps)
        inner = F.linear(x, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])
        inner = gelu_tanh(inner) if gelu == "tanh" else F.gelu(inner)
        h = h + F.linear(inner, w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])
    h = F.layer_norm(h, (hidden,), w["transformer.final_layernorm.weight"], w["transformer.final_layernorm.bias"], eps)
    return F.linear(h, w["word_embeddings.weight"])


def blank_infilling_batch(specs, seq_len, mask_id, sop_id, cls_id, vocab=256, seed=0):
    """Samples in GLM's blank-infilling format, padded with 0 to ``seq_len``.

    ``specs``: per sample ``(text_length, [(span_start, span_end), ...])`` with spans sorted and
    inside ``1..text_length`` (position 0 of the text is [CLS]). Returns input ids, position ids
    ``[b, 2, s]``, sep and length tensors.
    """
    rng = np.random.default_rng(seed)
    ids, pos, seps, lengths = [], [], [], []
    for text_length, spans in specs:
        text = [cls_id] + rng.integers(0, vocab, size=text_length - 1).tolist()
        part_a, mask_at, cursor = [], [], 0
        for start, end in spans:
            part_a += text[cursor:start]
            mask_at.append(len(part_a))
            part_a.append(mask_id)
            cursor = end
        part_a += text[cursor:]
        tokens, p0, p1 = list(part_a), list(range(len(part_a))), [0] * len(part_a)
        for k in rng.permutation(len(spans)).tolist():
            start, end = spans[k]
            block = [sop_id] + text[start:end]
            tokens += block
            p0 += [mask_at[k]] * len(block)
            p1 += list(range(1, len(block) + 1))
        n = len(tokens)
        assert n <= seq_len
        ids.append(tokens + [0] * (seq_len - n))
        pos.append([p0 + [0] * (seq_len - n), p1 + [0] * (seq_len - n)])
        seps.append(len(part_a))
        lengths.append(n)
    return torch.tensor(ids), torch.tensor(pos), torch.tensor(seps), torch.tensor(lengths)


class RunsCode:
    """A pickle payload: unpickling it would create ``marker`` (only a full unpickler runs it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


# ---- checkpoint layouts -----------------------------------------------------------------------

def split_like_change_mp(state, mp):
    """THUDM's model-parallel shards of a whole state dict (``change_mp.py``'s rules)."""
    shards = [{} for _ in range(mp)]
    for key, value in state.items():
        if "query_key_value" in key:
            q, k, v = value.chunk(3, dim=0)
            pieces = [torch.cat([q.chunk(mp)[r], k.chunk(mp)[r], v.chunk(mp)[r]]) for r in range(mp)]
        elif key == "word_embeddings.weight" or "dense_h_to_4h" in key:
            pieces = value.chunk(mp, dim=0)
        elif key.endswith("attention.dense.weight") or key.endswith("dense_4h_to_h.weight"):
            pieces = value.chunk(mp, dim=1)
        else:
            pieces = [value] * mp
        for r in range(mp):
            shards[r][key] = pieces[r].clone()
    return shards


def write_megatron(folder, state, mp, dtype=torch.float32, iteration="release"):
    """THUDM's layout, with the non-weight entries a Megatron/DeepSpeed checkpoint carries."""
    os.makedirs(os.path.join(folder, iteration), exist_ok=True)
    with open(os.path.join(folder, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(iteration)
    for r, shard in enumerate(split_like_change_mp(state, mp)):
        content = {"module": {k: v.to(dtype) for k, v in shard.items()}, "mp_world_size": mp, "iteration": 0,
                   "args": argparse.Namespace(num_layers=3, fp16=dtype == torch.float16),
                   "np_rng_state": np.random.RandomState(r).get_state()}
        torch.save(content, os.path.join(folder, iteration, f"mp_rank_{r:02d}_model_states.pt"))
    return folder


def write_hub(folder, state, heads, fmt="bin", prefix="", shards=1, max_seq=40):
    """The hub layout: one file or ``shards`` files with an index; ``config.json`` beside them."""
    os.makedirs(folder, exist_ok=True)
    state = {prefix + k: v.contiguous() for k, v in state.items()}
    keys = sorted(state)
    base = "model" if fmt == "safetensors" else "pytorch_model"
    ext = "safetensors" if fmt == "safetensors" else "bin"

    def save(part, name):
        if fmt == "safetensors":
            from safetensors.torch import save_file
            save_file(part, os.path.join(folder, name))
        else:
            torch.save(part, os.path.join(folder, name))

    if shards == 1:
        save(state, f"{base}.{ext}")
    else:
        weight_map = {}
        for i, group in enumerate(np.array_split(np.array(keys), shards)):
            name = f"{base}-{i + 1:05d}-of-{shards:05d}.{ext}"
            save({k: state[k] for k in group.tolist()}, name)
            weight_map.update({k: name for k in group.tolist()})
        with open(os.path.join(folder, f"{base}.{ext}.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    hidden = state[prefix + "word_embeddings.weight"].shape[1]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "glm", "num_layers": 3, "hidden_size": hidden, "num_attention_heads": heads,
                   "vocab_size": state[prefix + "word_embeddings.weight"].shape[0],
                   "max_sequence_length": max_seq, "block_position_encoding": True}, f)
    return folder
