"""Loss terms of paper 000's distillation unlearning (section IV.A and IV.C.1-2)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


def attention_map(features: torch.Tensor, q: float = 2.0) -> torch.Tensor:
    """L2-normalised attention map of Eq. 6-7: ``sum_c |F_c|^q``, flattened per sample.

    Parameters
    ----------
    features : torch.Tensor
        Feature maps (N, C, H, W).
    q : float
        Exponent (paper: q = 2).

    Returns
    -------
    torch.Tensor
        (N, H * W), each row of unit L2 norm (or zero for an all-zero map).
    """
    summed = features.abs().pow(q).sum(dim=1).flatten(start_dim=1)
    return F.normalize(summed, p=2, dim=1)


def attention_loss(
    teacher_features: Iterable[torch.Tensor],
    student_features: Iterable[torch.Tensor],
    q: float = 2.0,
) -> torch.Tensor:
    """L_AMA of Eq. 7-8: mean over samples (and layers) of the L2 distance of the maps."""
    distances = [
        (attention_map(t, q) - attention_map(s, q)).norm(p=2, dim=1).mean()
        for t, s in zip(teacher_features, student_features, strict=True)
    ]
    return torch.stack(distances).mean()


def distillation_loss(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """L_D of Eq. 3-5: cross-entropy from the teacher's to the student's tempered softmax.

    Averaged over the batch (the paper sums over D_f; the mean keeps the scale independent of
    the batch size, so the mu weights mean the same for any |D_f|).
    """
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return -(teacher * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1).mean()


def hard_loss(logits: torch.Tensor, labels: torch.Tensor, bound: float | None) -> torch.Tensor:
    """L_H: Eq. 12 ``ReLU(BND - CE)`` when ``bound`` is set, else Eq. 9 ``-CE``; batch mean."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    if bound is None:
        return -ce.mean()
    return F.relu(bound - ce).mean()


def weight_regulariser(
    model: nn.Module, reference: list[torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """``||w - w_o||^2`` over all parameters (IV.C.2); ``mean`` divides by their count."""
    squared = [(p - r).pow(2).sum() for p, r in zip(model.parameters(), reference, strict=True)]
    total = torch.stack(squared).sum()
    if reduction == "sum":
        return total
    return total / sum(r.numel() for r in reference)
