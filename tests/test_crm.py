"""Conflict map (CRM) values on hand-made cases."""

import torch

from backend.dfimat.crm import NO_CONFLICT, PREV_BG_NOW_FG, PREV_FG_NOW_BG, ConflictEmbedding, conflict_map


def test_conflict_map_values():
    prev = torch.tensor([[0.9, 0.9, 0.1, 0.1],
                         [0.9, 0.2, 0.8, 0.0]])
    pos = torch.tensor([[0.0, 1.0, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0]])
    neg = torch.tensor([[1.0, 0.0, 0.0, 1.0],
                        [0.0, 1.0, 1.0, 0.0]])
    ref = conflict_map(prev, pos, neg)
    expected = torch.tensor([[PREV_FG_NOW_BG, NO_CONFLICT, PREV_BG_NOW_FG, NO_CONFLICT],
                             [NO_CONFLICT, NO_CONFLICT, PREV_FG_NOW_BG, NO_CONFLICT]])
    assert ref.dtype == torch.long
    assert torch.equal(ref, expected)


def test_no_previous_foreground_means_positive_marks_conflict_and_negative_do_not():
    prev = torch.zeros(3, 3)
    pos = torch.zeros(3, 3)
    pos[1, 1] = 1
    neg = torch.ones(3, 3)
    ref = conflict_map(prev, pos, neg)
    assert ref[1, 1] == PREV_BG_NOW_FG
    assert int((ref == PREV_FG_NOW_BG).sum()) == 0


def test_conflict_embedding_is_a_lookup_resized_per_level():
    torch.manual_seed(0)
    emb = ConflictEmbedding(4, {"a": 4, "b": 4})
    ref = torch.zeros(1, 8, 8, dtype=torch.long)
    ref[0, :4, :4] = PREV_BG_NOW_FG
    out = emb(ref, {"a": (8, 8), "b": (2, 2)})
    assert out["a"].shape == (1, 4, 8, 8) and out["b"].shape == (1, 4, 2, 2)
    # Equal codes give equal vectors; different codes differ.
    assert torch.allclose(out["a"][0, :, 0, 0], out["a"][0, :, 1, 1])
    assert not torch.allclose(out["a"][0, :, 0, 0], out["a"][0, :, 7, 7])
    # The top-left coarse cell covers only code-1 pixels, so it is level b's projection of the code-1 vector.
    conv = emb.level_proj["b"]
    expected = conv.weight[:, :, 0, 0] @ emb.embed.weight[PREV_BG_NOW_FG] + conv.bias
    assert torch.allclose(out["b"][0, :, 0, 0], expected, atol=1e-5)
