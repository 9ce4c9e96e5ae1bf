"""The MCIL loss terms against hand-computed values."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from model.losses import LossConfig, info_nce, mcil_loss, similarity_weighted_cross_entropy


def test_cw_weights_by_mean_visual_similarity() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    visual = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: w_11 = 1, w_12 = 0.5
    ce = F.cross_entropy(logits, labels, reduction="none")
    expected = (0.75 * ce).mean()  # each sample's mean_j w_ij = (1 + 0.5) / 2
    got = similarity_weighted_cross_entropy(logits, labels, visual, torch.tensor([True, True]))
    assert torch.allclose(got, expected)


def test_cw_equals_cross_entropy_for_identical_visual_features() -> None:
    logits, labels = torch.randn(5, 3), torch.randint(0, 3, (5,))
    visual = torch.ones(5, 4)
    got = similarity_weighted_cross_entropy(logits, labels, visual, torch.ones(5, dtype=torch.bool))
    assert torch.allclose(got, F.cross_entropy(logits, labels))


def test_info_nce_rewards_aligned_pairs() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    aligned = info_nce(x, x + 0.01 * torch.randn(16, 8), 0.1)
    shuffled = info_nce(x, x[torch.randperm(16)], 0.1)
    assert aligned < 0.05 < math.log(16) - 1 < shuffled


def test_mcil_loss_is_the_alpha_mix() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    fused, v, a = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4)
    mask = torch.ones(6, dtype=torch.bool)
    cw = similarity_weighted_cross_entropy(logits, labels, v, mask)
    mi = info_nce(fused, v, 0.1) + info_nce(fused, a, 0.1)
    got = mcil_loss(logits, labels, fused, v, a, mask, mask, LossConfig(alpha=0.7))
    assert torch.allclose(got, 0.7 * cw + 0.3 * mi)
