"""tools/slice_embeddings.py on a Qwen2-like decoder teacher whose embedding has more rows than its
tokenizer has ids (Qwen2.5-7B: 152,064 rows for 151,665 ids; here 520 rows for 300 ids, the
special tokens the last ids as in Qwen's tokenizer.json): the artifact covers the 300 ids and equals
a reference computed here in fp64 (kept ids by sorting, the map by brute-force argmax over the real
ids only, the sliced rows those of the untied ``lm_head``); a teacher with fewer rows is refused in
one line."""
import math
import os

import numpy as np
import pytest
import torch

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.config import from_dict, pad_vocab_size, preset
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.convert.glmd_checkpoint import full_shapes
from megatron_glmd.data.vocab_frequency import write_frequency_tsv
from tools import slice_embeddings

V, ROWS = 300, 520
SPECIALS, PROTECTED = [297, 298, 299], [42]
TOKENS = [f"w{i}" for i in range(V - 3)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2.5's layout in miniature: Q/K/V biases, 2 KV heads, an untied output layer.
CONFIG = from_dict({"architecture": "decoder", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "ffn_hidden_size": 128, "qkv_bias": True,
                    "tie_word_embeddings": False, "rope_theta": 1000000.0, "vocab_size": ROWS,
                    "max_sequence_length": 32})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slice_rows")
    generator = torch.Generator().manual_seed(3)
    state = {name: torch.randn(shape, generator=generator) for name, (shape, _) in full_shapes(CONFIG).items()}
    write_checkpoint(str(root / "teacher"), CONFIG, state, tp=2)
    counts = np.random.default_rng(3).zipf(1.4, V) % 500
    write_frequency_tsv(str(root / "freq.tsv"), TOKENS, counts, rank_vocabulary(counts, SPECIALS + PROTECTED),
                        special_ids=SPECIALS, protected_ids=PROTECTED)
    wide = np.concatenate([counts, np.ones(ROWS + 80 - V, dtype=counts.dtype)])     # more ids than rows
    write_frequency_tsv(str(root / "wide.tsv"), TOKENS + [f"x{i}" for i in range(V, ROWS + 80)], wide,
                        rank_vocabulary(wide, SPECIALS), special_ids=SPECIALS)
    return root, state, counts


def _reference(state, counts, kept_size):
    """Kept ids by sorting (protected first by id, then the rest by count desc, id asc) and the inner-product map
    in fp64 over the first V rows; each dropped row's best target must beat the runner-up by more
    than twice the fp32 rounding bound of a score (h·u·Σ|x_i c_i|), so fp32 picks the same one."""
    protected = set(SPECIALS + PROTECTED)
    kept = sorted(range(V), key=lambda i: (0, 0, i) if i in protected else (1, -int(counts[i]), i))[:kept_size]
    candidates = torch.tensor(sorted(set(kept) - set(SPECIALS)))
    embedding = state["word_embeddings.weight"][:V].double()
    token_map = torch.arange(V)
    for w in sorted(set(range(V)) - set(kept)):
        products = embedding[candidates] * embedding[w]
        scores = products.sum(1)
        top = torch.topk(scores, 2).values
        bound = 2 * CONFIG.hidden_size * 2.0 ** -24 * float(products.abs().sum(1).max())
        assert float(top[0] - top[1]) > 2 * bound, (w, top, bound)
        token_map[w] = candidates[int(scores.argmax())]
    return torch.tensor(kept), token_map


def test_cli_slices_the_real_ids_of_a_teacher_with_extra_rows(inputs, capsys):
    root, state, counts = inputs
    out = root / "vc"
    assert slice_embeddings.main(["--teacher", str(root / "teacher"), "--frequencies", str(root / "freq.tsv"),
                                  "--ratio", "0.5", "--output", str(out), "--student-model", "qwen2.5-1.5b",
                                  "--device", "cpu", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    k = math.ceil(V * 0.5 / 128) * 128                      # K from the tokenizer's 300 ids: 256 (from 520: 384)
    assert f"wrote {out}: kept K = {k} of {V} ids (r_v = 0.5), mapping inner" in stdout
    assert f"teacher embedding rows: {ROWS}; the {ROWS - V} past the tokenizer's ids are not read" in stdout
    art = load_artifact(str(out), vocab_size=V, tokens=TOKENS)
    kept, token_map = _reference(state, counts, k)
    assert torch.equal(art.kept_ids, kept) and torch.equal(art.token_map, token_map)
    assert set(SPECIALS + PROTECTED) <= set(kept.tolist()) and int(kept.max()) < V
    assert not torch.equal(state["lm_head"], state["word_embeddings.weight"])
    assert torch.equal(art.teacher_output_weight, state["lm_head"][kept])
    # A full-vocabulary student shares the teacher's 520 rows (padded to 640); the compressed one has 256.
    assert art.summary["teacher"]["vocab_rows"] == ROWS
    saved = pad_vocab_size(ROWS, 1) - pad_vocab_size(k, 1)
    assert art.summary["student_embedding_rows_saved"] == saved == 384
    assert art.summary["student_parameters_saved"] == saved * preset("qwen2.5-1.5b").hidden_size


def test_fewer_rows_than_the_tokenizers_ids_is_one_line(inputs, capsys):
    root = inputs[0]
    argv = ["--teacher", str(root / "teacher"), "--frequencies", str(root / "wide.tsv"), "--kept", "128",
            "--output", str(root / "bad"), "--quiet"]
    assert slice_embeddings.main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {root / 'teacher' / 'config.yaml'}: vocab_size is {ROWS}, fewer than the {ROWS + 80} "
                   "ids of the frequency table (a table of another tokenizer?)\n")
    assert not os.path.exists(root / "bad")
