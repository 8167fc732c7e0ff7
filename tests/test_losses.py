"""Loss terms of paper 000's distillation unlearning."""

import torch
from torch import nn
from torch.nn import functional as F

from fedforget.unlearning.losses import (
    attention_loss,
    attention_map,
    distillation_loss,
    hard_loss,
    weight_regulariser,
)


def _logits_with_ce(ce_values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits whose cross-entropy on label 0 equals each requested value."""
    # CE = log(1 + exp(d)) for logits (0, d): invert for d.
    ce = torch.tensor(ce_values)
    d = torch.log(torch.expm1(ce))
    logits = torch.stack([torch.zeros_like(d), d], dim=1)
    return logits, torch.zeros(len(ce_values), dtype=torch.long)


def test_bounded_hard_loss_is_zero_once_ce_exceeds_bound():
    logits, labels = _logits_with_ce([16.0, 20.0])
    assert hard_loss(logits, labels, bound=15.0).item() == 0.0


def test_bounded_hard_loss_is_bound_minus_ce_below_bound():
    logits, labels = _logits_with_ce([5.0, 10.0])
    assert torch.isclose(hard_loss(logits, labels, bound=15.0), torch.tensor(7.5), atol=1e-4)


def test_unbounded_hard_loss_is_negative_cross_entropy():
    logits, labels = _logits_with_ce([0.5, 3.0])
    expected = -F.cross_entropy(logits, labels)
    assert torch.isclose(hard_loss(logits, labels, bound=None), expected)


def test_hard_loss_gradient_raises_the_cross_entropy():
    logits, labels = _logits_with_ce([1.0])
    logits.requires_grad_(True)
    hard_loss(logits, labels, bound=15.0).backward()
    stepped = logits - 0.1 * logits.grad
    assert F.cross_entropy(stepped, labels) > F.cross_entropy(logits, labels)


def test_attention_maps_are_l2_normalised_sums_of_squares():
    features = torch.randn(3, 8, 5, 5)
    maps = attention_map(features, q=2.0)
    assert maps.shape == (3, 25)
    assert torch.allclose(maps.norm(dim=1), torch.ones(3), atol=1e-6)
    raw = features.pow(2).sum(dim=1).flatten(1)
    assert torch.allclose(maps, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)


def test_attention_loss_is_zero_for_identical_features_and_positive_otherwise():
    a = torch.randn(4, 6, 7, 7)
    assert attention_loss([a], [a.clone()]).item() < 1e-6
    # scaling a map does not change its normalised attention
    assert attention_loss([a], [3.0 * a]).item() < 1e-5
    assert attention_loss([a], [torch.randn(4, 6, 7, 7)]).item() > 0.05


def test_distillation_loss_is_smallest_when_student_matches_teacher():
    teacher = torch.randn(16, 10)
    matched = distillation_loss(teacher, teacher.clone(), temperature=2.0)
    other = distillation_loss(teacher, torch.randn(16, 10), temperature=2.0)
    entropy = -(F.softmax(teacher / 2, 1) * F.log_softmax(teacher / 2, 1)).sum(1).mean()
    assert torch.isclose(matched, entropy, atol=1e-5)
    assert other > matched


def test_weight_regulariser_zero_at_anchor_and_mean_is_sum_over_count():
    model = nn.Linear(4, 3)
    anchor = [p.detach().clone() for p in model.parameters()]
    assert weight_regulariser(model, anchor).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    count = sum(p.numel() for p in anchor)
    total = weight_regulariser(model, anchor, "sum")
    assert torch.isclose(total, torch.tensor(0.25 * count))
    assert torch.isclose(weight_regulariser(model, anchor, "mean"), total / count)
