"""Query selection after the decoder: features on hand-made masks, the fallback to the concept classifier, and
that a checkpoint carries the selector."""

from __future__ import annotations

import torch

from backend.dfimat.iscn import best_mask
from backend.dfimat.model import DFIMatConfig, DFIMatS, load_checkpoint, save_checkpoint
from backend.dfimat.selector import FEATURES, QuerySelector, query_features, select_mask

G = 13  # odd on purpose


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query 0 covers the top-left block (where the click and the box are), query 1 the bottom-right block; the
    classifier prefers query 1."""
    masks = torch.full((1, 2, G, G), -8.0)
    masks[0, 0, :6, :6] = 8.0
    masks[0, 1, 7:, 7:] = 8.0
    logits = torch.tensor([[0.0, 3.0]])
    dense = torch.zeros(1, 5, G, G)
    dense[0, 0, 2, 2] = 1.0  # positive click
    dense[0, 1, 10, 10] = 1.0  # negative click
    dense[0, 2, :6, :6] = 1.0  # box
    return masks, logits, dense


def _features(masks, logits, dense, prev=None, has_prev=False) -> dict[str, torch.Tensor]:
    prev = torch.zeros(1, 1, G, G) if prev is None else prev
    f = query_features(masks, logits, dense, prev, torch.tensor([has_prev]))
    assert f.shape == (1, masks.shape[1], len(FEATURES))
    return {name: f[0, :, i] for i, name in enumerate(FEATURES)}


def test_features_measure_agreement_with_the_prompts():
    masks, logits, dense = _scene()
    f = _features(masks, logits, dense)
    assert torch.allclose(f["pos_cover"], torch.tensor([1.0, 0.0]), atol=1e-2)
    assert torch.allclose(f["neg_cover"], torch.tensor([0.0, 1.0]), atol=1e-2)
    assert torch.allclose(f["box_fill"], torch.tensor([1.0, 0.0]), atol=1e-2)
    assert torch.allclose(f["outside_box"], torch.tensor([0.0, 1.0]), atol=1e-2)
    assert torch.allclose(f["logit_gap"], torch.tensor([-0.3, 0.0]))
    assert f["has_pos"].tolist() == [1.0, 1.0] and f["has_prev"].tolist() == [0.0, 0.0]
    assert torch.allclose(f["rel_area"], torch.tensor([1.0, 36 / 36]), atol=1e-2)


def test_features_without_prompts_or_previous_are_zero_not_nan():
    masks, logits, _ = _scene()
    prev = torch.zeros(1, 1, G, G)
    prev[0, 0, :6, :6] = 1.0
    f = _features(masks, logits, torch.zeros(1, 5, G, G), prev, has_prev=True)
    for name in ("pos_cover", "has_pos", "neg_cover", "box_fill", "outside_box", "has_box"):
        assert f[name].abs().sum() == 0, name
    assert torch.allclose(f["prev_iou"], torch.tensor([1.0, 0.0]), atol=1e-2)
    assert all(torch.isfinite(v).all() for v in f.values())


def test_without_a_selector_the_concept_classifier_picks():
    masks, logits, dense = _scene()
    none = select_mask(None, masks, logits, dense, torch.zeros(1, 1, G, G), torch.tensor([False]))
    assert torch.equal(none, best_mask(masks, logits)) and torch.equal(none[0], masks[0, 1])


def test_a_selector_can_overrule_the_classifier():
    masks, logits, dense = _scene()
    selector = QuerySelector()
    with torch.no_grad():  # score = pos_cover - neg_cover, through the ReLU MLP
        for layer in selector.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        first, second, last = (m for m in selector.net if isinstance(m, torch.nn.Linear))
        first.weight[0, FEATURES.index("pos_cover")] = 1.0
        first.weight[1, FEATURES.index("neg_cover")] = 1.0
        second.weight[0, 0] = second.weight[1, 1] = 1.0
        last.weight[0, 0], last.weight[0, 1] = 1.0, -1.0
    chosen = select_mask(selector, masks, logits, dense, torch.zeros(1, 1, G, G), torch.tensor([False]))
    assert torch.equal(chosen[0], masks[0, 0])


def test_checkpoint_round_trip_with_and_without_a_selector(tmp_path):
    torch.manual_seed(0)
    config = DFIMatConfig(size=64, dim=16, mask_dim=8, num_queries=2, num_memory=1, num_layers=1, heads=2,
                          mrn_width=8, mrn_max_side=64)
    model = DFIMatS(config)
    plain, _ = load_checkpoint(save_checkpoint(model, tmp_path / "plain.pt"))
    assert plain.selector is None
    model.selector = QuerySelector()
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "sel.pt", half=False))
    assert loaded.selector is not None
    x = torch.rand(3, 2, len(FEATURES))
    assert torch.allclose(loaded.selector.score(x), model.selector.eval().score(x))
