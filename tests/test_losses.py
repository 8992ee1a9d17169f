"""Loss values on hand-made cases (Eq. 6 and Eq. 7)."""

import math

import pytest
import torch

from backend.dfimat.losses import bce_loss, dice_loss, hard_l1_loss, iscn_loss


def test_dice_of_confident_perfect_prediction_is_near_zero_and_of_disjoint_near_one():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=0.05)
    disjoint = -perfect
    assert float(dice_loss(disjoint, target)) == pytest.approx(1.0, abs=0.05)


def test_bce_of_zero_logits_is_log2_and_weights_ignore_pixels():
    target = torch.ones(1, 4, 4)
    assert float(bce_loss(torch.zeros(1, 4, 4), target)) == pytest.approx(math.log(2), rel=1e-5)
    logits = torch.full((1, 4, 4), 20.0)
    logits[0, 0, 0] = -20.0  # badly wrong, but ignored
    weight = torch.ones(1, 4, 4)
    weight[0, 0, 0] = 0
    assert float(bce_loss(logits, target, weight)) < 1e-6


def test_iscn_loss_matches_the_best_query_and_weights_terms_0_1_to_1_to_1():
    target = torch.zeros(1, 8, 8)
    target[0, :, :4] = 1
    good = (target * 2 - 1) * 30
    bad = -good
    masks = torch.stack([bad[0], good[0], bad[0]]).unsqueeze(0)  # query 1 is right
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    total, parts = iscn_loss(masks, logits, target)
    assert parts["ce"] == pytest.approx(math.log(3), rel=1e-5)  # uniform over 3 queries, target = query 1
    assert parts["bce"] < 1e-6 and parts["dice"] < 0.05
    assert float(total) == pytest.approx(0.1 * parts["ce"] + parts["bce"] + parts["dice"], rel=1e-5)
    confident = torch.tensor([[-10.0, 10.0, -10.0]])
    total2, parts2 = iscn_loss(masks, confident, target)
    assert parts2["ce"] < 1e-3 and float(total2) < float(total)


def test_hard_l1_counts_the_worst_30_percent_twice():
    pred = torch.zeros(1, 1, 1, 10)
    target = torch.zeros(1, 1, 1, 10)
    target[..., :3] = 1.0  # three pixels off by 1, the rest exact
    # mean L1 = 0.3; hardest 30 % = 3 pixels, all with error 1 -> 1.0; lambda = 1.
    assert float(hard_l1_loss(pred, target)) == pytest.approx(1.3)
    assert float(hard_l1_loss(pred, target, lam=0.0)) == pytest.approx(0.3)
    assert float(hard_l1_loss(target, target)) == 0.0
