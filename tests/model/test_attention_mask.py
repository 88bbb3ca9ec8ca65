"""Blank-infilling mask semantics: Part A bidirectional, Part B causal, padding invisible."""
import torch

from megatron_glmd.model import GLMStage, glm_attention_mask
from tests.model.helpers import glm_batch, tiny_config


def test_mask_matches_hand_written_case():
    # seq 5, sep 2, length 4: A = {0, 1}, B = {2, 3}, pad = {4}
    mask = glm_attention_mask(torch.tensor([2]), torch.tensor([4]), 5)[0, 0].int()
    expected = torch.tensor([
        [1, 1, 0, 0, 0],   # Part A: both Part-A keys
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],   # Part B: Part A and itself causally
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],   # a pad query: real keys and itself (its output is never used)
    ])
    assert torch.equal(mask, expected)


def _model():
    return GLMStage(tiny_config()).init_weights(5).eval()


def test_part_a_ignores_part_b_tokens():
    model = _model()
    ids, pos, sep, length = glm_batch(1000, batch=2, seq=20)
    out = model(ids, pos, sep, length)
    changed = ids.clone()
    for b in range(2):
        changed[b, sep[b]:] = (changed[b, sep[b]:] + 17) % 1000
    out2 = model(changed, pos, sep, length)
    for b in range(2):
        a = int(sep[b])
        torch.testing.assert_close(out2[b, :a], out[b, :a], rtol=0, atol=1e-6)
        assert not torch.allclose(out2[b, a:length[b]], out[b, a:length[b]])


def test_part_b_is_causal():
    model = _model()
    ids, pos, sep, length = glm_batch(1000, batch=1, seq=20)
    p = int(sep[0]) + 3
    out = model(ids, pos, sep, length)
    changed = ids.clone()
    changed[0, p] = (changed[0, p] + 1) % 1000
    out2 = model(changed, pos, sep, length)
    torch.testing.assert_close(out2[0, :p], out[0, :p], rtol=0, atol=1e-6)
    assert not torch.allclose(out2[0, p:length[0]], out[0, p:length[0]])


def test_padding_does_not_change_real_tokens():
    model = _model()
    ids, pos, sep, length = glm_batch(1000, batch=3, seq=20)
    length = torch.tensor([14, 16, 18])
    out = model(ids, pos, sep, length)
    changed = ids.clone()
    for b in range(3):
        changed[b, length[b]:] = 0
    out2 = model(changed, pos, sep, length)
    for b in range(3):
        torch.testing.assert_close(out2[b, :length[b]], out[b, :length[b]], rtol=0, atol=1e-6)
    # The same sample without its padding gives the same outputs on its real tokens.
    n = int(length[1])
    short = model(ids[1:2, :n], pos[1:2, :, :n], sep[1:2], length[1:2])
    torch.testing.assert_close(short[0], out[1, :n], rtol=1e-5, atol=1e-5)
