"""Distillation unlearning with an incompetent teacher (paper 000, IV.A and IV.C).

Choices where the paper is open (also in the README):

- Algorithm 1 line 25 updates the teacher; the text trains the student, and so do we.
- The incompetent teacher is the federation's initial model w_0 (Algorithm 1 line 21).
- Each loss term is a batch mean, not the paper's sum over D_f (Eq. 5, 9, 12), so the mu
  weights keep their meaning for any |D_f| and batch size.
- "Learning rate decay 5e-3" (Table IV) is read as the unlearning learning rate, decayed by
  ``lr_decay`` after every epoch.
- The regulariser ``||w - w_o||^2`` (IV.C.2) pulls toward the *pre-unlearning* weights
  w_o = w_t and, by default, is averaged over parameters (``reg_reduction = "mean"``): the
  summed version at weight 0.4 kept the model so close to w_t that the backdoor came back
  after recovery (measurement in the README).
- L_AMA uses every feature layer the model names (LeNet-5: both conv blocks).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state, seeded_batches, to_tensors
from fedforget.unlearning.base import (
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)
from fedforget.unlearning.losses import (
    attention_loss,
    distillation_loss,
    hard_loss,
    weight_regulariser,
)


@dataclass(frozen=True)
class DistillationSettings:
    """Hyperparameters; every term and improvement can be switched off for ablation.

    A zero ``mu_*`` drops a loss term, ``bound=None`` uses the unbounded hard loss of Eq. 9,
    ``lr_decay=None`` keeps the learning rate constant, ``reg_weight=0`` drops the regulariser.
    """

    epochs: int = 5
    batch_size: int = 100
    lr: float = 5e-3
    lr_decay: float | None = 0.7
    mu_distill: float = 0.33
    mu_attention: float = 0.33
    mu_hard: float = 0.33
    temperature: float = 1.0
    attention_q: float = 2.0
    bound: float | None = 15.0
    reg_weight: float = 0.4
    reg_reduction: str = "mean"


@register_unlearner
class DistillationUnlearner(Unlearner):
    """Paper 000's unlearning: L = mu_D L_D + mu_AMA L_AMA + mu_H L_H + lambda ||w - w_o||^2.

    Needs D_f only; the student is the current global model, the teacher the initial one.
    """

    name = "distill"

    def __init__(self, **settings: object) -> None:
        self.settings = DistillationSettings(**settings)  # type: ignore[arg-type]

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Train ``model`` (the student) on D_f against the incompetent teacher."""
        cfg = self.settings
        device = context.device
        student = model.to(device).train()
        teacher = load_numpy_state(context.build_model(), context.initial_state).to(device).eval()
        anchor = [p.detach().clone() for p in student.parameters()]
        x, y = to_tensors(request.forget, device)
        optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(context.seed)
        for epoch in range(cfg.epochs):
            optimizer.param_groups[0]["lr"] = cfg.lr * (cfg.lr_decay or 1.0) ** epoch
            totals = self._run_epoch(student, teacher, anchor, x, y, optimizer, generator)
            context.report("unlearning", epoch + 1, cfg.epochs, **totals)
        return student.eval()

    def _run_epoch(
        self,
        student: ClassifierModel,
        teacher: ClassifierModel,
        anchor: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> dict[str, float]:
        sums = {"loss": 0.0, "hard": 0.0}
        batches = 0
        for batch in seeded_batches(len(x), self.settings.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss, hard = self.loss(student, teacher, anchor, x[batch], y[batch])
            loss.backward()
            optimizer.step()
            sums["loss"] += float(loss.detach())
            sums["hard"] += float(hard.detach())
            batches += 1
        return {key: value / max(batches, 1) for key, value in sums.items()}

    def loss(
        self,
        student: ClassifierModel,
        teacher: ClassifierModel,
        anchor: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The total unlearning loss on one batch and its hard-loss term."""
        cfg = self.settings
        student_logits, student_maps = student.forward_features(x)
        with torch.no_grad():
            teacher_logits, teacher_maps = teacher.forward_features(x)
        hard = hard_loss(student_logits, y, cfg.bound)
        total = cfg.mu_hard * hard
        if cfg.mu_distill:
            total = total + cfg.mu_distill * distillation_loss(
                teacher_logits, student_logits, cfg.temperature
            )
        if cfg.mu_attention:
            total = total + cfg.mu_attention * attention_loss(
                teacher_maps.values(), student_maps.values(), cfg.attention_q
            )
        if cfg.reg_weight:
            total = total + cfg.reg_weight * weight_regulariser(
                student, anchor, cfg.reg_reduction
            )
        return total, hard

    def describe(self) -> dict[str, object]:
        """The settings as a plain dict (for ``summary.json``)."""
        return asdict(self.settings)


def clone_model(model: ClassifierModel) -> ClassifierModel:
    """A deep copy of ``model`` (weights included)."""
    return copy.deepcopy(model)
